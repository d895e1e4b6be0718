/* Upload page: drag-and-drop, paste from the clipboard and an instant preview of the chosen photo.
   One photo travels in the form's file input, so the plain form post works without this script.
   Several photos (many files, or a dropped or picked folder) are sent one request each to the page's
   JSON upload route (with the form's CSRF token), two at a time, each with its own progress bar; the
   results fill a grid as they arrive. */
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = form.querySelector("input[name=image]");  // not the camera input, which has no name
  const folderButton = document.getElementById("pick-folder");
  const cameraButton = document.getElementById("camera-button");
  const cameraInput = document.getElementById("camera-input");
  const zone = document.getElementById("drop-zone");
  const preview = document.getElementById("preview");
  const hint = document.getElementById("drop-hint");
  const fileName = document.getElementById("file-name");
  const submitButton = document.getElementById("submit-button");
  const batch = document.getElementById("batch");
  const grid = document.getElementById("batch-grid");
  const summary = document.getElementById("batch-summary");
  const tokenField = form.querySelector("input[name=csrf_token]");  // absent when CSRF checks are off
  const skippedList = document.getElementById("skipped-files");
  const submitLabel = submitButton.value;
  const SKIP_REASON = "not a photo this page can send (JPEG, PNG, WebP, GIF, HEIC/HEIF or AVIF)";
  const PARALLEL_UPLOADS = 2;
  const MAX_RETRIES = 5;
  const IMAGE_NAME = /\.(jpe?g|png|webp|gif|hei[cf]|avif)$/i;
  let previewUrl = null;
  let batchFiles = [];

  function isImage(file) {
    return file && (file.type.startsWith("image/") || IMAGE_NAME.test(file.name));
  }

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.classList.remove("d-none");
    hint.classList.add("d-none");
    fileName.textContent = file.name + " (" + Math.round(file.size / 1024) + " KB)";
  }

  function useFile(file, keepSkipped) {
    if (!isImage(file)) return false;
    if (!keepSkipped) showSkipped([]);
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    batchFiles = [];
    submitButton.value = submitLabel;
    showPreview(file);
    return true;
  }

  /* Files a batch leaves out are listed with the reason, never dropped silently. */
  function showSkipped(skipped) {
    skippedList.textContent = "";
    skippedList.classList.toggle("d-none", !skipped.length);
    if (!skipped.length) return;
    skippedList.append(element("li", "fw-semibold", skipped.length === 1 ? "1 file left out:" : skipped.length + " files left out:"));
    skipped.forEach(function (file) {
      const item = element("li", "skipped-file");
      item.append(element("span", "skipped-name", file.name), " - " + SKIP_REASON);
      skippedList.append(item);
    });
  }

  function useFiles(files) {
    const all = Array.from(files);
    const images = all.filter(isImage);
    showSkipped(all.filter(function (file) { return !isImage(file); }));
    if (images.length === 1) return useFile(images[0], true);
    if (!images.length) return false;
    batchFiles = images;
    preview.classList.add("d-none");
    hint.classList.remove("d-none");
    const kilobytes = images.reduce(function (sum, file) { return sum + file.size; }, 0) / 1024;
    fileName.textContent = images.length + " photos chosen (" + Math.round(kilobytes) + " KB)";
    submitButton.value = "Classify " + images.length + " photos";
    return true;
  }

  /* A dropped folder arrives as a directory entry: walk it (readEntries returns its children in chunks). */
  function filesOfEntry(entry) {
    if (entry.isFile) {
      return new Promise(function (resolve) { entry.file(function (file) { resolve([file]); }, function () { resolve([]); }); });
    }
    if (!entry.isDirectory) return Promise.resolve([]);
    const reader = entry.createReader();
    return new Promise(function (resolve) {
      const children = [];
      (function readChunk() {
        reader.readEntries(function (chunk) {
          if (!chunk.length) {
            Promise.all(children.map(filesOfEntry)).then(function (lists) { resolve([].concat.apply([], lists)); });
            return;
          }
          children.push.apply(children, chunk);
          readChunk();
        }, function () { resolve([]); });
      })();
    });
  }

  function droppedFiles(transfer) {
    const entries = Array.from(transfer.items || [])
      .map(function (item) { return item.kind === "file" && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null; })
      .filter(Boolean);
    if (!entries.some(function (entry) { return entry.isDirectory; })) return Promise.resolve(Array.from(transfer.files));
    return Promise.all(entries.map(filesOfEntry)).then(function (lists) { return [].concat.apply([], lists); });
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function makeCard(file) {
    const column = element("div", "col");
    const card = element("div", "card h-100 batch-item");
    card.dataset.state = "queued";
    const image = element("img", "card-img-top batch-thumb");
    image.alt = file.name;
    image.addEventListener("error", function () { image.classList.add("invisible"); });  // not a picture after all
    image.src = URL.createObjectURL(file);
    const body = element("div", "card-body p-2");
    const name = element("div", "small text-truncate text-muted batch-name", file.name);
    const progress = element("div", "progress my-1");
    progress.setAttribute("role", "progressbar");
    progress.setAttribute("aria-label", "Upload of " + file.name);
    const bar = element("div", "progress-bar");
    bar.style.width = "0%";
    progress.appendChild(bar);
    const result = element("div", "small batch-result", "waiting");
    body.append(name, progress, result);
    card.append(image, body);
    column.appendChild(card);
    grid.appendChild(column);
    return {card: card, bar: bar, result: result, progress: progress};
  }

  /* The card leads with the same headline as the result page (the server words it: body.headline), the
     top guesses under it; for a photo the vehicle check calls no car, the guesses fold away. */
  function showResult(view, body) {
    const lead = body.headline || {kind: "top_label", text: body.predictions[0].label, doubt: ""};
    view.result.textContent = "";
    const link = element("a", "fw-semibold batch-label", lead.text);
    link.href = batch.dataset.result + encodeURIComponent(body.id);  // body.id: the public id
    view.result.append(link);
    if (lead.kind === "answer") {
      view.result.append(element("span", "text-muted batch-score", " " + Math.round(lead.score * 100) + "%"));
    }
    if (lead.doubt) view.result.append(element("div", "text-muted batch-doubt", lead.doubt));
    const guesses = element("ol", "list-unstyled mb-0 batch-guesses");
    body.predictions.slice(0, 3).forEach(function (guess) {
      guesses.append(element("li", "text-muted", guess.label + " " + (guess.score * 100).toFixed(1) + "%"));
    });
    if (lead.kind === "not_a_car") {
      const fold = element("details", "batch-guesses-fold");
      fold.append(element("summary", "text-muted", "show the model's guesses anyway"), guesses);
      view.result.append(fold);
    } else {
      view.result.append(guesses);
    }
    view.card.dataset.kind = lead.kind;
    if (lead.level) view.card.dataset.level = lead.level;
    view.card.dataset.verdict = body.verdict || "ok";
    const taught = taughtNote(body.answer);
    if (taught) view.result.append(" ", taught);
  }

  // A label taught by example (admin "Teach a car") answered instead of the model: say so on the card.
  function taughtNote(answer) {
    if (!answer || answer.source !== "gallery") return null;
    const count = answer.learned_from;
    return element("span", "badge text-bg-info taught-note",
                   answer.label + ": learned from " + (count || "the") + " photo" + (count === 1 ? "" : "s") + " you added");
  }

  function send(file, view, attempt) {
    return new Promise(function (resolve) {
      const request = new XMLHttpRequest();
      const data = new FormData();
      data.append("image", file, file.name);
      request.open("POST", batch.dataset.upload);
      request.setRequestHeader("Accept", "application/json");
      if (tokenField) request.setRequestHeader("X-CSRFToken", tokenField.value);
      request.responseType = "json";
      request.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) view.bar.style.width = Math.round(90 * event.loaded / event.total) + "%";
      });
      view.card.dataset.state = "uploading";
      view.result.textContent = "uploading";
      request.addEventListener("load", function () {
        const body = request.response || {};
        if (request.status === 429 && attempt < MAX_RETRIES) {  // over the rate limit: wait as told, then retry
          const seconds = parseInt(request.getResponseHeader("Retry-After"), 10) || 5;
          view.result.textContent = "busy, retrying in " + seconds + " s";
          setTimeout(function () { send(file, view, attempt + 1).then(resolve); }, seconds * 1000);
          return;
        }
        view.bar.style.width = "100%";
        if (request.status === 201) {
          view.card.dataset.state = "done";
          view.bar.classList.add("bg-success");
          showResult(view, body);
          resolve(true);
        } else {
          view.card.dataset.state = "failed";
          view.bar.classList.add("bg-danger");
          view.result.textContent = body.error ? body.error.message : "Failed (HTTP " + request.status + ").";
          resolve(false);
        }
      });
      request.addEventListener("error", function () {
        view.card.dataset.state = "failed";
        view.bar.classList.add("bg-danger");
        view.result.textContent = "The upload did not reach the server.";
        resolve(false);
      });
      request.send(data);
    });
  }

  function runBatch(files) {
    grid.textContent = "";
    batch.classList.remove("d-none");
    submitButton.disabled = true;
    const jobs = files.map(function (file) { return {file: file, view: makeCard(file)}; });
    let next = 0, done = 0, failed = 0;
    function report() {
      summary.textContent = done + " of " + jobs.length + " done" + (failed ? ", " + failed + " failed" : "");
    }
    report();
    function worker() {
      if (next >= jobs.length) return Promise.resolve();
      const job = jobs[next++];
      return send(job.file, job.view, 0).then(function (ok) {
        done += 1;
        if (!ok) failed += 1;
        report();
        return worker();
      });
    }
    const workers = [];
    for (let i = 0; i < PARALLEL_UPLOADS; i++) workers.push(worker());
    return Promise.all(workers).then(function () {
      submitButton.disabled = false;
      batch.dataset.finished = "true";
    });
  }

  input.addEventListener("change", function () {
    if (input.files.length > 1) useFiles(input.files);
    else if (input.files.length) useFile(input.files[0]) || showPreview(input.files[0]);
  });
  // A format this browser cannot show (HEIC outside Safari): keep the file, show its name only.
  preview.addEventListener("error", function () {
    preview.classList.add("d-none");
    hint.classList.remove("d-none");
  });
  // Only a phone or tablet has a camera the browser opens from a file input; elsewhere the button would
  // look like a feature and open the same file picker as the field beside it.
  if (navigator.maxTouchPoints > 0 || window.matchMedia("(pointer: coarse)").matches) {
    cameraButton.classList.remove("d-none");
  }
  cameraInput.addEventListener("change", function () {
    if (cameraInput.files.length) useFile(cameraInput.files[0]);
    cameraInput.value = "";  // taking the same photo again must fire "change" again
  });
  folderButton.addEventListener("click", function () {
    // A detached picker: a second file input in the form would be posted with it.
    const picker = document.createElement("input");
    picker.type = "file";
    picker.multiple = true;
    picker.webkitdirectory = true;
    picker.addEventListener("change", function () { useFiles(picker.files); });
    picker.click();
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
    droppedFiles(event.dataTransfer).then(useFiles);
  });
  form.addEventListener("submit", function (event) {
    if (batchFiles.length < 2) return;  // one photo: the ordinary form post and result page
    event.preventDefault();
    delete batch.dataset.finished;
    runBatch(batchFiles);
  });
  document.addEventListener("paste", function (event) {
    const items = Array.from(event.clipboardData ? event.clipboardData.items : []);
    const item = items.find(function (entry) { return entry.kind === "file" && entry.type.startsWith("image/"); });
    if (item && useFile(item.getAsFile())) event.preventDefault();
  });
})();
