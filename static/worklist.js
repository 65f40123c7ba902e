// Show upload times in the reader's local time.
(function () {
  "use strict";
  for (const cell of document.querySelectorAll("td.when")) {
    const t = parseFloat(cell.dataset.epoch);
    if (!isNaN(t)) cell.textContent = new Date(t * 1000).toLocaleString();
  }
})();
