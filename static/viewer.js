// Result viewer: X-ray on a canvas with zoom, pan, window/level, invert and
// overlay layers (filled mask, contour, probability heat map) at an opacity.
// The layers are built here from the mask PNG and the model-resolution
// probability PNG, so the server never spends time encoding them.
(function () {
  "use strict";
  const root = document.getElementById("viewer");
  if (!root) return;
  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const ui = {
    mode: document.getElementById("mode"), opacity: document.getElementById("opacity"),
    invert: document.getElementById("invert"), side: document.getElementById("sidebyside"),
    reset: document.getElementById("reset"), wl: document.getElementById("wl"),
  };
  const GAP = 16;
  const state = { zoom: 1, panX: 0, panY: 0, center: 127.5, width: 255, lastMode: "filled" };
  let grey = null, display = null, W = 0, H = 0;
  const layers = {};
  // The review editor (review.js) paints on the image through this: while ``tool`` is set,
  // a left drag on the overlay's pane calls it with image coordinates (space+drag pans),
  // and ``editLayer`` (a W x H canvas) is drawn over the image.
  const api = { tool: null, editLayer: null, size: () => [W, H], redraw: () => draw() };
  let loaded;
  api.ready = new Promise((resolve) => { loaded = resolve; });
  window.pneumoViewer = api;

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("could not load " + url));
      img.src = url;
    });
  }

  function applyWindow() {
    const lut = new Uint8ClampedArray(256);
    const lo = state.center - state.width / 2;
    for (let v = 0; v < 256; v++) {
      let y = 255 * (v - lo) / Math.max(state.width, 1);
      if (ui.invert.checked) y = 255 - y;
      lut[v] = y;
    }
    const out = display.getContext("2d").createImageData(W, H);
    const src = grey, dst = out.data;
    for (let i = 0; i < src.length; i += 4) {
      const g = lut[src[i]];
      dst[i] = dst[i + 1] = dst[i + 2] = g; dst[i + 3] = 255;
    }
    display.getContext("2d").putImageData(out, 0, 0);
    ui.wl.textContent = "window " + state.center.toFixed(0) + " / " + state.width.toFixed(0) + (ui.invert.checked ? ", inverted" : "");
  }

  // Whole image in view by default: the canvas gets the largest on-screen size that fits
  // both the pane's width and the window's height below the canvas's top edge.
  function fit() {
    if (!W) return;
    const top = root.getBoundingClientRect().top + window.scrollY;
    const availH = Math.max(160, window.innerHeight - top - 8);
    const aspect = canvas.width / canvas.height;
    const w = Math.min(root.clientWidth, availH * aspect);
    canvas.style.width = Math.floor(w) + "px";
    canvas.style.height = Math.floor(w / aspect) + "px";
  }

  function draw() {
    const side = ui.side.checked;
    const cw = side ? 2 * W + GAP : W;
    if (canvas.width !== cw || canvas.height !== H) { canvas.width = cw; canvas.height = H; fit(); }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    const panes = side ? [[0, false], [W + GAP, true]] : [[0, true]];
    for (const [x0, withOverlay] of panes) {
      ctx.save();
      ctx.beginPath(); ctx.rect(x0, 0, W, H); ctx.clip();
      ctx.setTransform(state.zoom, 0, 0, state.zoom, x0 + state.panX, state.panY);
      ctx.imageSmoothingEnabled = state.zoom < 2;
      ctx.drawImage(display, 0, 0);
      const mode = ui.mode.value;
      if (withOverlay && mode !== "off" && layers[mode]) {
        ctx.globalAlpha = mode === "contour" || mode === "both" ? Math.max(0.2, ui.opacity.value / 100) : ui.opacity.value / 100;
        ctx.drawImage(layers[mode], 0, 0);
        ctx.globalAlpha = 1;
      }
      if (withOverlay && api.editLayer) {
        ctx.globalAlpha = 0.55;
        ctx.drawImage(api.editLayer, 0, 0);
        ctx.globalAlpha = 1;
      }
      ctx.restore();
    }
    canvas.dataset.mode = ui.mode.value;
    canvas.dataset.opacity = ui.opacity.value;
  }

  function reset() {
    state.zoom = 1; state.panX = 0; state.panY = 0; state.center = 127.5; state.width = 255;
    ui.invert.checked = false; applyWindow(); draw();
  }

  function toImage(ev) {
    const r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
  }

  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const [x, y] = toImage(ev);
    const xs = x >= W + GAP ? x - W - GAP : x;
    const f = ev.deltaY < 0 ? 1.2 : 1 / 1.2;
    const z = Math.min(20, Math.max(0.5, state.zoom * f));
    state.panX = xs - (xs - state.panX) * z / state.zoom;
    state.panY = y - (y - state.panY) * z / state.zoom;
    state.zoom = z; draw();
  }, { passive: false });

  // a pointer on the canvas as a pixel of the image under the overlay (null off it)
  function imagePoint(ev) {
    const [x, y] = toImage(ev);
    const x0 = ui.side.checked ? W + GAP : 0;
    if (x < x0) return null;
    return [(x - x0 - state.panX) / state.zoom, (y - state.panY) / state.zoom];
  }

  let drag = null, painting = false, spaceDown = false;
  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("pointerdown", (ev) => {
    if (api.tool && ev.button === 0 && !ev.shiftKey && !spaceDown) {
      const p = imagePoint(ev);
      if (p) {
        painting = true;
        canvas.setPointerCapture(ev.pointerId);
        api.tool.down(p[0], p[1]);
        return;
      }
    }
    drag = { x: ev.clientX, y: ev.clientY, wl: ev.shiftKey || ev.button === 2 };
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (painting && api.tool) {
      const p = imagePoint(ev);
      if (p) api.tool.move(p[0], p[1]);
      return;
    }
    if (!drag) return;
    const r = canvas.getBoundingClientRect();
    const dx = (ev.clientX - drag.x) * canvas.width / r.width;
    const dy = (ev.clientY - drag.y) * canvas.height / r.height;
    drag.x = ev.clientX; drag.y = ev.clientY;
    if (drag.wl) {
      state.width = Math.min(512, Math.max(2, state.width + dx * 0.5));
      state.center = Math.min(255, Math.max(0, state.center + dy * 0.25));
      applyWindow();
    } else { state.panX += dx; state.panY += dy; }
    draw();
  });
  for (const name of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(name, () => {
      if (painting && api.tool) api.tool.up();
      drag = null; painting = false;
    });
  }
  document.addEventListener("keyup", (ev) => { if (ev.key === " ") spaceDown = false; });

  const legend = document.getElementById("legend");
  function showLegend() { if (legend) legend.hidden = ui.mode.value !== "heatmap"; fit(); }
  ui.mode.addEventListener("change", () => { if (ui.mode.value !== "off") state.lastMode = ui.mode.value; showLegend(); draw(); });
  window.addEventListener("resize", fit);
  ui.opacity.addEventListener("input", draw);
  ui.invert.addEventListener("change", () => { applyWindow(); draw(); });
  ui.side.addEventListener("change", draw);
  ui.reset.addEventListener("click", reset);
  // keys work whatever control has focus (the overlay menu, a slider, a checkbox), except
  // where the user types text
  const TEXT_TYPES = ["text", "search", "password", "email", "number", "url", "tel"];
  const typing = (el) => el && (el.tagName === "TEXTAREA" || el.isContentEditable ||
    (el.tagName === "INPUT" && TEXT_TYPES.includes((el.type || "text").toLowerCase())));
  const keysHelp = document.getElementById("keys-help");
  function toggleKeysHelp(show) {
    if (!keysHelp) return;
    keysHelp.hidden = show === undefined ? !keysHelp.hidden : !show;
  }
  const keysButton = document.getElementById("keys-button");
  if (keysButton) keysButton.addEventListener("click", () => toggleKeysHelp());
  const keysClose = document.getElementById("keys-close");
  if (keysClose) keysClose.addEventListener("click", () => toggleKeysHelp(false));
  document.addEventListener("keydown", (ev) => {
    if (typing(ev.target) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const key = ev.key.toLowerCase();
    if (ev.key === " " && api.tool) { ev.preventDefault(); spaceDown = true; return; }
    if (key === "n" && root.dataset.next) { ev.preventDefault(); window.location.assign(root.dataset.next); return; }
    if (key === "o") {
      ev.preventDefault();  // a focused menu would otherwise jump to its "off" entry itself
      ui.mode.value = ui.mode.value === "off" ? state.lastMode : "off";
      showLegend(); draw();
    } else if (key === "r") { ev.preventDefault(); reset(); }
    else if (ev.key === "?") { ev.preventDefault(); toggleKeysHelp(); }
    else if (ev.key === "Escape") toggleKeysHelp(false);
  });

  const details = document.getElementById("patient");
  if (details) {
    details.addEventListener("toggle", () => {
      if (!details.open || details.dataset.loaded) return;
      fetch(details.dataset.url, { credentials: "same-origin" }).then((r) => r.json()).then((ids) => {
        const dl = document.getElementById("patient-fields");
        const names = { patient_name: "Name", patient_id: "Patient ID", birth_date: "Birth date", accession_number: "Accession" };
        for (const k of Object.keys(names)) {
          const dt = document.createElement("dt"); dt.textContent = names[k];
          const dd = document.createElement("dd"); dd.textContent = ids[k] || "–";
          dl.appendChild(dt); dl.appendChild(dd);
        }
        details.dataset.loaded = "1";
      });
    });
  }

  // the server's overlay colours (pneumo.overlay), so downloads and viewer agree
  const rgb = (text) => text.split(",").map(Number);
  const MASK_RGB = rgb(root.dataset.maskColour), CONTOUR_RGB = rgb(root.dataset.contourColour);
  const REVIEW_RGB = rgb(root.dataset.reviewColour || "0,190,255");
  const HEAT_FLOOR = 0.1;

  function pixelsOf(img, w, h) {
    const c = document.createElement("canvas"); c.width = w; c.height = h;
    const g = c.getContext("2d");
    g.imageSmoothingEnabled = true; g.imageSmoothingQuality = "medium";
    g.drawImage(img, 0, 0, w, h);
    return g.getImageData(0, 0, w, h).data;
  }

  function layerFrom(fill) {
    const c = document.createElement("canvas"); c.width = W; c.height = H;
    const g = c.getContext("2d");
    const out = g.createImageData(W, H);
    fill(out.data);
    g.putImageData(out, 0, 0);
    return c;
  }

  // 1 where the whole (2r+1)-square around a pixel is inside the mask
  function erode(m, r) {
    const rows = new Uint8Array(W * H), out = new Uint8Array(W * H);
    const full = 2 * r + 1;
    for (let y = 0; y < H; y++) {
      let run = 0;
      const line = new Int32Array(W + 1);
      for (let x = 0; x < W; x++) { run += m[y * W + x]; line[x + 1] = run; }
      for (let x = 0; x < W; x++) {
        const a = x - r, b = x + r + 1;
        rows[y * W + x] = a >= 0 && b <= W && line[b] - line[a] === full ? 1 : 0;
      }
    }
    const col = new Int32Array(H + 1);
    for (let x = 0; x < W; x++) {
      for (let y = 0; y < H; y++) col[y + 1] = col[y] + rows[y * W + x];
      for (let y = 0; y < H; y++) {
        const a = y - r, b = y + r + 1;
        out[y * W + x] = a >= 0 && b <= H && col[b] - col[a] === full ? 1 : 0;
      }
    }
    return out;
  }

  function maskLayers(maskImg, fillRGB = MASK_RGB, lineRGB = CONTOUR_RGB) {
    const src = pixelsOf(maskImg, W, H);
    const inside = new Uint8Array(W * H);
    for (let i = 0; i < W * H; i++) inside[i] = src[4 * i] > 127 ? 1 : 0;
    // the outline width comes from the server (pneumo.overlay.contour_width), one rule for both
    const core = erode(inside, parseInt(root.dataset.contourWidth, 10) || 1);
    const paint = (keep, rgb) => (d) => {
      for (let i = 0; i < W * H; i++) {
        if (!keep(i)) continue;
        d[4 * i] = rgb[0]; d[4 * i + 1] = rgb[1]; d[4 * i + 2] = rgb[2]; d[4 * i + 3] = 255;
      }
    };
    return [layerFrom(paint((i) => inside[i], fillRGB)),
            layerFrom(paint((i) => inside[i] && !core[i], lineRGB))];
  }

  // jet colour map on an absolute 0..1 scale; transparent below the floor
  const clamp = (v) => Math.round(255 * Math.min(1, Math.max(0, v)));
  const HEAT_LUT = [];
  for (let v = 0; v < 256; v++) {
    const p = v / 255;
    HEAT_LUT.push([clamp(1.5 - Math.abs(4 * p - 3)), clamp(1.5 - Math.abs(4 * p - 2)),
                   clamp(1.5 - Math.abs(4 * p - 1)), p < HEAT_FLOOR ? 0 : v]);
  }

  // the legend: the same colours from 0 to 1, a marker at the mask threshold
  function drawLegend() {
    const bar = document.getElementById("legend-bar");
    if (!bar || !legend) return;
    const g = bar.getContext("2d"), w = bar.width, h = bar.height;
    for (let x = 0; x < w; x++) {
      const c = HEAT_LUT[Math.round(255 * x / (w - 1))];
      g.fillStyle = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
      g.fillRect(x, 0, 1, h);
    }
    const t = parseFloat(legend.dataset.maskThreshold);
    if (!isNaN(t)) {
      const x = Math.round(t * (w - 1));
      g.fillStyle = "#fff"; g.fillRect(x - 1, 0, 3, h);
      g.fillStyle = "#000"; g.fillRect(x, 0, 1, h);
    }
    bar.dataset.threshold = String(t);
  }

  function heatLayer(probImg) {
    const src = pixelsOf(probImg, W, H);
    const lut = HEAT_LUT;
    return layerFrom((d) => {
      for (let i = 0; i < W * H; i++) {
        const c = lut[src[4 * i]];
        d[4 * i] = c[0]; d[4 * i + 1] = c[1]; d[4 * i + 2] = c[2]; d[4 * i + 3] = c[3];
      }
    });
  }

  const loading = document.getElementById("loading");
  // the reviewer's saved correction, when there is one: its own layer, in its own colour
  const corrected = root.dataset.corrected ? loadImage(root.dataset.corrected) : Promise.resolve(null);
  Promise.all([loadImage(root.dataset.image), loadImage(root.dataset.mask),
               loadImage(root.dataset.heatmap), corrected])
    .then(([img, mask, prob, reviewed]) => {
      W = img.naturalWidth; H = img.naturalHeight;
      grey = pixelsOf(img, W, H);
      display = document.createElement("canvas"); display.width = W; display.height = H;
      [layers.filled, layers.contour] = maskLayers(mask);
      layers.heatmap = heatLayer(prob);
      if (reviewed) {
        const [fill, line] = maskLayers(reviewed, REVIEW_RGB, REVIEW_RGB);
        layers.reviewer = fill;
        const both = document.createElement("canvas"); both.width = W; both.height = H;
        const g = both.getContext("2d");
        g.drawImage(layers.contour, 0, 0); g.drawImage(line, 0, 0);
        layers.both = both;
      }
      applyWindow(); draw(); fit(); drawLegend(); showLegend();
      canvas.dataset.ready = "1";
      loaded();
      if (loading) loading.hidden = true;
    })
    .catch((err) => {
      ui.wl.textContent = "The image could not be shown: " + err.message;
      if (loading) loading.textContent = "The image could not be shown.";
    });
})();
