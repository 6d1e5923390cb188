// Study viewer: heatmap/box toggles and zoom. No inline scripts (Content-Security-Policy).
(function () {
  "use strict";
  var zoom = 1;
  function place() {
    document.querySelectorAll(".stack .box").forEach(function (box) {
      box.style.top = box.dataset.top + "%";
      box.style.left = box.dataset.left + "%";
      box.style.height = box.dataset.height + "%";
      box.style.width = box.dataset.width + "%";
    });
  }
  function applyZoom() {
    document.querySelectorAll(".stack").forEach(function (stack) {
      var img = stack.querySelector("img.radiograph");
      if (!img) { return; }
      if (zoom === 1) {
        img.style.width = "";
        img.style.maxWidth = "100%";
      } else {
        img.style.maxWidth = "none";
        img.style.width = Math.round(img.naturalWidth * zoom) + "px";
      }
    });
    var label = document.getElementById("zoom-level");
    if (label) { label.textContent = zoom === 1 ? "fit" : Math.round(zoom * 100) + " %"; }
  }
  function toggle(id, cls) {
    var box = document.getElementById(id);
    if (!box) { return; }
    box.addEventListener("change", function () {
      document.body.classList.toggle(cls, !box.checked);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    place();
    toggle("show-heatmap", "hide-heatmap");
    toggle("show-boxes", "hide-boxes");
    var steps = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4];
    function step(dir) {
      var i = steps.indexOf(zoom);
      if (i < 0) { i = 3; }
      zoom = steps[Math.max(0, Math.min(steps.length - 1, i + dir))];
      applyZoom();
    }
    var zin = document.getElementById("zoom-in");
    var zout = document.getElementById("zoom-out");
    var zreset = document.getElementById("zoom-reset");
    if (zin) { zin.addEventListener("click", function () { step(1); }); }
    if (zout) { zout.addEventListener("click", function () { step(-1); }); }
    if (zreset) { zreset.addEventListener("click", function () { zoom = 1; applyZoom(); }); }
  });
})();
