"""Deterministic synthetic radiographs with fracture labels (tests, demo, training smoke runs).

No real labelled radiographs are available, so these phantoms are the only labelled data:
soft tissue around schematic bones (cortex brighter than the medullary cavity), optional
orthopaedic metal, fractures as thin irregular lucent lines with displaced fragments,
look-alikes (growth plates, nutrient canals), a lead side marker, heel effect, quantum noise,
detector blur, edge enhancement and collimation. They are not clinical images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from models import lesions
from models.anatomy import BUILDERS, jitter
from models.hardware import draw_hardware, draw_marker
from models.phantom import (
    F64,
    MU_TISSUE,
    Anatomy,
    Bone,
    Similarity,
    bone_attenuation,
    box_blur,
    fine_texture,
    grid,
    ovoid_attenuation,
    region,
    smooth_field,
    tissue_thickness,
)
from models.synthetic_case import BODY_PARTS, SYNTHETIC_BITS, Box, SyntheticCase
from models.synthetic_dicom import to_dicom

logger = logging.getLogger(__name__)

__all__ = [
    "BODY_PARTS",
    "SYNTHETIC_BITS",
    "SyntheticCase",
    "generate_case",
    "generate_dataset",
    "to_dicom",
]

_MAX = 2**SYNTHETIC_BITS - 1


def _field(rng: np.random.Generator, size: int) -> Box:
    """The collimated field: each side closed in by 3-13 % with probability 0.7."""
    m = [float(rng.uniform(0.03, 0.13)) if rng.random() < 0.7 else 0.0 for _ in range(4)]
    return (
        round(m[0] * size),
        round(m[1] * size),
        size - round(m[2] * size),
        size - round(m[3] * size),
    )


def _inside(point: tuple[float, float], field: Box, size: int, margin: float) -> bool:
    y, x = point[0] * size, point[1] * size
    pad = margin * size
    return field[0] + pad <= y <= field[2] - pad and field[1] + pad <= x <= field[3] - pad


def _plan_fractures(
    rng: np.random.Generator, bones: tuple[Bone, ...], count: int, field: Box, size: int
) -> list[lesions.Lucency]:
    """``count`` fractures on fracturable bones, centred inside the field."""
    candidates = [i for i, b in enumerate(bones) if b.fracturable]
    weights = np.array([math.dist(bones[i].p0, bones[i].p1) for i in candidates])
    out: list[lesions.Lucency] = []
    for attempt in range(400):
        if len(out) == count:
            break
        index = int(rng.choice(candidates, p=weights / weights.sum()))
        lucency = lesions.random_fracture(rng, index, bones[index])
        if not _inside(lesions.centre(lucency, bones[index]), field, size, 0.04):
            continue
        apart = 0.25 if attempt < 200 else 0.1
        if any(o.bone == index and abs(o.t - lucency.t) < apart for o in out):
            continue
        if any(o.bone == index and o.displaced for o in out):
            lucency = replace(lucency, shift=(0.0, 0.0), rotation=0.0)  # one moved fragment
        out.append(lucency)
    if not out:  # pragma: no cover - every layout has fracturable bones in the field
        raise RuntimeError("could not place a fracture inside the field")
    return out


def _attenuation(
    anatomy: Anatomy,
    size: int,
    rng: np.random.Generator,
    lines: list[lesions.Lucency],
) -> F64:
    """Projected attenuation of tissue and bone, with the lucent lines applied."""
    texture = fine_texture(rng, size)
    wobble = smooth_field(rng, size, 5)
    tissue = np.zeros((size, size), dtype=np.float64)
    for part in anatomy.tissue:
        pad = part.radius * 1.1
        where = region([part.p0, part.p1], pad, size)
        if where is not None:
            y, x = grid(size, where)
            tissue[where] = np.maximum(tissue[where], tissue_thickness(part, y, x, wobble[where]))
    image = MU_TISSUE * tissue * (1.0 + 0.03 * smooth_field(rng, size, 6))
    for lucency in lines:  # soft-tissue swelling around displaced fractures
        if not lucency.displaced:
            continue
        bone = anatomy.bones[lucency.bone]
        cy, cx = lesions.centre(lucency, bone)
        reach = 3.0 * bone.radius
        where = region([(cy, cx)], 2 * reach, size)
        if where is not None:
            y, x = grid(size, where)
            bump = np.exp(-(np.square(y - cy) + np.square(x - cx)) / reach**2)
            image[where] += MU_TISSUE * 0.5 * bone.radius * bump * (tissue[where] > 0)
    for index, bone in enumerate(anatomy.bones):
        mine = [(lu, bone) for lu in lines if lu.bone == index]
        moved = max(
            (
                math.hypot(*lu.shift) + abs(lu.rotation) * math.dist(bone.p0, bone.p1)
                for lu, _ in mine
            ),
            default=0.0,
        )
        where = region([bone.p0, bone.p1], bone.radius * (1.0 + bone.flare) + moved, size)
        if where is None:
            continue
        y, x = grid(size, where)
        sy, sx = lesions.fragment_coordinates(mine, y, x)
        value = bone_attenuation(bone, sy, sx, texture[where])
        image[where] += value * lesions.transmission(mine, y, x)
    for ovoid in anatomy.ovoids:
        reach = max(ovoid.a, ovoid.b)
        where = region([ovoid.center], reach, size)
        if where is not None:
            y, x = grid(size, where)
            image[where] += ovoid_attenuation(ovoid, y, x, texture[where])
    return image


def _expose(attenuation: F64, metal: F64, field: Box, rng: np.random.Generator, white: bool) -> F64:
    """Quantum noise, heel effect, detector blur, edge enhancement, display scaling."""
    size = attenuation.shape[0]
    inner = attenuation[field[0] : field[2], field[1] : field[3]]
    photons = float(rng.uniform(250, 900)) * math.exp(
        max(0.0, float(np.percentile(inner, 90)) - 2.5)
    )
    heel_dir = float(rng.uniform(0, 2 * math.pi))
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    heel = 1.0 + float(rng.uniform(0.08, 0.2)) * (np.cos(heel_dir) * y + np.sin(heel_dir) * x)
    expected = photons * heel * np.exp(-attenuation)
    # Poisson-like quantum noise, drawn independently of the content: the same seed gives the
    # same noise field whatever the fracture or metal labels are.
    counts = expected + np.sqrt(expected) * rng.standard_normal((size, size))
    measured = -np.log(np.maximum(counts, 0.5) / photons)
    measured = 0.5 * measured + 0.5 * box_blur(measured, max(1, size // 512))
    background = box_blur(measured, max(2, size // 40), passes=3)
    processed = measured + float(rng.uniform(0.3, 0.8)) * (measured - background)
    window = processed[field[0] : field[2], field[1] : field[3]]
    anatomy_only = window[metal[field[0] : field[2], field[1] : field[3]] <= 0.0]
    low = float(np.percentile(window, 0.3))
    high = float(np.percentile(anatomy_only if anatomy_only.size else window, 99.8))
    stored = 60.0 + (processed - low) / max(high - low, 1e-6) * (_MAX - 260.0)
    inside = np.zeros((size, size), dtype=np.float64)
    inside[field[0] : field[2], field[1] : field[3]] = 1.0
    inside = box_blur(inside, max(1, size // 256), passes=2)
    shutter = (
        float(rng.uniform(_MAX - 250, _MAX - 40)) if white else float(rng.uniform(0, 60))
    ) + rng.normal(0.0, 6.0, (size, size))
    return np.asarray(np.clip(inside * stored + (1.0 - inside) * shutter, 0, _MAX))


def generate_case(
    seed: int,
    size: int = 512,
    *,
    fracture: bool | None = None,
    body_part: str | None = None,
    hardware: bool | None = None,
) -> SyntheticCase:
    """One synthetic radiograph; the same arguments always give the same pixels.

    Unset labels are drawn at random: fracture with probability 0.5 (then two or more
    fractures with probability 0.25), hardware 0.15, body part uniformly from ``BODY_PARTS``.
    """
    if size < 64:
        raise ValueError("size must be at least 64")
    if body_part is not None and body_part not in BODY_PARTS:
        raise ValueError(f"unknown body part {body_part!r}; expected one of {BODY_PARTS}")
    streams = np.random.SeedSequence([seed, 0x7A7D]).spawn(7)
    labels, shape, breaks, metal, noise, frame, mimic = (np.random.default_rng(s) for s in streams)
    drawn_part = str(labels.choice(BODY_PARTS))
    drawn_fracture = bool(labels.random() < 0.5)
    drawn_hardware = bool(labels.random() < 0.15)
    count = 1 + int(labels.random() < 0.25) + int(labels.random() < 0.2)
    laterality = str(labels.choice(["L", "R"]))
    view = str(labels.choice(["AP", "PA"]))
    paediatric = bool(labels.random() < 0.2)
    part = body_part or drawn_part
    is_fracture = drawn_fracture if fracture is None else fracture
    has_hardware = drawn_hardware if hardware is None else hardware

    pose = Similarity(
        angle=float(shape.normal(0.0, 0.12)),
        scale=float(shape.uniform(0.88, 1.08)),
        shift=(float(shape.normal(0.0, 0.025)), float(shape.normal(0.0, 0.025))),
        flip=laterality == "L",
    )
    anatomy = pose.anatomy(jitter(BUILDERS[part](shape), shape, 0.006))
    field = _field(frame, size)
    fractures = _plan_fractures(breaks, anatomy.bones, count, field, size) if is_fracture else []
    lookalikes = lesions.random_lookalikes(mimic, anatomy.bones, paediatric=paediatric)
    attenuation = _attenuation(anatomy, size, shape, fractures + lookalikes)
    corner = (
        (field[0] + 0.03 * size) / size,
        (field[3] - 0.09 * size) / size if laterality == "R" else (field[1] + 0.04 * size) / size,
    )
    lead = draw_marker(laterality, corner, 0.05, size)
    if has_hardware:
        fracturable = [b for b in anatomy.bones if b.fracturable]
        host = max(fracturable, key=lambda b: math.dist(b.p0, b.p1) * b.radius)
        lead += draw_hardware(metal, host, size)
    white = bool(frame.random() < 0.7)
    exposed = _expose(attenuation + lead, lead, field, noise, white)
    image = np.rint(exposed).astype(np.uint16)
    image.setflags(write=False)
    boxes = tuple(_clip_box(lesions.box(f, anatomy.bones[f.bone], size), field) for f in fractures)
    logger.debug("synthetic case seed=%d part=%s fractures=%d", seed, part, len(boxes))
    return SyntheticCase(
        seed=seed,
        image=image,
        fracture=bool(boxes),
        fracture_count=min(len(boxes), 2),
        body_part=part,
        hardware=has_hardware,
        boxes=boxes,
        field=field,
        laterality=laterality,
        view=view,
        paediatric=paediatric,
    )


def _clip_box(box: Box, field: Box) -> Box:
    return (
        max(box[0], field[0]),
        max(box[1], field[1]),
        min(box[2], field[2]),
        min(box[3], field[3]),
    )


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of ``generate_dataset(…, seed)``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


def generate_dataset(
    n: int,
    seed: int,
    *,
    size: int = 512,
    balanced: bool = True,
    body_parts: tuple[str, ...] | None = None,
) -> Iterator[SyntheticCase]:
    """``n`` cases, lazily. ``balanced``: fracture and normal alternate (even = fracture)."""
    parts = body_parts or BODY_PARTS
    for index in range(n):
        yield generate_case(
            case_seed(seed, index),
            size,
            fracture=(index % 2 == 0) if balanced else None,
            body_part=parts[index % len(parts)] if body_parts else None,
        )
