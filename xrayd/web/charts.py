"""Server-side SVG charts for the dashboards: plain strings, no third-party libraries.

The SVG is meant to be inlined in a page (mark it safe in the template). Every piece of text is
XML-escaped (and characters XML cannot hold are dropped), so labels may come from anywhere.
No ``style`` attributes or elements are written (a strict Content-Security-Policy stays
intact): colours are presentation attributes that a stylesheet can override through the
classes ``chart``, ``chart-bar``, ``chart-point``, ``chart-line``, ``chart-band``,
``chart-series-<i>``, ``chart-grid``, ``chart-axis``, ``chart-legend`` and ``chart-no-data``.

Text stays readable where the chart is drawn: the page scales the SVG to its card's width
(``width: 100%``), so the viewBox is about as wide as a card (:data:`WIDTH` user units for a card
of at least ``WIDTH`` CSS pixels, the dashboards' grid minimum) and the smallest text is
:data:`FONT` units: at least 12 CSS pixels on the page. For screen readers the ``<svg>`` is an
image (``role="img"``) labelled by its ``<title>`` and described by its ``<desc>``
(``aria-labelledby``/``aria-describedby``, ids unique per chart); the dashboards show the
numbers in a table beside it.

Each bar or point carries ``data-label`` and ``data-value`` (the exact value, as Python's
shortest round-trip ``repr``) and a ``<title>`` tooltip. Missing values (``None``, NaN,
infinities) draw nothing: no bar, and a gap in a line. A chart without any value says
"No data".
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["FONT", "PALETTE", "WIDTH", "bar_chart", "line_chart"]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
SVG_NS = "http://www.w3.org/2000/svg"
#: the default viewBox width: the dashboards' narrowest card (CSS pixels; xrayd/web/static/app.css)
WIDTH = 440
HEIGHT = 260
#: axis, legend and tick text (user units): 13 x (416 / 440) = 12.3 CSS px in the narrowest card
FONT = 13
TITLE_FONT = 15
CHAR_W = FONT * 0.6  # rough width of one character, for layout only
MAX_AXIS_LABEL = 14
LEGEND_CHAR_W = FONT * 0.7  # capitals are wider; legends must not overlap
LEGEND_GAP = 40
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

Bands = Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]]


# -- text and numbers --------------------------------------------------------------------------


def _esc(text: str) -> str:
    """Text safe in XML content and in double-quoted attributes."""
    text = _NOT_XML.sub("", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _num(value: float) -> str:
    """The exact value, short: integers without a fraction, others as Python's repr."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _c(value: float) -> str:
    """A coordinate, to 0.01 px."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _clean(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _short(label: str) -> str:
    return label if len(label) <= MAX_AXIS_LABEL else label[: MAX_AXIS_LABEL - 1] + "…"


# -- scale -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scale:
    lo: float
    hi: float
    step: float

    def ticks(self) -> list[float]:
        count = math.floor((self.hi - self.lo) / self.step + 1e-9)
        return [self.lo + i * self.step for i in range(count + 1)]

    def label(self, value: float) -> str:
        for decimals in range(8):
            if abs(round(self.step, decimals) - self.step) < 1e-9:
                return f"{value:.{decimals}f}"
        return f"{value:g}"


def _nice_step(span: float, integers: bool, target: int = 5) -> float:
    raw = span / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    return max(step, 1.0) if integers else step


def _scale(values: Sequence[float], y_max: float | None = None) -> _Scale:
    """From 0 (or below, for negative values) to the data maximum or ``y_max``."""
    lo = min(0.0, *values)
    hi = y_max if y_max is not None else max(0.0, *values)
    if hi <= lo:
        hi = lo + 1.0
    integers = y_max is None and all(v.is_integer() for v in values)
    step = _nice_step(hi - lo, integers)
    lo = math.floor(lo / step + 1e-9) * step
    if y_max is None:
        hi = math.ceil(hi / step - 1e-9) * step
    return _Scale(lo, hi, step)


# -- frame: title, axes, grid, legend ----------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    width: float
    height: float
    left: float
    top: float
    right: float
    bottom: float
    scale: _Scale

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom

    def y(self, value: float) -> float:
        value = min(max(value, self.scale.lo), self.scale.hi)
        fraction = (value - self.scale.lo) / (self.scale.hi - self.scale.lo)
        return self.top + self.plot_h * (1 - fraction)


def _frame(width: int, height: int, scale: _Scale, legend_rows: int, y_label: str) -> _Frame:
    widest = max(len(scale.label(t)) for t in scale.ticks())
    left = 12 + widest * CHAR_W + (FONT + 8 if y_label else 0)
    bottom = FONT + 20 + (FONT + 8) * legend_rows
    return _Frame(width, height, left, TITLE_FONT + 18, 16, bottom, scale)


def _chart_id(kind: str, title: str, desc: str) -> str:
    """An id for the chart's title and description: the same chart the same id, two charts on
    one page different ones (their titles or contents differ)."""
    digest = hashlib.blake2b(f"{kind}\0{title}\0{desc}".encode(), digest_size=6).hexdigest()
    return f"chart-{digest}"


def _open(kind: str, title: str, width: int, height: int, desc: str) -> list[str]:
    ident = _chart_id(kind, title, desc)
    return [
        f'<svg xmlns="{SVG_NS}" class="chart {kind}" role="img" '
        f'aria-label="{_esc(title)}" aria-labelledby="{ident}-title" '
        f'aria-describedby="{ident}-desc" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" '
        f'font-size="{FONT}">',
        f'<title id="{ident}-title">{_esc(title)}</title>',
        f'<desc id="{ident}-desc">{_esc(desc)}</desc>',
        f'<text class="chart-title" x="{_c(width / 2)}" y="{TITLE_FONT + 4}" '
        f'text-anchor="middle" font-size="{TITLE_FONT}" font-weight="600" '
        f'aria-hidden="true">{_esc(title)}</text>',
    ]


def _y_axis(f: _Frame, y_label: str) -> list[str]:
    out = ['<g class="chart-grid" stroke="#d0d0d0" stroke-width="1">']
    for tick in f.scale.ticks():
        y = _c(f.y(tick))
        out.append(f'<line x1="{_c(f.left)}" y1="{y}" x2="{_c(f.width - f.right)}" y2="{y}"/>')
    out.append("</g>")
    out.append('<g class="chart-axis chart-axis-y" fill="#444" text-anchor="end">')
    for tick in f.scale.ticks():
        out.append(
            f'<text x="{_c(f.left - 6)}" y="{_c(f.y(tick) + FONT / 3)}">'
            f"{_esc(f.scale.label(tick))}</text>"
        )
    out.append("</g>")
    if y_label:
        middle = _c(f.top + f.plot_h / 2)
        out.append(
            f'<text class="chart-y-label" transform="rotate(-90)" x="-{middle}" y="{FONT + 2}" '
            f'text-anchor="middle" fill="#444">{_esc(y_label)}</text>'
        )
    baseline = _c(f.y(max(f.scale.lo, 0.0)))
    out.append(
        f'<line class="chart-axis chart-baseline" x1="{_c(f.left)}" y1="{baseline}" '
        f'x2="{_c(f.width - f.right)}" y2="{baseline}" stroke="#666"/>'
    )
    return out


def _x_labels(f: _Frame, labels: Sequence[str], xs: Sequence[float]) -> list[str]:
    """Labels under the plot, thinned out so that they do not overlap."""
    longest = max((len(_short(label)) for label in labels), default=1)
    room = f.plot_w / max(len(labels), 1)
    every = max(1, math.ceil((longest * CHAR_W + 6) / room))
    y = _c(f.top + f.plot_h + FONT + 6)
    out = ['<g class="chart-axis chart-axis-x" fill="#444" text-anchor="middle">']
    for i, (label, x) in enumerate(zip(labels, xs, strict=True)):
        if i % every == 0:
            out.append(f'<text x="{_c(x)}" y="{y}">{_esc(_short(label))}</text>')
    out.append("</g>")
    return out


def _legend_rows(names: Sequence[str], width: int) -> list[list[tuple[int, str]]]:
    rows: list[list[tuple[int, str]]] = [[]]
    used = 0.0
    for i, name in enumerate(names):
        need = LEGEND_GAP + len(name) * LEGEND_CHAR_W
        if rows[-1] and used + need > width - 32:
            rows.append([])
            used = 0.0
        rows[-1].append((i, name))
        used += need
    return rows


def _legend(f: _Frame, rows: Sequence[Sequence[tuple[int, str]]]) -> list[str]:
    out = ['<g class="chart-legend">']
    for r, row in enumerate(rows):
        y = f.top + f.plot_h + 2 * FONT + 14 + (FONT + 8) * r
        x = f.left
        for i, name in row:
            colour = PALETTE[i % len(PALETTE)]
            out.append(
                f'<g class="chart-legend-item chart-series-{i}" data-series="{_esc(name)}">'
                f'<line x1="{_c(x)}" y1="{_c(y - 4)}" x2="{_c(x + 18)}" y2="{_c(y - 4)}" '
                f'stroke="{colour}" stroke-width="3"/>'
                f'<text x="{_c(x + 24)}" y="{_c(y)}">{_esc(name)}</text></g>'
            )
            x += LEGEND_GAP + len(name) * LEGEND_CHAR_W
    out.append("</g>")
    return out


def _no_data(kind: str, title: str, width: int, height: int) -> str:
    parts = _open(f"chart-{kind} chart-empty", title, width, height, "No data.")
    parts.append(
        f'<text class="chart-no-data" x="{_c(width / 2)}" y="{_c(height / 2)}" '
        f'text-anchor="middle" fill="#666" font-size="{TITLE_FONT}">No data</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


# -- bar chart ---------------------------------------------------------------------------------


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    y_label: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """One bar per label (missing values draw no bar), scaled from 0 to a round maximum."""
    if len(labels) != len(values):
        raise ValueError("labels and values differ in length")
    cleaned = [_clean(v) for v in values]
    present = [v for v in cleaned if v is not None]
    if not present:
        return _no_data("bar-chart", title, width, height)
    f = _frame(width, height, _scale(present), 0, y_label)
    band = f.plot_w / len(labels)
    centres = [f.left + band * (i + 0.5) for i in range(len(labels))]
    top = max(present)
    desc = f"{len(present)} bars; highest {_num(top)} ({labels[cleaned.index(top)]})."
    parts = _open("chart-bar-chart", title, width, height, desc)
    parts += _y_axis(f, y_label)
    parts.append(f'<g class="chart-bars" fill="{PALETTE[0]}">')
    for label, value, centre in zip(labels, cleaned, centres, strict=True):
        if value is not None:
            parts.append(_bar(f, label, value, centre, band * 0.7))
    parts.append("</g>")
    parts += _x_labels(f, labels, centres)
    parts.append("</svg>")
    return "\n".join(parts)


def _bar(f: _Frame, label: str, value: float, centre: float, bar_w: float) -> str:
    zero, end = f.y(max(f.scale.lo, 0.0)), f.y(value)
    return (
        f'<rect class="chart-bar" x="{_c(centre - bar_w / 2)}" y="{_c(min(zero, end))}" '
        f'width="{_c(bar_w)}" height="{_c(abs(zero - end))}" '
        f'data-label="{_esc(label)}" data-value="{_num(value)}">'
        f"<title>{_esc(label)}: {_num(value)}</title></rect>"
    )


# -- line chart --------------------------------------------------------------------------------


def line_chart(
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    y_label: str = "",
    y_max: float | None = None,
    bands: Bands | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Lines over evenly spaced x labels; ``None`` breaks a line. ``bands`` shade a range
    (e.g. a confidence interval: ``{name: (lows, highs)}``) behind the series of that name.
    With ``y_max`` the axis ends there (rates: 1.0) and larger values are drawn at the top.
    A legend is drawn when there is more than one series."""
    bands = bands or {}
    _check_lengths(x_labels, series, bands)
    lines = {name: [_clean(v) for v in values] for name, values in series.items()}
    shaded = {
        name: ([_clean(v) for v in lows], [_clean(v) for v in highs])
        for name, (lows, highs) in bands.items()
    }
    present = [v for values in lines.values() for v in values if v is not None]
    if not x_labels or not present:
        return _no_data("line-chart", title, width, height)
    extent = present + [v for lo, hi in shaded.values() for v in (*lo, *hi) if v is not None]
    names = list(lines)
    rows = _legend_rows(names, width) if len(names) > 1 else []
    f = _frame(width, height, _scale(extent, y_max), len(rows), y_label)
    xs = _positions(f, len(x_labels))
    desc = f"{len(names)} series over {len(x_labels)} points, {x_labels[0]} to {x_labels[-1]}."
    parts = _open("chart-line-chart", title, width, height, desc)
    parts += _y_axis(f, y_label)
    for name, (lows, highs) in shaded.items():
        parts.append(_band(f, names.index(name), name, xs, lows, highs))
    for i, (name, values) in enumerate(lines.items()):
        parts += _series(f, i, name, x_labels, xs, values)
    parts += _x_labels(f, x_labels, xs)
    parts += _legend(f, rows) if rows else []
    parts.append("</svg>")
    return "\n".join(parts)


def _check_lengths(
    x_labels: Sequence[str], series: Mapping[str, Sequence[float | None]], bands: Bands
) -> None:
    for name, values in series.items():
        if len(values) != len(x_labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(x_labels)} labels")
    for name, (lows, highs) in bands.items():
        if name not in series:
            raise ValueError(f"band {name!r} names no series")
        if len(lows) != len(x_labels) or len(highs) != len(x_labels):
            raise ValueError(f"band {name!r} differs in length from the labels")


def _positions(f: _Frame, count: int) -> list[float]:
    if count == 1:
        return [f.left + f.plot_w / 2]
    inset = 8.0
    step = (f.plot_w - 2 * inset) / (count - 1)
    return [f.left + inset + i * step for i in range(count)]


def _runs(present: Sequence[bool]) -> list[list[int]]:
    """Indices of the consecutive stretches where ``present`` is true."""
    runs: list[list[int]] = []
    for i, ok in enumerate(present):
        if not ok:
            continue
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _series(
    f: _Frame,
    index: int,
    name: str,
    x_labels: Sequence[str],
    xs: Sequence[float],
    values: Sequence[float | None],
) -> list[str]:
    colour = PALETTE[index % len(PALETTE)]
    segments = []
    for run in _runs([v is not None for v in values]):
        points = [f"{_c(xs[i])},{_c(f.y(values[i] or 0.0))}" for i in run]
        segments.append("M" + " L".join(points))
    out = [
        f'<g class="chart-series chart-series-{index}" data-series="{_esc(name)}" '
        f'stroke="{colour}" fill="{colour}">'
    ]
    if segments:
        out.append(
            f'<path class="chart-line" d="{" ".join(segments)}" fill="none" stroke-width="2"/>'
        )
    for label, x, value in zip(x_labels, xs, values, strict=True):
        if value is not None:
            out.append(
                f'<circle class="chart-point" cx="{_c(x)}" cy="{_c(f.y(value))}" r="3" '
                f'data-series="{_esc(name)}" data-label="{_esc(label)}" '
                f'data-value="{_num(value)}"><title>{_esc(name)}, {_esc(label)}: '
                f"{_num(value)}</title></circle>"
            )
    out.append("</g>")
    return out


def _band(
    f: _Frame,
    index: int,
    name: str,
    xs: Sequence[float],
    lows: Sequence[float | None],
    highs: Sequence[float | None],
) -> str:
    """A closed shape per stretch where both ends are known."""
    known = [lo is not None and hi is not None for lo, hi in zip(lows, highs, strict=True)]
    shapes = [_band_shape(f, xs, run, lows, highs) for run in _runs(known)]
    if not shapes:
        return ""
    colour = PALETTE[index % len(PALETTE)]
    return (
        f'<path class="chart-band chart-series-{index}" data-series="{_esc(name)}" '
        f'd="{" ".join(shapes)}" fill="{colour}" fill-opacity="0.18" stroke="none"/>'
    )


def _band_shape(
    f: _Frame,
    xs: Sequence[float],
    run: Sequence[int],
    lows: Sequence[float | None],
    highs: Sequence[float | None],
) -> str:
    """Along the highs, back along the lows; a lone point gets a narrow box (an error bar)."""
    if len(run) == 1:
        spots, at = [run[0], run[0]], [xs[run[0]] - 3, xs[run[0]] + 3]
    else:
        spots, at = list(run), [xs[i] for i in run]
    upper = [f"{_c(x)},{_c(f.y(highs[i] or 0.0))}" for i, x in zip(spots, at, strict=True)]
    lower = [f"{_c(x)},{_c(f.y(lows[i] or 0.0))}" for i, x in zip(spots, at, strict=True)]
    return "M" + " L".join(upper + lower[::-1]) + " Z"
