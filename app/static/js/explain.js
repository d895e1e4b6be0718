/* Result page: show or hide the class activation heatmap of the answer over the photo, at the strength
   the visitor picks, with its colour legend; a click on the photo opens it enlarged. The heatmap is
   fetched on the first click only: most visitors never ask, and each one costs a model invocation. */
(function () {
  "use strict";
  const toggle = document.getElementById("explain-toggle");
  const overlay = document.getElementById("explanation");
  const status = document.getElementById("explain-status");
  const controls = document.getElementById("explain-controls");
  const opacity = document.getElementById("explain-opacity");
  const frame = document.getElementById("explain-frame");
  const dialog = document.getElementById("photo-dialog");
  const photo = document.getElementById("thumbnail");
  const largePhoto = document.getElementById("photo-large");
  const largeOverlay = document.getElementById("explanation-large");
  if (!toggle || !overlay) return;
  const showLabel = toggle.textContent.trim();
  let state = "idle";  // idle -> loading -> shown <-> hidden, or failed

  function setStatus(text) {
    status.textContent = text;
    status.classList.toggle("d-none", !text);
  }

  function applyOpacity() {
    const value = String(Number(opacity.value) / 100);
    overlay.style.opacity = value;
    largeOverlay.style.opacity = value;
  }

  function show(visible) {
    overlay.classList.toggle("d-none", !visible);
    largeOverlay.classList.toggle("d-none", !visible);
    controls.classList.toggle("d-none", !visible);
    toggle.setAttribute("aria-pressed", String(visible));
    toggle.textContent = visible ? "Hide the heatmap" : showLabel;
    state = visible ? "shown" : "hidden";
  }

  overlay.addEventListener("load", function () {
    setStatus("");
    largeOverlay.src = overlay.src;
    show(true);
  });
  overlay.addEventListener("error", function () {
    state = "failed";
    toggle.disabled = true;
    fetch(overlay.dataset.src).then(function (response) { return response.json(); })
      .then(function (body) { setStatus(body.error ? body.error.message : "The heatmap is not available."); })
      .catch(function () { setStatus("The heatmap is not available."); });
  });
  toggle.addEventListener("click", function () {
    if (state === "idle") {
      state = "loading";
      setStatus("Computing the heatmap...");
      overlay.src = overlay.dataset.src;
    } else if (state === "shown" || state === "hidden") {
      show(state === "hidden");
    }
  });
  opacity.addEventListener("input", applyOpacity);
  frame.addEventListener("click", function () {
    if (!dialog || typeof dialog.showModal !== "function") return;
    largePhoto.src = photo.src;
    dialog.showModal();
  });
  // A click on the dark backdrop (the dialog itself, outside its content) closes it too.
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) dialog.close();
  });
})();
