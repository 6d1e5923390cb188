"""The dashboards' SVG charts, parsed as XML."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from xrayd.web.charts import bar_chart, line_chart

NS = {"svg": "http://www.w3.org/2000/svg"}
SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def by_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in e.get("class", "").split()]


def texts(root: ET.Element) -> list[str]:
    return [e.text or "" for e in root.iter(f"{SVG}text")]


# -- bar chart ---------------------------------------------------------------------------------


def test_bar_chart_one_bar_per_value_heights_proportional() -> None:
    values = [2.0, 4.0, 1.0, 0.0, 8.0]
    root = parse(bar_chart(["a", "b", "c", "d", "e"], values, title="Studies", y_label="count"))
    bars = by_class(root, "chart-bar")
    assert len(bars) == 5
    assert [float(b.get("data-value", "nan")) for b in bars] == values
    assert [b.get("data-label") for b in bars] == ["a", "b", "c", "d", "e"]
    heights = [float(b.get("height", "nan")) for b in bars]
    assert heights[3] == 0.0
    for height, value in zip(heights, values, strict=True):
        assert height == pytest.approx(heights[1] * value / 4.0, abs=0.02)
    bottoms = {round(float(b.get("y", "0")) + float(b.get("height", "0")), 1) for b in bars}
    assert len(bottoms) == 1  # all stand on the same baseline
    xs = [float(b.get("x", "0")) for b in bars]
    assert xs == sorted(xs)


def test_bar_chart_is_accessible_with_exact_tooltips() -> None:
    root = parse(bar_chart(["Mon", "Tue"], [3, 2.125], title="Per day", y_label="studies"))
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Per day"
    assert root.findtext("svg:title", namespaces=NS) == "Per day"
    tooltips = [b.findtext("svg:title", namespaces=NS) for b in by_class(root, "chart-bar")]
    assert tooltips == ["Mon: 3", "Tue: 2.125"]
    assert "studies" in texts(root)
    assert "Mon" in texts(root) and "Tue" in texts(root)


def test_bar_chart_axis_ticks_and_gridlines() -> None:
    root = parse(bar_chart(["a", "b"], [3, 7], title="t"))
    ticks = [t.text for t in by_class(root, "chart-axis-y")[0].iter(f"{SVG}text")]
    assert ticks == ["0", "2", "4", "6", "8"]  # counts: whole-number steps, rounded up
    grid = by_class(root, "chart-grid")[0]
    assert len(list(grid.iter(f"{SVG}line"))) == 5


def test_hostile_labels_and_title_are_escaped() -> None:
    hostile = '<script>alert("x")</script>&\x00'
    svg = bar_chart([hostile, "ok"], [1, 2], title=hostile, y_label=hostile)
    assert "<script" not in svg
    root = parse(svg)  # well-formed XML (a NUL would not be)
    assert not list(root.iter("script")) and not list(root.iter(f"{SVG}script"))
    assert root.get("aria-label") == '<script>alert("x")</script>&'
    assert by_class(root, "chart-bar")[0].get("data-label") == '<script>alert("x")</script>&'
    svg = line_chart([hostile], {hostile: [1.0]}, title="t")
    assert "<script" not in svg
    parse(svg)


@pytest.mark.parametrize(("labels", "values"), [([], []), (["a", "b"], [math.nan, math.inf])])
def test_bar_chart_without_data_says_so(labels: list[str], values: list[float]) -> None:
    root = parse(bar_chart(labels, values, title="Empty"))
    assert not by_class(root, "chart-bar")
    assert "chart-empty" in root.get("class", "")
    assert [e.text for e in by_class(root, "chart-no-data")] == ["No data"]
    assert root.get("role") == "img" and root.get("aria-label") == "Empty"


def test_bar_chart_all_zero_is_data_not_empty() -> None:
    root = parse(bar_chart(["a", "b"], [0, 0], title="Quiet"))
    assert len(by_class(root, "chart-bar")) == 2
    assert not by_class(root, "chart-no-data")


def test_bar_chart_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="length"):
        bar_chart(["a"], [1, 2], title="t")


def test_many_labels_are_thinned_out() -> None:
    labels = [f"2025-03-{d:02d}" for d in range(1, 32)]
    root = parse(bar_chart(labels, [1.0] * 31, title="March"))
    shown = [t.text for t in by_class(root, "chart-axis-x")[0].iter(f"{SVG}text")]
    assert len(by_class(root, "chart-bar")) == 31
    assert shown[0] == "2025-03-01" and 2 <= len(shown) < 31


# -- line chart --------------------------------------------------------------------------------


def test_line_chart_points_and_gaps() -> None:
    series: dict[str, list[float | None]] = {"rate": [0.5, 0.75, None, 1.0, 0.25]}
    labels = ["d1", "d2", "d3", "d4", "d5"]
    root = parse(line_chart(labels, series, title="Agreement", y_label="rate", y_max=1.0))
    points = by_class(root, "chart-point")
    assert [p.get("data-value") for p in points] == ["0.5", "0.75", "1", "0.25"]
    assert [p.get("data-label") for p in points] == ["d1", "d2", "d4", "d5"]
    assert points[0].findtext("svg:title", namespaces=NS) == "rate, d1: 0.5"
    (line,) = by_class(root, "chart-line")
    d = line.get("d", "")
    assert d.count("M") == 2  # broken at the gap: d1-d2, then d4-d5
    assert d.count("L") == 2
    ys = {p.get("data-value"): float(p.get("cy", "nan")) for p in points}
    zero = ys["1"] + (ys["0.5"] - ys["1"]) * 2  # y of 0 from y(1) and y(0.5)
    assert ys["0.25"] == pytest.approx(zero - (zero - ys["1"]) * 0.25, abs=0.02)
    ticks = [t.text for t in by_class(root, "chart-axis-y")[0].iter(f"{SVG}text")]
    assert ticks[0] == "0.0" and ticks[-1] == "1.0"
    assert not by_class(root, "chart-legend")  # a single series needs none


def test_line_chart_y_max_fixes_the_top_and_clamps() -> None:
    root = parse(line_chart(["a", "b"], {"s": [0.1, 0.2]}, title="t", y_max=1.0))
    ticks = [t.text for t in by_class(root, "chart-axis-y")[0].iter(f"{SVG}text")]
    assert ticks[-1] == "1.0"
    over = parse(line_chart(["a", "b"], {"s": [0.5, 3.0]}, title="t", y_max=1.0))
    cys = [float(p.get("cy", "nan")) for p in by_class(over, "chart-point")]
    top = min(float(g.get("y1", "nan")) for g in by_class(over, "chart-grid")[0])
    assert cys[1] == pytest.approx(top)


def test_line_chart_legend_for_several_series() -> None:
    root = parse(line_chart(["a", "b"], {"HAND": [1, 2], "WRIST": [2, None]}, title="t"))
    items = by_class(root, "chart-legend-item")
    assert [i.get("data-series") for i in items] == ["HAND", "WRIST"]
    assert [g.get("data-series") for g in by_class(root, "chart-series")] == ["HAND", "WRIST"]
    colours = {g.get("stroke") for g in by_class(root, "chart-series")}
    assert len(colours) == 2


def test_line_chart_bands_drawn_behind_their_series() -> None:
    svg = line_chart(
        ["d1", "d2", "d3", "d4"],
        {"rate": [0.5, 0.6, 0.7, 0.8]},
        title="t",
        y_max=1.0,
        bands={"rate": ([0.3, 0.4, None, 0.6], [0.7, 0.8, None, 0.95])},
    )
    root = parse(svg)
    (band,) = by_class(root, "chart-band")
    assert band.get("data-series") == "rate"
    d = band.get("d", "")
    assert d.count("M") == 2 and d.count("Z") == 2  # d1-d2, then d4 on its own
    children = list(root)
    assert children.index(band) < children.index(by_class(root, "chart-series")[0])
    point_ys = [float(p.get("cy", "nan")) for p in by_class(root, "chart-point")]
    corners = d.replace("M", " ").replace("L", " ").replace("Z", " ").split()
    band_ys = [float(xy.split(",")[1]) for xy in corners]
    assert min(band_ys) < min(point_ys) and max(band_ys) > max(point_ys)


def test_band_for_unknown_series_refused() -> None:
    with pytest.raises(ValueError, match="names no series"):
        line_chart(["a"], {"s": [1]}, title="t", bands={"x": ([0], [2])})
    with pytest.raises(ValueError, match="values"):
        line_chart(["a", "b"], {"s": [1]}, title="t")


@pytest.mark.parametrize(
    ("x_labels", "series"),
    [([], {}), (["a", "b"], {}), (["a", "b"], {"s": [None, None]}), (["a"], {"s": [math.nan]})],
)
def test_line_chart_without_data_says_so(
    x_labels: list[str], series: dict[str, list[float | None]]
) -> None:
    root = parse(line_chart(x_labels, series, title="Nothing"))
    assert not by_class(root, "chart-point") and not by_class(root, "chart-line")
    assert [e.text for e in by_class(root, "chart-no-data")] == ["No data"]


def test_single_point_line_chart() -> None:
    root = parse(line_chart(["only"], {"s": [0.4]}, title="t", bands={"s": ([0.2], [0.6])}))
    assert len(by_class(root, "chart-point")) == 1
    assert by_class(root, "chart-band")[0].get("d", "").count("Z") == 1
