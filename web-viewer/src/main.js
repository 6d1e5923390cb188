// xrayd's study viewport: cornerstone3D stack viewports over xrayd's own DICOM objects
// (templates/_viewport.html gives each figure its data-* attributes). Drag: window/level;
// wheel: zoom at the cursor; right/middle or Shift+drag: pan. Keys B (boxes), H (heatmap),
// R (reset), I (invert); never while typing in a form field. window.xraydViewer is the hook the
// browser tests read the state from.
import {
  Enums,
  RenderingEngine,
  init as initCore,
  getRenderingEngine,
  utilities as csUtilities,
} from "@cornerstonejs/core";
import { init as initLoader } from "@cornerstonejs/dicom-image-loader";
import {
  Enums as ToolEnums,
  PanTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init as initTools,
} from "@cornerstonejs/tools";
import { AIBoxTool, addBoxes, attachHeatmap, boxesOnCanvas, rerender, setBoxesVisible } from "./overlays.js";
import { presetRange } from "./presets.js";

const ENGINE = "xrayd";

/** cornerstone's ZoomTool, twice its step per wheel notch (about 9 % instead of 4.5 %): the
 * point under the pointer stays where it is (zoomToCenter false, the default). */
class WheelZoomTool extends ZoomTool {
  static toolName = "XraydWheelZoom";
  mouseWheelCallback(evt) {
    this._zoom(evt);
    this._zoom(evt);
  }
}
const GROUP = "xrayd-tools";
const { MouseBindings, KeyboardBindings } = ToolEnums;

const state = {
  ready: false,
  failed: null,
  views: [],
  active: 0,
  boxes: true,
  heatmap: false,
};

function typing(target) {
  if (!(target instanceof Element)) return false;
  return Boolean(target.closest("input, select, textarea, [contenteditable=''], [contenteditable='true']"));
}

function imageIdOf(figure) {
  return `wadouri:${new URL(figure.dataset.dicomUrl, window.location.href).href}`;
}

function viewOf(i) {
  return state.views[i];
}

function setActive(i) {
  state.active = i;
  state.views.forEach((v, n) => {
    v.figure.classList.toggle("active", n === i);
    v.figure.setAttribute("aria-current", n === i ? "true" : "false");
  });
}

function showBoxes(on) {
  state.boxes = on;
  for (const v of state.views) setBoxesVisible(v.boxUids, on);
  rerender(state.views.map((v) => v.viewport.id));
  const box = document.getElementById("show-boxes");
  if (box) box.checked = on;
  document.body.classList.toggle("boxes-hidden", !on);
}

function showHeatmap(on) {
  state.heatmap = on;
  for (const v of state.views) if (v.heatmap) v.heatmap.hidden = !on;
  const box = document.getElementById("show-heatmap");
  if (box) box.checked = on;
  document.body.classList.toggle("heatmap-shown", on);
}

function applyPreset(name) {
  const v = viewOf(state.active);
  if (!v || !v.original) return;
  if (name === "invert") {
    const { invert } = v.viewport.getProperties();
    v.viewport.setProperties({ invert: !invert });
  } else {
    const voiRange = presetRange(name, v.original, v.range, v.monochrome1);
    v.viewport.setProperties({ voiRange });
  }
  v.viewport.render();
  announce(v, name);
}

function reset(i = state.active) {
  const v = viewOf(i);
  if (!v || !v.original) return;
  v.viewport.resetCamera();
  v.viewport.setProperties({ voiRange: { ...v.original }, invert: v.originalInvert });
  v.viewport.render();
  announce(v, "reset");
}

function zoomBy(factor) {
  const v = viewOf(state.active);
  if (!v) return;
  v.viewport.setZoom(v.viewport.getZoom() * factor);
  v.viewport.render();
}

function announce(v, what) {
  const status = document.getElementById("viewport-status");
  if (!status) return;
  const { voiRange, invert } = v.viewport.getProperties();
  const width = voiRange.upper - voiRange.lower;
  const centre = voiRange.lower + width / 2;
  status.textContent = `Image ${v.index + 1}: ${what}; window ${Math.round(width)}, level ${Math.round(centre)}${invert ? ", inverted" : ""}`;
}

function wireControls() {
  document.querySelectorAll("[data-preset]").forEach((b) =>
    b.addEventListener("click", () => applyPreset(b.dataset.preset)),
  );
  const on = (id, fn) => {
    const el = document.getElementById(id);
    if (el) el.addEventListener("click", fn);
  };
  on("vp-reset", () => reset());
  on("vp-zoom-in", () => zoomBy(1.25));
  on("vp-zoom-out", () => zoomBy(0.8));
  const boxes = document.getElementById("show-boxes");
  if (boxes) boxes.addEventListener("change", () => showBoxes(boxes.checked));
  const heat = document.getElementById("show-heatmap");
  if (heat) heat.addEventListener("change", () => showHeatmap(heat.checked));
  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    const key = e.key.toLowerCase();
    if (key === "b") showBoxes(!state.boxes);
    else if (key === "h") showHeatmap(!state.heatmap);
    else if (key === "r") reset();
    else if (key === "i") applyPreset("invert");
    else return;
    e.preventDefault();
  });
}

// Each view as tall as the window allows below where the first view starts (whatever the
// page shows above it), so an image is seen whole without scrolling; views beyond the first
// row of two share the height.
function fitToWindow() {
  if (!state.views.length) return;
  const first = state.views[0].element;
  first.style.height = "";
  const top = first.getBoundingClientRect().top + window.scrollY;
  const rows = state.views.length > 2 ? 2 : 1;
  const available = window.innerHeight - top - 28; // main's bottom padding, the border
  const height = Math.max(240, Math.floor(available / rows - (rows > 1 ? 60 : 0)));
  for (const v of state.views) v.element.style.height = `${height}px`;
}

async function loadView(engine, v) {
  const { viewport, figure } = v;
  await viewport.setStack([v.imageId]);
  viewport.render();
  const image = viewport.csImage;
  const props = viewport.getProperties();
  v.original = { ...props.voiRange };
  v.originalInvert = Boolean(props.invert);
  v.monochrome1 = image?.photometricInterpretation === "MONOCHROME1";
  v.range = { lower: image?.minPixelValue ?? v.original.lower, upper: image?.maxPixelValue ?? v.original.upper };
  v.columns = image?.columns;
  v.rows = image?.rows;
  const boxes = JSON.parse(figure.dataset.boxes || "[]");
  if (boxes.length && figure.dataset.boxColour) {
    v.boxUids = addBoxes(viewport, v.imageId, boxes, figure.dataset.boxColour, figure.dataset.boxDashed === "true");
    setBoxesVisible(v.boxUids, state.boxes);
  }
  if (figure.dataset.heatmapUrl) {
    v.heatmap = attachHeatmap(viewport, v.imageId, figure.dataset.heatmapUrl, v.columns, v.rows);
    v.heatmap.hidden = !state.heatmap;
  }
  viewport.render();
  figure.classList.add("loaded");
}

async function start() {
  const figures = [...document.querySelectorAll("figure.vp[data-dicom-url]")];
  if (!figures.length) return;
  await initCore();
  initLoader({ maxWebWorkers: 1 });
  initTools();
  addTool(WindowLevelTool);
  addTool(PanTool);
  addTool(WheelZoomTool);
  addTool(AIBoxTool);
  const engine = new RenderingEngine(ENGINE);
  state.views = figures.map((figure, index) => {
    const element = figure.querySelector(".vp-element");
    element.addEventListener("contextmenu", (e) => e.preventDefault()); // right-drag pans
    element.addEventListener("pointerdown", () => setActive(index));
    // cornerstone makes its element focusable (tabindex -1) and its key listener there cancels
    // every key (preventDefault): a click on the image would then swallow the page's keys (A, D,
    // N, R, ...) and Tab (a keyboard trap). The figure takes the focus instead; mouse tools
    // read Shift from the mouse event, so Shift+drag pan needs no key listener.
    figure.tabIndex = -1;
    element.addEventListener("focus", () => figure.focus({ preventScroll: true }));
    return { figure, element, index, imageId: imageIdOf(figure), boxUids: [], heatmap: null };
  });
  engine.setViewports(
    state.views.map((v) => ({
      viewportId: `vp-${v.index}`,
      type: Enums.ViewportType.STACK,
      element: v.element,
      defaultOptions: { background: [0, 0, 0] },
    })),
  );
  const group = ToolGroupManager.createToolGroup(GROUP);
  for (const t of [WindowLevelTool, PanTool, WheelZoomTool, AIBoxTool]) group.addTool(t.toolName);
  group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  group.setToolActive(PanTool.toolName, {
    bindings: [
      { mouseButton: MouseBindings.Secondary },
      { mouseButton: MouseBindings.Auxiliary },
      { mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Shift },
    ],
  });
  group.setToolActive(WheelZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  group.setToolEnabled(AIBoxTool.toolName);
  for (const v of state.views) {
    v.viewport = engine.getViewport(`vp-${v.index}`);
    group.addViewport(v.viewport.id, ENGINE);
  }
  setActive(0);
  wireControls();
  fitToWindow();
  window.addEventListener("resize", fitToWindow);
  const resize = new ResizeObserver(() => getRenderingEngine(ENGINE)?.resize(true, true));
  for (const v of state.views) resize.observe(v.element);
  const results = await Promise.allSettled(state.views.map((v) => loadView(engine, v)));
  results.forEach((r, n) => {
    if (r.status === "rejected") {
      state.views[n].figure.classList.add("failed");
      const note = state.views[n].figure.querySelector(".vp-error");
      if (note) note.hidden = false;
    }
  });
  showBoxes(state.boxes);
  showHeatmap(state.heatmap);
  state.ready = true;
  document.dispatchEvent(new CustomEvent("xrayd:viewport-ready"));
}

// The hook for tests and for anyone scripting the page (read-only views of the state).
window.xraydViewer = {
  get ready() {
    return state.ready;
  },
  get failed() {
    return state.failed;
  },
  get count() {
    return state.views.length;
  },
  get boxesShown() {
    return state.boxes;
  },
  get heatmapShown() {
    return state.heatmap;
  },
  get active() {
    return state.active;
  },
  loaded(i) {
    return Boolean(viewOf(i)?.figure.classList.contains("loaded"));
  },
  voi(i = 0) {
    const { voiRange, invert } = viewOf(i).viewport.getProperties();
    return { lower: voiRange.lower, upper: voiRange.upper, invert: Boolean(invert) };
  },
  originalVoi(i = 0) {
    return { ...viewOf(i).original };
  },
  zoom(i = 0) {
    return viewOf(i).viewport.getZoom();
  },
  imageSize(i = 0) {
    const v = viewOf(i);
    return { columns: v.columns, rows: v.rows };
  },
  /** The image's rectangle on the page (CSS pixels, client coordinates). */
  imageRect(i = 0) {
    const v = viewOf(i);
    const r = v.viewport.canvas.getBoundingClientRect(); // inside the border
    const corners = [
      [0, 0],
      [v.columns, v.rows],
    ].map(([c, rr]) => v.viewport.worldToCanvas(imageToWorld(v, c, rr)));
    return {
      left: r.left + Math.min(corners[0][0], corners[1][0]),
      top: r.top + Math.min(corners[0][1], corners[1][1]),
      right: r.left + Math.max(corners[0][0], corners[1][0]),
      bottom: r.top + Math.max(corners[0][1], corners[1][1]),
    };
  },
  /** The AI boxes' rectangles on the page (client coordinates). */
  boxes(i = 0) {
    const v = viewOf(i);
    const r = v.viewport.canvas.getBoundingClientRect(); // inside the border
    return boxesOnCanvas(v.viewport, v.boxUids).map((b) => ({
      left: r.left + b.left,
      top: r.top + b.top,
      right: r.left + b.right,
      bottom: r.top + b.bottom,
    }));
  },
};

function imageToWorld(v, col, row) {
  return csUtilities.imageToWorldCoords(v.imageId, [col, row]);
}

// A refused image (HTTP 422: too large, unreadable) rejects the loader's request promise a
// second time inside cornerstone, with the XMLHttpRequest as the reason; the figure already
// says the image cannot be shown, so that rejection is handled here rather than thrown.
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof XMLHttpRequest) {
    event.preventDefault();
    console.warn(`xrayd viewport: an image request was refused (HTTP ${event.reason.status})`);
  }
});

start().catch((err) => {
  state.failed = String(err && err.message ? err.message : err);
  console.warn("xrayd viewport could not start:", state.failed);
  document.body.classList.add("viewport-failed");
});
