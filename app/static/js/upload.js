/* Upload page: drag-and-drop, paste from the clipboard and an instant preview of the chosen photo.
   The file always travels in the form's file input, so the plain form post works without this. */
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = form.querySelector("input[type=file]");
  const zone = document.getElementById("drop-zone");
  const preview = document.getElementById("preview");
  const hint = document.getElementById("drop-hint");
  const fileName = document.getElementById("file-name");
  let previewUrl = null;

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.classList.remove("d-none");
    hint.classList.add("d-none");
    fileName.textContent = file.name + " (" + Math.round(file.size / 1024) + " KB)";
  }

  function useFile(file) {
    if (!file || !file.type.startsWith("image/")) return false;
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    showPreview(file);
    return true;
  }

  input.addEventListener("change", function () {
    if (input.files.length) showPreview(input.files[0]);
  });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.add("dragover");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("dragover"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    useFile(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", function (event) {
    const items = Array.from(event.clipboardData ? event.clipboardData.items : []);
    const item = items.find(function (entry) { return entry.kind === "file" && entry.type.startsWith("image/"); });
    if (item && useFile(item.getAsFile())) event.preventDefault();
  });
})();
