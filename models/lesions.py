"""Fracture lines (labelled) and look-alike lucencies (growth plates, nutrient canals).

A :class:`Lucency` is a thin dark line across (part of) a long bone; a displaced one also
shifts the distal fragment, which makes the step in the cortex that a fracture shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.phantom import F64, Bone, Point

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Lucency:
    """A lucent line across bone ``bone`` at fraction ``t`` of its length.

    ``angle``: tilt from the bone's cross-section (radians). ``shift``: displacement of the
    distal fragment (normalised) and ``rotation`` its angulation about the line's centre.
    ``width``: half-width of the line and ``depth``: how dark (0..1). ``extent``: the part
    of the line drawn, in radii from the axis (-1..1 = across). ``jag``: (amplitude,
    frequency, phase) triples making the line irregular.
    """

    bone: int
    t: float
    angle: float
    shift: Point
    width: float
    depth: float
    extent: tuple[float, float] = (-1.3, 1.3)
    jag: tuple[tuple[float, float, float], ...] = ()
    rotation: float = 0.0

    @property
    def displaced(self) -> bool:
        return self.shift != (0.0, 0.0) or self.rotation != 0.0


@dataclass(frozen=True)
class _Frame:
    centre: Point
    along: Point  # unit vector along the line
    normal: Point  # unit normal, towards the distal end of the bone
    half: float  # half-length of the line inside the bone


def _frame(lucency: Lucency, bone: Bone) -> _Frame:
    ay, ax = bone.p1[0] - bone.p0[0], bone.p1[1] - bone.p0[1]
    length = math.hypot(ay, ax)
    uy, ux = ay / length, ax / length
    c, s = math.cos(lucency.angle), math.sin(lucency.angle)
    normal = (c * uy - s * ux, s * uy + c * ux)
    along = (-normal[1], normal[0])
    ends = math.exp(-((lucency.t / 0.13) ** 2)) + math.exp(-(((1 - lucency.t) / 0.13) ** 2))
    radius = bone.radius * (1.0 + bone.flare * ends)
    centre = (bone.p0[0] + lucency.t * ay, bone.p0[1] + lucency.t * ax)
    return _Frame(centre, along, normal, radius / max(c, 0.35))


def _coordinates(lucency: Lucency, frame: _Frame, y: F64, x: F64) -> tuple[F64, F64]:
    dy, dx = y - frame.centre[0], x - frame.centre[1]
    u = dy * frame.along[0] + dx * frame.along[1]
    w = dy * frame.normal[0] + dx * frame.normal[1]
    for amplitude, frequency, phase in lucency.jag:
        w = w + amplitude * np.sin(frequency * u + phase)
    return np.asarray(u, dtype=np.float64), np.asarray(w, dtype=np.float64)


def fragment_coordinates(lucencies: list[tuple[Lucency, Bone]], y: F64, x: F64) -> tuple[F64, F64]:
    """Where to sample the intact bone for each pixel: distal fragments move and tilt."""
    sy = np.broadcast_to(y, np.broadcast_shapes(y.shape, x.shape)).astype(np.float64)
    sx = np.broadcast_to(x, sy.shape).astype(np.float64)
    for lucency, bone in lucencies:
        if not lucency.displaced:
            continue
        frame = _frame(lucency, bone)
        _, w = _coordinates(lucency, frame, y, x)
        distal = np.broadcast_to(w > 0, sy.shape)
        cy, cx = frame.centre
        c, s = math.cos(lucency.rotation), math.sin(lucency.rotation)
        dy = sy - cy - lucency.shift[0]
        dx = sx - cx - lucency.shift[1]
        sy = np.where(distal, cy + c * dy + s * dx, sy)
        sx = np.where(distal, cx - s * dy + c * dx, sx)
    return sy, sx


def transmission(lucencies: list[tuple[Lucency, Bone]], y: F64, x: F64) -> F64 | float:
    """Factor (<= 1) by which the lines lower the bone's attenuation."""
    out: F64 | float = 1.0
    for lucency, bone in lucencies:
        frame = _frame(lucency, bone)
        u, w = _coordinates(lucency, frame, y, x)
        lo, hi = (e * frame.half for e in lucency.extent)
        soft = 0.15 * frame.half
        span = np.clip((u - lo) / soft, 0.0, 1.0) * np.clip((hi - u) / soft, 0.0, 1.0)
        line = np.exp(-np.square(w / lucency.width)) * span
        out = out * (1.0 - lucency.depth * line)
    return out


def box(lucency: Lucency, bone: Bone, size: int) -> Box:
    """Pixel box ``(row0, col0, row1, col1)`` around the drawn line and the moved fragment."""
    frame = _frame(lucency, bone)
    lo, hi = (max(-1.0, min(1.0, e)) * frame.half for e in lucency.extent)
    pad = 2.5 * lucency.width + sum(a for a, _, _ in lucency.jag) + 3.0 / size
    c, s = math.cos(lucency.rotation), math.sin(lucency.rotation)
    points = []
    for u in (lo, hi):
        dy, dx = u * frame.along[0], u * frame.along[1]
        moved = (c * dy - s * dx + lucency.shift[0], s * dy + c * dx + lucency.shift[1])
        points += [
            (frame.centre[0] + dy, frame.centre[1] + dx),
            (frame.centre[0] + moved[0], frame.centre[1] + moved[1]),
        ]
    ys = [p[0] for p in points]
    xs = [p[1] for p in points]
    return (
        max(0, math.floor((min(ys) - pad) * size)),
        max(0, math.floor((min(xs) - pad) * size)),
        min(size, math.ceil((max(ys) + pad) * size)),
        min(size, math.ceil((max(xs) + pad) * size)),
    )


def centre(lucency: Lucency, bone: Bone) -> Point:
    return _frame(lucency, bone).centre


def random_fracture(rng: np.random.Generator, index: int, bone: Bone) -> Lucency:
    """A fracture of ``bone``: complete and displaced, or incomplete (hairline)."""
    kind = rng.random()
    t = float(rng.uniform(0.18, 0.82))
    angle = float(rng.uniform(-0.6, 0.6))
    shift, rotation = (0.0, 0.0), 0.0
    extent = (-1.4, 1.4)
    if kind < 0.6:  # displaced: sideways shift, some overlap or gap, angulation
        ay, ax = bone.p1[0] - bone.p0[0], bone.p1[1] - bone.p0[1]
        length = math.hypot(ay, ax)
        side = float(rng.uniform(0.3, 1.0)) * bone.radius * 0.7 * float(rng.choice([-1, 1]))
        axial = float(rng.uniform(-0.25, 0.25)) * bone.radius
        shift = ((-ax * side + ay * axial) / length, (ay * side + ax * axial) / length)
        rotation = math.radians(float(rng.uniform(2.0, 12.0))) * float(rng.choice([-1, 1]))
        depth = float(rng.uniform(0.65, 0.95))
    elif kind < 0.75:  # complete, not displaced
        depth = float(rng.uniform(0.6, 0.9))
    else:  # incomplete (hairline through one cortex and part of the medulla)
        side_sign = float(rng.choice([-1.0, 1.0]))
        reach = float(rng.uniform(-0.2, 0.5))
        extent = (-1.4, reach) if side_sign < 0 else (-reach, 1.4)
        depth = float(rng.uniform(0.5, 0.8))
    width = float(rng.uniform(1.5, 3.2)) / 512.0  # about 1.5-3 pixels at 512 px
    jag = tuple(
        (
            float(rng.uniform(0.2, 0.8)) / 512.0 / k,
            float(rng.uniform(80, 200)) * k,
            float(rng.uniform(0, 2 * math.pi)),
        )
        for k in (1, 2, 3)
    )
    return Lucency(index, t, angle, shift, width, depth, extent, jag, rotation)


def random_lookalikes(
    rng: np.random.Generator, bones: tuple[Bone, ...], *, paediatric: bool
) -> list[Lucency]:
    """Unlabelled lucencies: growth plates near the ends (children), nutrient canals."""
    out: list[Lucency] = []
    for index, bone in enumerate(bones):
        if not bone.fracturable:
            continue
        if paediatric:
            for t in (0.09, 0.91):
                out.append(
                    Lucency(
                        index,
                        t + float(rng.normal(0, 0.01)),
                        0.0,
                        (0.0, 0.0),
                        float(rng.uniform(1.5, 2.5)) / 512.0,
                        0.55,
                    )
                )
        if rng.random() < 0.3:
            side = float(rng.choice([-1.0, 1.0]))
            extent = (0.55, 1.3) if side > 0 else (-1.3, -0.55)
            out.append(
                Lucency(
                    index,
                    float(rng.uniform(0.3, 0.7)),
                    float(rng.uniform(0.6, 1.0)),
                    (0.0, 0.0),
                    0.9 / 512.0,
                    0.4,
                    extent,
                )
            )
    return out
