// The review editor: correct the model's mask with a brush and an eraser (with undo) over
// the X-ray, at the viewer's rendition size. The painted mask travels with the review form
// as a PNG (opaque where painted); nothing is sent unless the reviewer drew.
(function () {
  "use strict";
  const editor = document.getElementById("review-editor");
  const form = document.getElementById("review-form");
  if (!editor || !form) return;
  const canvas = document.getElementById("review-canvas");
  const ctx = canvas.getContext("2d");
  const undoButton = document.getElementById("undo");
  const state = document.getElementById("edit-state");
  const hidden = document.getElementById("mask-png");
  const mask = document.createElement("canvas");   // white where the region is, else clear
  const mctx = mask.getContext("2d");
  const tint = document.createElement("canvas");
  const tctx = tint.getContext("2d");
  const history = [];
  let image = null, drawing = false, edited = false, last = null;

  function load(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = reject;
      img.src = src;
    });
  }

  function render() {
    if (!image) return;
    ctx.drawImage(image, 0, 0);
    tctx.clearRect(0, 0, tint.width, tint.height);
    tctx.globalCompositeOperation = "source-over";
    tctx.drawImage(mask, 0, 0);
    tctx.globalCompositeOperation = "source-in";
    tctx.fillStyle = "rgb(255, 80, 40)";
    tctx.fillRect(0, 0, tint.width, tint.height);
    ctx.globalAlpha = 0.45;
    ctx.drawImage(tint, 0, 0);
    ctx.globalAlpha = 1;
  }

  function mark() {
    edited = true;
    undoButton.disabled = history.length === 0;
    state.textContent = "Your corrected mask will be saved with the review.";
  }

  function snapshot() {
    history.push(mctx.getImageData(0, 0, mask.width, mask.height));
    if (history.length > 30) history.shift();
  }

  function point(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  }

  function stroke(from, to) {
    const eraser = form.querySelector("input[name=tool]:checked").value === "eraser";
    const size = Number(document.getElementById("brush-size").value) * canvas.width / 900;
    mctx.globalCompositeOperation = eraser ? "destination-out" : "source-over";
    mctx.strokeStyle = mctx.fillStyle = "#fff";
    mctx.lineWidth = size;
    mctx.lineCap = mctx.lineJoin = "round";
    mctx.beginPath();
    mctx.moveTo(from[0], from[1]);
    mctx.lineTo(to[0], to[1]);
    mctx.stroke();
    mctx.beginPath();
    mctx.arc(to[0], to[1], size / 2, 0, 2 * Math.PI);
    mctx.fill();
    render();
  }

  async function start() {
    const [img, model] = await Promise.all([load(editor.dataset.image), load(editor.dataset.mask)]);
    image = img;
    for (const c of [canvas, mask, tint]) { c.width = img.naturalWidth; c.height = img.naturalHeight; }
    // the model's outline as the starting mask: white pixels of view_mask.png
    mctx.drawImage(model, 0, 0);
    const data = mctx.getImageData(0, 0, mask.width, mask.height);
    for (let i = 0; i < data.data.length; i += 4) {
      const on = data.data[i] > 127;
      data.data[i] = data.data[i + 1] = data.data[i + 2] = 255;
      data.data[i + 3] = on ? 255 : 0;
    }
    mctx.putImageData(data, 0, 0);
    render();
  }

  editor.addEventListener("toggle", () => { if (editor.open && !image) start(); });
  canvas.addEventListener("pointerdown", (event) => {
    if (!image) return;
    canvas.setPointerCapture(event.pointerId);
    snapshot();
    drawing = true;
    last = point(event);
    stroke(last, last);
    mark();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const p = point(event);
    stroke(last, p);
    last = p;
  });
  for (const name of ["pointerup", "pointercancel", "pointerleave"]) {
    canvas.addEventListener(name, () => { drawing = false; });
  }
  undoButton.addEventListener("click", () => {
    if (!history.length) return;
    mctx.putImageData(history.pop(), 0, 0);
    undoButton.disabled = history.length === 0;
    render();
  });
  document.getElementById("clear-mask").addEventListener("click", () => {
    if (!image) return;
    snapshot();
    mctx.clearRect(0, 0, mask.width, mask.height);
    mark();
    render();
  });
  form.addEventListener("submit", () => {
    hidden.value = edited ? mask.toDataURL("image/png") : "";
  });
})();
