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

__all__ = [
    "HEATMAP_HIGH",
    "HEATMAP_LOW",
    "LEGEND",
    "BoxStyle",
    "box_style",
    "draws_overlay",
    "hex_colour",
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

#: The legend, in the order it is shown: box styles, then the heatmap.
LEGEND: tuple[str, ...] = (
    "Solid red box: fracture present",
    "Dashed amber box: indeterminate, needs a radiologist",
    "Blue to cyan tint: where the model looked (cyan strongest)",
    "No box or tint: the AI found no fracture",
)


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
