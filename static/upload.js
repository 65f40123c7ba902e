// Upload form: drag-and-drop, client-side checks, upload progress.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("files");
  const zone = document.getElementById("drop-zone");
  const list = document.getElementById("chosen");
  const errorBox = document.getElementById("client-error");
  const bar = document.getElementById("progress");
  const status = document.getElementById("status");
  const button = document.getElementById("submit");
  const maxFiles = parseInt(form.dataset.maxFiles, 10);
  const maxBytes = parseInt(form.dataset.maxMb, 10) * 1024 * 1024;
  const okName = /\.(dcm|dicom|png|jpe?g)$/i;

  function problems(files) {
    if (!files.length) return "Choose at least one file.";
    if (files.length > maxFiles) return "At most " + maxFiles + " files at once.";
    let total = 0;
    for (const f of files) {
      total += f.size;
      if (f.size === 0) return f.name + " is empty.";
      // DICOM files often have no extension: only refuse obvious non-images.
      if (/\.(pdf|docx?|txt|zip|exe)$/i.test(f.name)) return f.name + " is not a DICOM, PNG or JPEG image.";
    }
    if (total > maxBytes) return "The files add up to more than " + (maxBytes >> 20) + " MB.";
    return null;
  }

  function show(files) {
    list.textContent = "";
    for (const f of files) {
      const li = document.createElement("li");
      li.textContent = f.name + " (" + Math.ceil(f.size / 1024) + " KB)" + (okName.test(f.name) ? "" : " – will be checked on the server");
      list.appendChild(li);
    }
    const p = problems(files);
    errorBox.hidden = !p;
    errorBox.textContent = p || "";
  }

  input.addEventListener("change", () => show(input.files));
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.remove("over"); }));
  zone.addEventListener("drop", (e) => { input.files = e.dataTransfer.files; show(input.files); });

  form.addEventListener("submit", (e) => {
    const p = problems(input.files);
    if (p) { e.preventDefault(); errorBox.hidden = false; errorBox.textContent = p; return; }
    e.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");  // answer where to go, not a 303
    bar.hidden = false; button.disabled = true;
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) { bar.value = Math.round(100 * ev.loaded / ev.total); status.textContent = "Uploading… " + bar.value + " %"; }
    });
    xhr.upload.addEventListener("load", () => { bar.removeAttribute("value"); status.textContent = "Analysing… the model is reading the image(s)."; });
    xhr.addEventListener("load", () => {
      if ((xhr.getResponseHeader("Content-Type") || "").startsWith("application/json")) {
        window.location.assign(JSON.parse(xhr.responseText).location); return;
      }
      document.open(); document.write(xhr.responseText); document.close();
    });
    xhr.addEventListener("error", () => { button.disabled = false; bar.hidden = true; errorBox.hidden = false; errorBox.textContent = "The upload failed (network error). Nothing was stored; try again."; });
    xhr.send(new FormData(form));
  });
})();
