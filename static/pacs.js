// Result page: while a PACS send is queued or under way, poll its state and show the outcome.
(function () {
  "use strict";
  const box = document.getElementById("pacs-send");
  if (!box) return;
  const busy = (s) => s === "queued" || s === "sending";
  if (!busy(box.dataset.state)) return;
  let tries = 0;
  const poll = () => {
    fetch(box.dataset.url, { credentials: "same-origin" })
      .then((r) => r.json())
      .then((s) => {
        if (!busy(s.state)) { window.location.reload(); return; }
        if (++tries < 60) setTimeout(poll, 2000);
      })
      .catch(() => { if (++tries < 60) setTimeout(poll, 5000); });
  };
  setTimeout(poll, 1500);
})();
