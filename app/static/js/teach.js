/* Admin "Teach a car": send the chosen (or dropped) photos one request each, so that a set of photos is
   not held to one request's size limit, show the progress and what was refused, then refresh the list of
   taught labels in place. Without this script the form posts every photo at once. */
(function () {
  "use strict";
  const form = document.getElementById("teach-form");
  const input = document.getElementById("teach-photos");
  const status = document.getElementById("teach-status");
  const submit = document.getElementById("teach-submit");
  if (!form || !input || !status || !window.fetch || !window.FormData) return;

  function say(text, kind) {
    status.textContent = text;
    status.className = "small mt-2 text-" + (kind || "muted");
  }

  function sendOne(file) {
    const data = new FormData();
    for (const field of ["csrf_token", "label", "level"]) data.append(field, form.elements[field].value);
    data.append(input.name, file, file.name);
    return fetch(form.action || window.location.href, {
      method: "POST", body: data, credentials: "same-origin", headers: {"Accept": "application/json"}
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (response.status === 201) return {ok: true, body: body};
        const message = body && body.error ? body.error.message : "HTTP " + response.status;
        return {ok: false, message: file.name + ": " + message};
      });
    }).catch(function () { return {ok: false, message: file.name + ": the upload did not reach the server"}; });
  }

  function refreshList() {
    return fetch(window.location.pathname, {credentials: "same-origin"}).then(function (response) {
      return response.text();
    }).then(function (html) {
      const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("taught-section");
      const current = document.getElementById("taught-section");
      if (fresh && current) current.replaceWith(fresh);
    });
  }

  form.addEventListener("submit", function (event) {
    const files = Array.from(input.files || []);
    if (!files.length || !form.elements.label.value.trim()) return;  // the server explains what is missing
    event.preventDefault();
    submit.disabled = true;
    status.dataset.done = "false";
    let taught = 0;
    const refused = [];
    let chain = Promise.resolve();
    files.forEach(function (file, index) {
      chain = chain.then(function () {
        say("Teaching photo " + (index + 1) + " of " + files.length + "...");
        return sendOne(file).then(function (result) {
          if (result.ok) taught += 1; else refused.push(result.message);
        });
      });
    });
    chain.then(refreshList).then(function () {
      const label = form.elements.label.value.trim();
      let text = "Taught " + label + " with " + taught + " photo" + (taught === 1 ? "" : "s") + ".";
      if (refused.length) text += " Refused: " + refused.join("; ");
      say(text, refused.length ? (taught ? "warning" : "danger") : "success");
      if (taught) input.value = "";
      submit.disabled = false;
      status.dataset.done = "true";
    });
  });
})();
