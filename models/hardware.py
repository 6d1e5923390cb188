"""Orthopaedic metal (plates with screws, nails, wires) and lead side markers."""

from __future__ import annotations

import math

import numpy as np

from models.phantom import F64, Bone, Point, capsule_mask, grid, region

#: Attenuation of metal in the image (far above bone: it saturates the display).
METAL = 6.0

# Letter strokes in a unit box, (y, x) from the top-left corner.
_LETTERS: dict[str, list[tuple[Point, Point]]] = {
    "L": [((0.0, 0.0), (1.0, 0.0)), ((1.0, 0.0), (1.0, 0.65))],
    "R": [
        ((0.0, 0.0), (1.0, 0.0)),
        ((0.0, 0.0), (0.0, 0.45)),
        ((0.0, 0.45), (0.25, 0.65)),
        ((0.25, 0.65), (0.5, 0.45)),
        ((0.5, 0.45), (0.5, 0.0)),
        ((0.5, 0.3), (1.0, 0.68)),
    ],
}


def _add_capsule(
    image: F64, p0: Point, p1: Point, radius: float, value: F64 | float, size: int
) -> None:
    where = region([p0, p1], radius + 2.0 / size, size)
    if where is None:
        return
    y, x = grid(size, where)
    mask = capsule_mask(p0, p1, radius, y, x, soft=1.0 / size)
    image[where] += METAL * mask * (value if isinstance(value, float) else value[where])


def _frame(bone: Bone) -> tuple[Point, Point, float]:
    ay, ax = bone.p1[0] - bone.p0[0], bone.p1[1] - bone.p0[1]
    length = math.hypot(ay, ax)
    return (ay / length, ax / length), (-ax / length, ay / length), length


def _at(bone: Bone, t: float, across: float = 0.0) -> Point:
    _, (ny, nx), _ = _frame(bone)
    return (
        bone.p0[0] + t * (bone.p1[0] - bone.p0[0]) + across * ny,
        bone.p0[1] + t * (bone.p1[1] - bone.p0[1]) + across * nx,
    )


def _screw(
    image: F64, head: Point, direction: Point, length: float, radius: float, size: int
) -> None:
    tip = (head[0] + length * direction[0], head[1] + length * direction[1])
    where = region([head, tip], radius * 2 + 2.0 / size, size)
    if where is None:
        return
    y, x = grid(size, where)
    along = (y - head[0]) * direction[0] + (x - head[1]) * direction[1]
    thread = 0.8 + 0.2 * np.sin(along * 2 * math.pi / (radius * 1.6))
    mask = capsule_mask(head, tip, radius, y, x, soft=1.0 / size)
    image[where] += METAL * mask * thread
    _add_capsule(image, head, head, radius * 1.7, 1.0, size)


def draw_hardware(rng: np.random.Generator, bone: Bone, size: int) -> F64:
    """Metal fixed to ``bone``: a plate with screws, an intramedullary nail, or wires."""
    image = np.zeros((size, size), dtype=np.float64)
    (uy, ux), (ny, nx), _ = _frame(bone)
    r = bone.radius
    kind = rng.choice(["plate", "nail", "wires"], p=[0.55, 0.2, 0.25])
    if kind == "plate":
        side = float(rng.choice([-1.0, 1.0]))
        t0 = float(rng.uniform(0.25, 0.5))
        t1 = min(0.85, t0 + float(rng.uniform(0.25, 0.4)))
        a, b = _at(bone, t0, side * r * 1.05), _at(bone, t1, side * r * 1.05)
        _add_capsule(image, a, b, r * 0.38, 0.55, size)
        screws = int(rng.integers(3, 7))
        for k in range(screws):
            t = t0 + (t1 - t0) * (k + 0.5) / screws
            head = _at(bone, t, side * r * 1.1)
            tilt = float(rng.normal(0.0, 0.08))
            d = (
                -side * (ny * math.cos(tilt) + uy * math.sin(tilt)),
                -side * (nx * math.cos(tilt) + ux * math.sin(tilt)),
            )
            _screw(image, head, d, r * 2.3, max(r * 0.13, 1.2 / size), size)
    elif kind == "nail":
        a, b = _at(bone, 0.06), _at(bone, 0.94)
        _add_capsule(image, a, b, r * 0.32, 0.7, size)
        for t in (0.12, 0.88):
            head = _at(bone, t, r * 1.3)
            _screw(image, head, (-ny, -nx), r * 2.6, max(r * 0.12, 1.2 / size), size)
    else:
        for _ in range(int(rng.integers(2, 4))):
            t = float(rng.uniform(0.3, 0.7))
            angle = float(rng.uniform(0.5, 1.1)) * float(rng.choice([-1.0, 1.0]))
            c, s = math.cos(angle), math.sin(angle)
            d = (c * ny + s * uy, c * nx + s * ux)
            mid = _at(bone, t)
            half = r * float(rng.uniform(2.0, 3.5))
            a = (mid[0] - half * d[0], mid[1] - half * d[1])
            b = (mid[0] + half * d[0], mid[1] + half * d[1])
            _add_capsule(image, a, b, max(r * 0.08, 1.3 / size), 0.8, size)
    return image


def draw_marker(letter: str, corner: Point, height: float, size: int) -> F64:
    """A lead letter (``"L"`` or ``"R"``) whose top-left corner is ``corner``."""
    image = np.zeros((size, size), dtype=np.float64)
    stroke = max(height * 0.09, 1.2 / size)
    for p, q in _LETTERS[letter]:
        a = (corner[0] + p[0] * height, corner[1] + p[1] * height)
        b = (corner[0] + q[0] * height, corner[1] + q[1] * height)
        _add_capsule(image, a, b, stroke, 0.6, size)
    return image
