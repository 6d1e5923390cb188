// Times in the browser's own time zone: every <time datetime="...Z" data-local> shows local
// time; the server's UTC text stays in its tooltip. Loaded by the study and worklist pages
// only (the others stay script-free). No inline scripts (Content-Security-Policy).
(function () {
  "use strict";
  const format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short",
  });
  function localise(root) {
    root.querySelectorAll("time[data-local]").forEach((el) => {
      const when = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(when.getTime())) return;
      if (!el.title) el.title = el.textContent.trim();
      el.textContent = format.format(when);
    });
  }
  window.xraydLocalTime = { localise };
  document.addEventListener("DOMContentLoaded", () => localise(document));
})();
