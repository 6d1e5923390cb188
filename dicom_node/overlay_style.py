"""How an AI result is drawn, in one place: the web viewer, the Secondary Capture and the PDF
report all take their box and heatmap colours, line styles and legend from here, so one result
looks the same wherever a radiologist sees it.

Only results that call for a look get an overlay: a box and a heatmap are drawn for "present"
and "indeterminate", never for "absent" (a box on a negative study suggests a finding the model
did not report). Present is a solid red box, indeterminate a dashed amber box (told apart
without colour, too); the heatmap is a blue-to-cyan tint, distinct from both box colours and
from grey anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "HEATMAP_ALPHA_MAX",
    "HEATMAP_ALPHA_MIN",
    "HEATMAP_HIGH",
    "HEATMAP_LOW",
    "HEATMAP_THRESHOLD",
    "LEGEND",
    "BoxStyle",
    "LegendEntry",
    "box_style",
    "dash_mask",
    "draws_overlay",
    "heatmap_colours",
    "hex_colour",
    "legend_for",
    "legend_lines",
]

RGB = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class BoxStyle:
    """A decision's box: its colour and whether its outline is dashed."""

    decision: str
    colour: RGB
    dashed: bool
    label: str

    @property
    def hex(self) -> str:
        return hex_colour(self.colour)


_STYLES: dict[str, BoxStyle] = {
    "present": BoxStyle("present", (229, 72, 77), False, "fracture present (solid red box)"),
    "indeterminate": BoxStyle(
        "indeterminate", (245, 165, 36), True, "indeterminate (dashed amber box)"
    ),
}

#: The heatmap tint at its threshold and at its maximum (the ramp runs between them).
HEATMAP_LOW: RGB = (40, 90, 255)
HEATMAP_HIGH: RGB = (0, 240, 255)
#: Heatmap values at or below this are not drawn (the anatomy stays readable there).
HEATMAP_THRESHOLD = 0.3
#: Opacity of the tint at the threshold and at 1.0.
HEATMAP_ALPHA_MIN, HEATMAP_ALPHA_MAX = 0.30, 0.55

#: The legend, in the order it is shown: box styles, then the heatmap.
LEGEND: tuple[str, ...] = (
    "Solid red box: fracture present",
    "Dashed amber box: indeterminate, needs a radiologist",
    "Blue to cyan tint: where the model looked (cyan strongest)",
    "No box or tint: the AI found no fracture",
)


@dataclass(frozen=True, slots=True)
class LegendEntry:
    """One legend line and the sample drawn beside it: a decision's box ("present",
    "indeterminate"), the heatmap ramp ("heatmap") or nothing ("none")."""

    swatch: str
    text: str


_ENTRIES: dict[str, LegendEntry] = {
    "present": LegendEntry("present", LEGEND[0]),
    "indeterminate": LegendEntry("indeterminate", LEGEND[1]),
    "heatmap": LegendEntry("heatmap", LEGEND[2]),
    "none": LegendEntry("none", LEGEND[3]),
}


def legend_for(decision: str | None = None, *, heatmap: bool = True) -> tuple[LegendEntry, ...]:
    """The legend entries for a picture of one result (``decision``), or all of them (None).

    A picture shows the entry of its own box style, the heatmap entry when a tint is drawn,
    and for a result without overlay the "no box or tint" line, so a short banner explains
    exactly what is on the image.
    """
    if decision is None:
        return tuple(_ENTRIES.values())
    if not draws_overlay(decision):
        return (_ENTRIES["none"],)
    return (_ENTRIES[decision], *((_ENTRIES["heatmap"],) if heatmap else ()))


def dash_mask(length: int, width: int) -> npt.NDArray[np.bool_]:
    """Which of ``length`` pixels along a dashed outline are drawn: dashes of 3 line widths,
    gaps of 2, starting with a dash (so every corner is drawn)."""
    dash, gap = 3 * max(1, width), 2 * max(1, width)
    mask: npt.NDArray[np.bool_] = (np.arange(max(0, length)) % (dash + gap)) < dash
    return mask


def heatmap_colours(
    heat: npt.NDArray[np.floating],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The tint of a heatmap (values in [0, 1]; NaN as 0): ``(mask, colour, alpha)``.

    ``mask`` marks the values above :data:`HEATMAP_THRESHOLD`; for those, ``colour`` (n, 3)
    runs from :data:`HEATMAP_LOW` at the threshold to :data:`HEATMAP_HIGH` at 1.0 and
    ``alpha`` (n,) from :data:`HEATMAP_ALPHA_MIN` to :data:`HEATMAP_ALPHA_MAX`. The burned-in
    captures blend with it and the web viewer's RGBA overlay carries it, so both look alike.
    """
    clean = np.nan_to_num(heat.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    clean = np.clip(clean, 0.0, 1.0)
    mask: npt.NDArray[np.bool_] = clean > HEATMAP_THRESHOLD
    t = (clean[mask] - np.float32(HEATMAP_THRESHOLD)) / np.float32(1.0 - HEATMAP_THRESHOLD)
    # one channel at a time: contiguous 1-D arithmetic (broadcasting over a last axis of 3
    # made the tint of a band about 15 % slower than the previous red-yellow code)
    ramp = zip(HEATMAP_LOW, HEATMAP_HIGH, strict=True)
    colour = np.stack([np.float32(lo) + np.float32(hi - lo) * t for lo, hi in ramp], axis=1)
    alpha = t * np.float32(HEATMAP_ALPHA_MAX - HEATMAP_ALPHA_MIN)
    alpha += np.float32(HEATMAP_ALPHA_MIN)
    return mask, colour, alpha


def draws_overlay(decision: str) -> bool:
    """Whether a result with this decision gets boxes and a heatmap (present/indeterminate)."""
    return decision in _STYLES


def box_style(decision: str) -> BoxStyle | None:
    """The box style for ``decision``; None for "absent" and anything else (no box drawn)."""
    return _STYLES.get(decision)


def hex_colour(colour: RGB) -> str:
    """``(229, 72, 77)`` -> ``"#e5484d"``."""
    return "#{:02x}{:02x}{:02x}".format(*colour)


def legend_lines() -> tuple[str, ...]:
    """The legend as plain text lines (the SC banner font covers Latin-1 only: no dashes)."""
    return LEGEND
