"""Drawing primitives for synthetic radiographs: projected bones, soft tissue, noise fields.

Shapes are described in normalised coordinates (``(y, x)`` in [0, 1], y down) and drawn as
*projected attenuation* (line integrals) on a pixel grid: a hollow cylinder gives the bright
cortical "tram lines" around a darker medullary cavity, an ellipsoid gives a carpal bone or a
femoral head. Pure numpy; every function is deterministic given its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Point = tuple[float, float]

#: Attenuation per unit of chord length (normalised units): cortical bone, medullary cavity
#: of a shaft, cancellous bone of the ends, soft tissue.
MU_CORTEX = 26.0
MU_MEDULLA = 6.0
MU_CANCELLOUS = 9.5
MU_TISSUE = 3.4


@dataclass(frozen=True)
class Bone:
    """A long bone: hollow tube from ``p0`` to ``p1`` with flared, rounded ends."""

    p0: Point
    p1: Point
    radius: float
    flare: float = 0.35
    cortex: float = 0.3
    density: float = 1.0
    fracturable: bool = True


@dataclass(frozen=True)
class Ovoid:
    """An ellipsoidal bone (carpal, head, condyle) or a flat bone (``depth`` < 1)."""

    center: Point
    a: float
    b: float
    angle: float = 0.0
    cortex: float = 0.25
    density: float = 1.0
    depth: float = 1.0


@dataclass(frozen=True)
class Tissue:
    """A soft-tissue capsule (a limb segment, a finger) around the bones."""

    p0: Point
    p1: Point
    radius: float
    density: float = 1.0


@dataclass(frozen=True)
class Anatomy:
    bones: tuple[Bone, ...]
    ovoids: tuple[Ovoid, ...]
    tissue: tuple[Tissue, ...]


@dataclass(frozen=True)
class Similarity:
    """``p -> centre + scale * R(angle) * flip(p - 0.5) + shift``, all in normalised units."""

    angle: float = 0.0
    scale: float = 1.0
    shift: Point = (0.0, 0.0)
    flip: bool = False

    def point(self, p: Point) -> Point:
        y, x = p[0] - 0.5, p[1] - 0.5
        if self.flip:
            x = -x
        c, s = math.cos(self.angle), math.sin(self.angle)
        ry, rx = c * y + s * x, -s * y + c * x
        return (0.5 + self.scale * ry + self.shift[0], 0.5 + self.scale * rx + self.shift[1])

    def angle_of(self, angle: float) -> float:
        return (-angle if self.flip else angle) - self.angle

    def anatomy(self, anatomy: Anatomy) -> Anatomy:
        s = self.scale
        return Anatomy(
            bones=tuple(
                replace(b, p0=self.point(b.p0), p1=self.point(b.p1), radius=b.radius * s)
                for b in anatomy.bones
            ),
            ovoids=tuple(
                replace(
                    o,
                    center=self.point(o.center),
                    a=o.a * s,
                    b=o.b * s,
                    angle=self.angle_of(o.angle),
                )
                for o in anatomy.ovoids
            ),
            tissue=tuple(
                replace(t, p0=self.point(t.p0), p1=self.point(t.p1), radius=t.radius * s)
                for t in anatomy.tissue
            ),
        )


# --- grids and fields ---------------------------------------------------------------------


def region(points: list[Point], pad: float, size: int) -> tuple[slice, slice] | None:
    """Pixel slices covering ``points`` (normalised) grown by ``pad``; ``None`` if off-image."""
    ys = [p[0] for p in points]
    xs = [p[1] for p in points]
    r0 = max(0, math.floor((min(ys) - pad) * size))
    r1 = min(size, math.ceil((max(ys) + pad) * size) + 1)
    c0 = max(0, math.floor((min(xs) - pad) * size))
    c1 = min(size, math.ceil((max(xs) + pad) * size) + 1)
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


def grid(size: int, where: tuple[slice, slice]) -> tuple[F64, F64]:
    """Normalised pixel-centre coordinates of the rows and columns of ``where``."""
    rows = (np.arange(where[0].start, where[0].stop, dtype=np.float64) + 0.5) / size
    cols = (np.arange(where[1].start, where[1].stop, dtype=np.float64) + 0.5) / size
    return rows[:, None], cols[None, :]


def box_blur(image: F64, radius: int, passes: int = 1) -> F64:
    """Separable box blur (``passes`` = 3 is close to a Gaussian), edges reflected."""
    out = np.asarray(image, dtype=np.float64)
    if radius < 1:
        return out
    k = 2 * radius + 1
    for _ in range(passes):
        for axis in (0, 1):
            pad = [(0, 0), (0, 0)]
            pad[axis] = (radius + 1, radius)
            padded = np.pad(out, pad, mode="reflect")
            summed = np.cumsum(padded, axis=axis)
            hi = [slice(None), slice(None)]
            lo = [slice(None), slice(None)]
            hi[axis] = slice(k, None)
            lo[axis] = slice(0, -k)
            out = (summed[tuple(hi)] - summed[tuple(lo)]) / k
    return out


def smooth_field(rng: np.random.Generator, size: int, cells: int) -> F64:
    """A smooth random field (mean 0, std about 1) with ``cells`` bumps per side."""
    coarse = rng.standard_normal((cells + 3, cells + 3))
    pos = np.linspace(1.0, cells + 1.0, size)
    index = np.arange(cells + 3, dtype=np.float64)
    rows = np.stack([np.interp(pos, index, coarse[:, j]) for j in range(cells + 3)], axis=1)
    field = np.stack([np.interp(pos, index, rows[i]) for i in range(size)], axis=0)
    field = box_blur(field, max(1, size // (4 * cells)), passes=2)
    std = float(field.std())
    return np.asarray((field - field.mean()) / (std if std > 0 else 1.0), dtype=np.float64)


def fine_texture(rng: np.random.Generator, size: int) -> F64:
    """Trabecular-looking texture: blurred white noise, mean 1, std about 0.1."""
    noise = box_blur(rng.standard_normal((size, size)), max(1, size // 400), passes=2)
    std = float(noise.std())
    return np.asarray(1.0 + 0.1 * noise / (std if std > 0 else 1.0), dtype=np.float64)


# --- projected shapes ---------------------------------------------------------------------


def _chord(radius: F64 | float, dist: F64) -> F64:
    inside = np.maximum(np.square(radius) - np.square(dist), 0.0)
    return np.asarray(2.0 * np.sqrt(inside), dtype=np.float64)


def _ends(t: F64) -> F64:
    """1 at the ends of a long bone, 0 along the shaft."""
    return np.asarray(np.exp(-np.square(t / 0.13)) + np.exp(-np.square((1.0 - t) / 0.13)))


def bone_attenuation(bone: Bone, y: F64, x: F64, texture: F64 | float = 1.0) -> F64:
    """Projected attenuation of ``bone`` at normalised points ``(y, x)`` (broadcastable)."""
    ay, ax = bone.p1[0] - bone.p0[0], bone.p1[1] - bone.p0[1]
    length2 = ay * ay + ax * ax
    dy, dx = y - bone.p0[0], x - bone.p0[1]
    raw = (dy * ay + dx * ax) / length2
    t = np.clip(raw, 0.0, 1.0)
    # blunt ends: beyond the end points the distance grows faster along the axis
    beyond = (raw - t) * math.sqrt(length2) * 1.8
    dist = np.hypot(np.hypot(dy - raw * ay, dx - raw * ax), beyond)
    ends = _ends(t)
    outer = bone.radius * (1.0 + bone.flare * ends)
    inner = outer * (1.0 - bone.cortex * (1.0 - 0.65 * ends))
    cortical = _chord(outer, dist) - _chord(inner, dist)
    medulla = (MU_MEDULLA + (MU_CANCELLOUS - MU_MEDULLA) * ends) * texture
    return np.asarray(bone.density * (MU_CORTEX * cortical + medulla * _chord(inner, dist)))


def ovoid_attenuation(ovoid: Ovoid, y: F64, x: F64, texture: F64 | float = 1.0) -> F64:
    """Projected attenuation of an ellipsoid with a cortical shell."""
    c, s = math.cos(ovoid.angle), math.sin(ovoid.angle)
    dy, dx = y - ovoid.center[0], x - ovoid.center[1]
    u = (c * dx - s * dy) / ovoid.a
    v = (s * dx + c * dy) / ovoid.b
    rho = np.sqrt(u * u + v * v)
    depth = min(ovoid.a, ovoid.b) * ovoid.depth
    inner = 1.0 - ovoid.cortex
    outer_chord = _chord(1.0, rho) * depth
    inner_chord = _chord(inner, rho) * depth
    shell = MU_CORTEX * 0.6 * (outer_chord - inner_chord)
    core = MU_CANCELLOUS * 0.85 * texture * inner_chord
    return np.asarray(ovoid.density * (shell + core))


def tissue_thickness(tissue: Tissue, y: F64, x: F64, wobble: F64 | float = 0.0) -> F64:
    """Projected soft-tissue thickness of a capsule (a cylinder with rounded ends)."""
    ay, ax = tissue.p1[0] - tissue.p0[0], tissue.p1[1] - tissue.p0[1]
    length2 = max(ay * ay + ax * ax, 1e-12)
    dy, dx = y - tissue.p0[0], x - tissue.p0[1]
    t = np.clip((dy * ay + dx * ax) / length2, 0.0, 1.0)
    dist = np.hypot(dy - t * ay, dx - t * ax)
    radius = tissue.radius * (1.0 + 0.08 * wobble)
    return np.asarray(tissue.density * _chord(radius, dist))


def capsule_mask(p0: Point, p1: Point, radius: float, y: F64, x: F64, soft: float) -> F64:
    """A filled capsule with soft edges (``soft`` in normalised units): metal, markers."""
    ay, ax = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(ay * ay + ax * ax, 1e-12)
    dy, dx = y - p0[0], x - p0[1]
    t = np.clip((dy * ay + dx * ax) / length2, 0.0, 1.0)
    dist = np.hypot(dy - t * ay, dx - t * ax)
    return np.asarray(np.clip((radius - dist) / soft + 0.5, 0.0, 1.0))
