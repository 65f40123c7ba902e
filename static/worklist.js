// Upload times in ISO form (like the study date) in the reader's own time zone, said once
// in the column header.
(function () {
  "use strict";
  const pad = (n) => String(n).padStart(2, "0");
  for (const cell of document.querySelectorAll("td.when")) {
    const t = parseFloat(cell.dataset.epoch);
    if (isNaN(t)) continue;
    const d = new Date(t * 1000);
    cell.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) +
      " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }
  const tz = document.getElementById("tz");
  if (tz) {
    const offset = -new Date().getTimezoneOffset();
    const sign = offset >= 0 ? "+" : "-";
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    tz.textContent = "(" + zone + ", UTC" + sign + pad(Math.floor(Math.abs(offset) / 60)) + ":" +
      pad(Math.abs(offset) % 60) + ")";
  }
})();
