/* Result page: show or hide the class activation heatmap of the answer over the photo. The heatmap is
   fetched on the first click only: most visitors never ask, and each one costs a model invocation. */
(function () {
  "use strict";
  const toggle = document.getElementById("explain-toggle");
  const overlay = document.getElementById("explanation");
  const status = document.getElementById("explain-status");
  if (!toggle || !overlay) return;
  const showLabel = toggle.textContent.trim();
  let state = "idle";  // idle -> loading -> shown <-> hidden, or failed

  function setStatus(text) {
    status.textContent = text;
    status.classList.toggle("d-none", !text);
  }

  function show(visible) {
    overlay.classList.toggle("d-none", !visible);
    toggle.setAttribute("aria-pressed", String(visible));
    toggle.textContent = visible ? "Hide the heatmap" : showLabel;
    state = visible ? "shown" : "hidden";
  }

  overlay.addEventListener("load", function () {
    setStatus("Red: the regions that pushed the model towards its top answer.");
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
})();
