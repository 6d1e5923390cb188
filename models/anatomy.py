"""Plausible bone layouts per body part, in normalised coordinates (distal end up for the hand).

Deliberately schematic: long bones are tubes with flared ends, carpals and heads are ovoids,
flat bones are thin ovoids. Random variation comes from the ``rng`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from models.phantom import Anatomy, Bone, Ovoid, Point, Tissue

Builder = Callable[[np.random.Generator], Anatomy]


def _along(p: Point, angle: float, length: float) -> Point:
    """The point ``length`` away from ``p`` in direction ``angle`` (0 = up, positive = right)."""
    return (p[0] - length * math.cos(angle), p[1] + length * math.sin(angle))


def _digit(
    base: Point, angle: float, lengths: list[float], radii: list[float], gap: float
) -> tuple[list[Bone], Point]:
    """A chain of bones (metacarpal + phalanges) from ``base`` in direction ``angle``."""
    bones: list[Bone] = []
    p = base
    for i, (length, radius) in enumerate(zip(lengths, radii, strict=True)):
        q = _along(p, angle, length)
        tuft = 0.6 if i == len(lengths) - 1 and i > 0 else 0.35
        bones.append(Bone(p, q, radius, flare=tuft, cortex=0.38))
        p = _along(q, angle, gap)
        angle *= 1.04
    return bones, p


def finger(rng: np.random.Generator) -> Anatomy:
    bones: list[Bone] = []
    tissue: list[Tissue] = []
    xs = [0.5] + ([0.5 + 0.34 * float(rng.choice([-1, 1]))] if rng.random() < 0.6 else [])
    for k, x in enumerate(xs):
        angle = float(rng.normal(0.0, 0.04))
        lengths = [0.42, 0.28, 0.19, 0.13] if k == 0 else [0.42, 0.25, 0.17, 0.12]
        chain, tip = _digit((1.2, x), angle, lengths, [0.05, 0.046, 0.04, 0.034], 0.022)
        bones += chain
        tissue.append(Tissue((1.25, x), _along(tip, angle, -0.02), 0.095))
    return Anatomy(tuple(bones), (), tuple(tissue))


def hand(rng: np.random.Generator) -> Anatomy:
    bones: list[Bone] = []
    tissue: list[Tissue] = [Tissue((0.95, 0.47), (0.5, 0.47), 0.2)]
    spread = float(rng.uniform(0.8, 1.2))
    rays = [  # base x, angle, metacarpal and phalanx lengths (index .. little)
        (0.40, -0.12, [0.26, 0.16, 0.10, 0.07]),
        (0.46, -0.03, [0.25, 0.17, 0.11, 0.075]),
        (0.52, 0.06, [0.24, 0.16, 0.10, 0.07]),
        (0.57, 0.15, [0.21, 0.13, 0.08, 0.065]),
    ]
    for x, angle, lengths in rays:
        chain, tip = _digit((0.72, x), angle * spread, lengths, [0.02, 0.018, 0.016, 0.014], 0.012)
        bones += chain
        tissue.append(Tissue(chain[1].p0, _along(tip, angle * spread, -0.01), 0.038))
    thumb, tip = _digit((0.72, 0.36), -0.75, [0.16, 0.12, 0.085], [0.022, 0.02, 0.017], 0.012)
    bones += thumb
    tissue.append(Tissue(thumb[0].p0, tip, 0.05))
    carpals = _carpals((0.77, 0.47), 0.032)
    bones += [
        Bone((1.15, 0.42), (0.85, 0.42), 0.045, flare=0.45),
        Bone((1.15, 0.56), (0.86, 0.55), 0.028, flare=0.35),
    ]
    tissue.append(Tissue((1.2, 0.49), (0.85, 0.48), 0.12))
    return Anatomy(tuple(bones), carpals, tuple(tissue))


def _carpals(center: Point, r: float) -> tuple[Ovoid, ...]:
    cy, cx = center
    spots = [  # proximal row, then distal row: (dy, dx, a, b, angle)
        (0.9, -1.6, 1.3, 0.8, 0.6),
        (1.0, -0.1, 1.0, 0.9, 0.0),
        (0.8, 1.3, 0.9, 0.8, -0.3),
        (0.5, 2.0, 0.6, 0.6, 0.0),
        (-0.8, -1.9, 0.9, 0.8, 0.4),
        (-0.9, -0.8, 0.8, 0.7, 0.0),
        (-0.8, 0.3, 0.8, 1.3, 0.0),
        (-0.7, 1.5, 0.9, 1.0, -0.2),
    ]
    return tuple(
        Ovoid((cy + dy * r, cx + dx * r), a * r, b * r, angle, cortex=0.22)
        for dy, dx, a, b, angle in spots
    )


def wrist(rng: np.random.Generator) -> Anatomy:
    bones = [
        Bone((1.25, 0.40), (0.64, 0.41), 0.085, flare=0.45),  # radius
        Bone((1.25, 0.64), (0.68, 0.63), 0.05, flare=0.35),  # ulna
    ]
    for k, x in enumerate([0.30, 0.40, 0.50, 0.60, 0.68]):
        angle = (k - 2) * 0.08
        bones.append(Bone((0.33, x), _along((0.33, x), angle, 0.55), 0.035, flare=0.4))
    tissue = [Tissue((1.3, 0.5), (-0.3, 0.5), float(rng.uniform(0.3, 0.34)))]
    return Anatomy(tuple(bones), _carpals((0.48, 0.5), 0.06), tuple(tissue))


def forearm(rng: np.random.Generator) -> Anatomy:
    bow = float(rng.uniform(-0.02, 0.02))
    bones = [
        Bone((0.03, 0.47), (0.97, 0.38 + bow), 0.04, flare=0.55),  # radius, wrist at the bottom
        Bone((0.01, 0.57), (0.95, 0.58 + bow), 0.036, flare=0.45),  # ulna
    ]
    tissue = [Tissue((-0.1, 0.52), (0.5, 0.5), 0.19), Tissue((0.5, 0.5), (1.1, 0.48), 0.15)]
    return Anatomy(tuple(bones), (), tuple(tissue))


def elbow(rng: np.random.Generator) -> Anatomy:
    bones = [
        Bone((-0.3, 0.5), (0.45, 0.5), 0.075, flare=0.7),  # humerus
        Bone((1.3, 0.38), (0.6, 0.40), 0.05, flare=0.45),  # radius
        Bone((1.3, 0.60), (0.55, 0.57), 0.055, flare=0.6),  # ulna
    ]
    ovoids = (
        Ovoid((0.5, 0.38), 0.07, 0.055, 0.2),
        Ovoid((0.5, 0.61), 0.075, 0.06, -0.2),
        Ovoid((0.46, 0.58), 0.06, 0.09, 0.0, depth=0.6),  # olecranon overlap
    )
    tissue = [Tissue((-0.4, 0.5), (1.4, 0.5), float(rng.uniform(0.27, 0.31)))]
    return Anatomy(tuple(bones), ovoids, tuple(tissue))


def humerus(rng: np.random.Generator) -> Anatomy:
    bones = [Bone((0.12, 0.5), (0.88, 0.5), 0.055, flare=0.55)]
    ovoids = (
        Ovoid((0.06, 0.46), 0.11, 0.1),
        Ovoid((0.93, 0.43), 0.06, 0.05),
        Ovoid((0.93, 0.57), 0.065, 0.05),
    )
    tissue = [Tissue((-0.2, 0.48), (1.2, 0.5), float(rng.uniform(0.22, 0.27)))]
    return Anatomy(tuple(bones), ovoids, tuple(tissue))


def shoulder(rng: np.random.Generator) -> Anatomy:
    bones = [
        Bone((0.5, 0.64), (1.35, 0.72), 0.07, flare=0.3),  # humerus
        Bone((0.22, -0.05), (0.25, 0.63), 0.032, flare=0.45),  # clavicle
        Bone((0.28, 0.33), (0.31, 0.66), 0.03, flare=0.3, fracturable=False),  # acromion
    ]
    for k in range(4):  # ribs, faint
        y = 0.35 + 0.16 * k
        bones.append(
            Bone((y, -0.05), (y + 0.12, 0.3), 0.016, cortex=0.5, density=0.6, fracturable=False)
        )
    ovoids = (
        Ovoid((0.47, 0.63), 0.14, 0.13),  # humeral head
        Ovoid((0.62, 0.33), 0.24, 0.12, 1.1, depth=0.22),  # scapula
        Ovoid((0.47, 0.47), 0.045, 0.11, 0.0, depth=0.7),  # glenoid
    )
    tissue = [Tissue((-0.3, 0.55), (1.4, 0.6), float(rng.uniform(0.5, 0.58)))]
    return Anatomy(tuple(bones), ovoids, tuple(tissue))


def leg(rng: np.random.Generator) -> Anatomy:
    bones = [
        Bone((-0.1, 0.44), (1.08, 0.43), 0.07, flare=0.35),  # tibia
        Bone((-0.05, 0.66), (1.06, 0.63), 0.028, flare=0.6),  # fibula
    ]
    tissue = [
        Tissue((-0.2, 0.5), (0.5, 0.5), float(rng.uniform(0.3, 0.35))),
        Tissue((0.4, 0.5), (1.2, 0.48), 0.26),
    ]
    return Anatomy(tuple(bones), (), tuple(tissue))


def hip(rng: np.random.Generator) -> Anatomy:
    bones = [
        Bone((0.37, 0.44), (0.53, 0.62), 0.055, flare=0.25),  # femoral neck
        Bone((0.48, 0.66), (1.35, 0.6), 0.08, flare=0.2),  # femoral shaft
        Bone((0.50, 0.34), (0.60, -0.05), 0.032, flare=0.1),  # superior pubic ramus
        Bone((0.80, 0.34), (0.76, -0.05), 0.03, flare=0.1),  # inferior ramus
        Bone((0.50, 0.33), (0.82, 0.35), 0.045, flare=0.1, fracturable=False),  # ischium
    ]
    ovoids = (
        Ovoid((0.34, 0.41), 0.1, 0.1),  # femoral head
        Ovoid((0.32, 0.38), 0.15, 0.13, 0.0, depth=0.3),  # acetabulum
        Ovoid((0.05, 0.3), 0.32, 0.2, 0.5, depth=0.22),  # iliac wing
        Ovoid((0.47, 0.71), 0.09, 0.07, 0.3, depth=0.8),  # greater trochanter
        Ovoid((0.64, 0.55), 0.035, 0.03),  # lesser trochanter
    )
    tissue = [Tissue((-0.4, 0.5), (1.4, 0.5), float(rng.uniform(0.62, 0.7)), density=0.75)]
    return Anatomy(tuple(bones), ovoids, tuple(tissue))


def other(rng: np.random.Generator) -> Anatomy:
    """An ankle-like region: the distal tibia and fibula over talus and calcaneus."""
    bones = [
        Bone((-0.25, 0.42), (0.47, 0.45), 0.09, flare=0.4),  # tibia
        Bone((-0.25, 0.70), (0.56, 0.68), 0.033, flare=0.7),  # fibula
        Bone((0.78, 0.56), (1.25, 0.62), 0.03, flare=0.4),  # metatarsals
        Bone((0.80, 0.70), (1.25, 0.80), 0.028, flare=0.4),
    ]
    ovoids = (Ovoid((0.6, 0.49), 0.15, 0.1), Ovoid((0.8, 0.45), 0.19, 0.11, 0.2))
    tissue = [
        Tissue((-0.4, 0.52), (0.75, 0.52), float(rng.uniform(0.28, 0.32))),
        Tissue((0.8, 0.3), (0.8, 0.75), 0.18),
    ]
    return Anatomy(tuple(bones), ovoids, tuple(tissue))


BUILDERS: dict[str, Builder] = {
    "elbow": elbow,
    "finger": finger,
    "forearm": forearm,
    "hand": hand,
    "humerus": humerus,
    "shoulder": shoulder,
    "wrist": wrist,
    "leg": leg,
    "hip": hip,
    "other": other,
}


def jitter(anatomy: Anatomy, rng: np.random.Generator, amount: float) -> Anatomy:
    """Move every point and radius a little (``amount`` in normalised units / fraction)."""

    def move(p: Point) -> Point:
        dy, dx = rng.normal(0.0, amount, 2)
        return (p[0] + float(dy), p[1] + float(dx))

    def grow() -> float:
        return float(np.clip(rng.normal(1.0, 2 * amount), 0.8, 1.2))

    return Anatomy(
        bones=tuple(
            replace(b, p0=move(b.p0), p1=move(b.p1), radius=b.radius * grow())
            for b in anatomy.bones
        ),
        ovoids=tuple(
            replace(o, center=move(o.center), a=o.a * grow(), b=o.b * grow())
            for o in anatomy.ovoids
        ),
        tissue=tuple(replace(t, radius=t.radius * grow()) for t in anatomy.tissue),
    )
