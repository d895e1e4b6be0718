/* Model card: filter the lists of models and makes the model knows as the visitor types. */
(function () {
  "use strict";
  const filter = document.getElementById("knows-filter");
  const count = document.getElementById("knows-count");
  if (!filter) return;
  const items = Array.from(document.querySelectorAll(".knows-list li"));

  function apply() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    items.forEach(function (item) {
      const text = item.textContent.toLowerCase();
      const match = words.every(function (word) { return text.includes(word); });
      item.hidden = !match;
      if (match) shown += 1;
    });
    count.textContent = words.length ? shown + " of " + items.length + " match" : "";
  }

  filter.addEventListener("input", apply);
})();
