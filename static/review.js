// The review editor: correct the mask on the main viewer (zoom, pan and window/level as
// ever) with a brush and an eraser, with undo and clear. It starts from the saved
// correction when there is one, else from the model's outline, at the viewer's rendition
// size. The painted mask travels with the review form as a PNG (opaque where painted);
// nothing is sent unless the reviewer drew.
(function () {
  "use strict";
  const form = document.getElementById("review-form");
  const editor = document.getElementById("review-editor");
  const toggle = document.getElementById("edit-mask");
  const viewer = window.pneumoViewer;
  if (!form || !editor || !toggle || !viewer) return;
  const tools = document.getElementById("editor-tools");
  const undoButton = document.getElementById("undo");
  const sizeInput = document.getElementById("brush-size");
  const state = document.getElementById("edit-state");
  const hidden = document.getElementById("mask-png");
  const canvas = document.getElementById("canvas");
  const root = document.getElementById("viewer");
  const colour = (root.dataset.reviewColour || "0,190,255");
  const mask = document.createElement("canvas");   // white where the region is, else clear
  const mctx = mask.getContext("2d");
  const tint = document.createElement("canvas");   // the mask in the reviewer's colour
  const tctx = tint.getContext("2d");
  const history = [];
  let started = null, edited = false, last = null, editing = false;

  function load(src) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = reject;
      img.src = src;
    });
  }

  function retint() {
    tctx.clearRect(0, 0, tint.width, tint.height);
    tctx.globalCompositeOperation = "source-over";
    tctx.drawImage(mask, 0, 0);
    tctx.globalCompositeOperation = "source-in";
    tctx.fillStyle = "rgb(" + colour + ")";
    tctx.fillRect(0, 0, tint.width, tint.height);
    tctx.globalCompositeOperation = "source-over";
    viewer.redraw();
  }

  async function start() {
    await viewer.ready;
    const [w, h] = viewer.size();
    const first = await load(editor.dataset.start);
    for (const c of [mask, tint]) { c.width = w; c.height = h; }
    // the starting mask: white pixels of the saved correction or of view_mask.png
    mctx.drawImage(first, 0, 0, w, h);
    const data = mctx.getImageData(0, 0, w, h);
    for (let i = 0; i < data.data.length; i += 4) {
      const on = data.data[i] > 127;
      data.data[i] = data.data[i + 1] = data.data[i + 2] = 255;
      data.data[i + 3] = on ? 255 : 0;
    }
    mctx.putImageData(data, 0, 0);
    retint();
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

  function stroke(from, to) {
    const eraser = form.querySelector("input[name=tool]:checked").value === "eraser";
    const size = Number(sizeInput.value) * mask.width / 900;
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
    mctx.globalCompositeOperation = "source-over";
    retint();
  }

  const tool = {
    down(x, y) { snapshot(); last = [x, y]; stroke(last, last); mark(); },
    move(x, y) { if (!last) return; stroke(last, [x, y]); last = [x, y]; },
    up() { last = null; },
  };

  async function setEditing(on) {
    editing = on;
    if (on && !started) started = start();
    if (on) await started;
    viewer.tool = editing ? tool : null;
    viewer.editLayer = editing || edited ? tint : null;
    tools.hidden = !editing;
    toggle.textContent = editing ? "Stop correcting" : "Correct the mask on the image";
    toggle.setAttribute("aria-pressed", String(editing));
    canvas.classList.toggle("editing", editing);
    canvas.dataset.editing = editing ? "1" : "";
    viewer.redraw();
  }

  function undo() {
    if (!history.length) return;
    mctx.putImageData(history.pop(), 0, 0);
    undoButton.disabled = history.length === 0;
    retint();
  }

  toggle.addEventListener("click", () => setEditing(!editing));
  undoButton.addEventListener("click", undo);
  document.getElementById("clear-mask").addEventListener("click", () => {
    if (!started) return;
    snapshot();
    mctx.clearRect(0, 0, mask.width, mask.height);
    mark();
    retint();
  });
  const TEXT_TYPES = ["text", "search", "password", "email", "number", "url", "tel"];
  const typing = (el) => el && (el.tagName === "TEXTAREA" || el.isContentEditable ||
    (el.tagName === "INPUT" && TEXT_TYPES.includes((el.type || "text").toLowerCase())));
  document.addEventListener("keydown", (ev) => {
    if (typing(ev.target) || ev.altKey) return;
    const key = ev.key.toLowerCase();
    if ((ev.ctrlKey || ev.metaKey) && key === "z" && editing) { ev.preventDefault(); undo(); return; }
    if (ev.ctrlKey || ev.metaKey) return;
    if (key === "m") { ev.preventDefault(); setEditing(!editing); return; }
    if (!editing) return;
    if (key === "b" || key === "e") {
      ev.preventDefault();
      form.querySelector("input[name=tool][value=" + (key === "b" ? "brush" : "eraser") + "]").checked = true;
    } else if (key === "u") { ev.preventDefault(); undo(); }
    else if (ev.key === "[" || ev.key === "]") {
      ev.preventDefault();
      sizeInput.value = String(Number(sizeInput.value) + (ev.key === "]" ? 4 : -4));
    }
  });
  form.addEventListener("submit", () => {
    hidden.value = edited ? mask.toDataURL("image/png") : "";
  });
})();
