// The AI's overlays on one viewport: boxes as locked cornerstone annotations, the heatmap as an
// <img> placed over the image's corners on every render (it follows zoom and pan).
import { Enums, utilities } from "@cornerstonejs/core";
// Deep imports (the package's own "exports"): the namespaces of the index would pull in every
// tool and the segmentation code.
import { addAnnotation, getAnnotation } from "@cornerstonejs/tools/annotation/annotationState";
import { setAnnotationLocked } from "@cornerstonejs/tools/annotation/annotationLocking";
import { setAnnotationVisibility } from "@cornerstonejs/tools/annotation/annotationVisibility";
import { style } from "@cornerstonejs/tools/annotation/config/index";
import RectangleROITool from "@cornerstonejs/tools/tools/annotation/RectangleROITool";
import triggerAnnotationRenderForViewportIds from "@cornerstonejs/tools/utilities/triggerAnnotationRenderForViewportIds";

/** A RectangleROI that shows no statistics text: the AI's box, drawn and never edited. */
export class AIBoxTool extends RectangleROITool {
  static toolName = "XraydAIBox";
  constructor(toolProps = {}) {
    super({
      ...toolProps,
      configuration: {
        ...(toolProps.configuration || {}),
        calculateStats: false,
        getTextLines: () => [],
      },
    });
  }
}

function worldAt(imageId, col, row) {
  return utilities.imageToWorldCoords(imageId, [col, row]);
}

/** Add the boxes ([[top, left, bottom, right], ...] in image pixels) of one image. */
export function addBoxes(viewport, imageId, boxes, colour, dashed) {
  const camera = viewport.getCamera();
  const uids = [];
  for (const [top, left, bottom, right] of boxes) {
    const uid = `xrayd-box-${viewport.id}-${uids.length}`;
    const points = [
      worldAt(imageId, left, top),
      worldAt(imageId, right, top),
      worldAt(imageId, left, bottom),
      worldAt(imageId, right, bottom),
    ];
    addAnnotation(
      {
        annotationUID: uid,
        highlighted: false,
        invalidated: false,
        isLocked: true,
        isVisible: true,
        metadata: {
          toolName: AIBoxTool.toolName,
          viewPlaneNormal: [...camera.viewPlaneNormal],
          viewUp: [...camera.viewUp],
          FrameOfReferenceUID: viewport.getFrameOfReferenceUID(),
          referencedImageId: imageId,
        },
        data: { label: "", handles: { points, activeHandleIndex: null }, cachedStats: {} },
      },
      viewport.element,
    );
    setAnnotationLocked(uid, true);
    style.setAnnotationStyles(uid, {
      color: colour,
      colorHighlighted: colour,
      colorSelected: colour,
      colorLocked: colour,
      lineWidth: "2",
      lineDash: dashed ? "8,5" : "",
      shadow: true,
    });
    uids.push(uid);
  }
  return uids;
}

export function setBoxesVisible(uids, visible) {
  for (const uid of uids) setAnnotationVisibility(uid, visible);
}

export function rerender(viewportIds) {
  triggerAnnotationRenderForViewportIds(viewportIds);
}

/** The boxes' rectangles in canvas (CSS) pixels: {left, top, right, bottom}. */
export function boxesOnCanvas(viewport, uids) {
  return uids.map((uid) => {
    const a = getAnnotation(uid);
    const pts = a.data.handles.points.map((p) => viewport.worldToCanvas(p));
    const xs = pts.map((p) => p[0]);
    const ys = pts.map((p) => p[1]);
    return {
      left: Math.min(...xs),
      top: Math.min(...ys),
      right: Math.max(...xs),
      bottom: Math.max(...ys),
    };
  });
}

/** The heatmap <img> over the image, kept on the image's corners as the camera moves. */
export function attachHeatmap(viewport, imageId, url, columns, rows) {
  const img = document.createElement("img");
  img.className = "vp-heatmap";
  img.alt = "";
  img.decoding = "async";
  img.src = url;
  img.hidden = true;
  const host = viewport.element.querySelector(".viewport-element") || viewport.element;
  const svg = host.querySelector("svg");
  host.insertBefore(img, svg || null);
  const place = () => {
    const a = viewport.worldToCanvas(worldAt(imageId, 0, 0));
    const b = viewport.worldToCanvas(worldAt(imageId, columns, rows));
    img.style.left = `${Math.min(a[0], b[0])}px`;
    img.style.top = `${Math.min(a[1], b[1])}px`;
    img.style.width = `${Math.abs(b[0] - a[0])}px`;
    img.style.height = `${Math.abs(b[1] - a[1])}px`;
  };
  viewport.element.addEventListener(Enums.Events.CAMERA_MODIFIED, place);
  viewport.element.addEventListener(Enums.Events.IMAGE_RENDERED, place);
  place();
  return img;
}
