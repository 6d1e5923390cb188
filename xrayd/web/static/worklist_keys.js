// Worklist keys: N opens the study that needs your attention first (the same order as the
// study page's N and "Save and next"). Not while typing in a field; not with Ctrl/Alt/Meta.
(function () {
  "use strict";
  const link = document.getElementById("open-next");
  if (!link) return;
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing) return;
    if (event.ctrlKey || event.altKey || event.metaKey) return;
    const t = event.target;
    if (t instanceof Element && t.closest("input, select, textarea, [contenteditable]")) return;
    if (event.key === "n" || event.key === "N") {
      event.preventDefault();
      window.location.assign(link.href);
    }
  });
})();
