"""The code under fuzzing, with the exceptions it is allowed to raise (no atheris here).

Each ``*_one(data)`` returns normally when the code under test gave a result or failed the
way it is meant to (an allowed exception), and raises anything else: that is a finding. Used
by the atheris harnesses (``fuzz_header.py``, ``fuzz_pixels.py``) and by the regression tests
that replay the corpus and the crash reproducers (``tests/unit/test_fuzz_corpus.py``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.scp import HeaderError, read_header
from models.errors import NotAnalysable
from models.preprocess import PreprocessParams, prepare

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUR_PACKAGES = frozenset({"config", "dicom_node", "models", "retrain", "storage", "xrayd"})
CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"

#: what every seed's header says, and so what the harness's C-STORE request says
SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
SOP_INSTANCE_UID = "1.2.826.0.1.3680043.8.498.27182818284590452353602874713526624977"
STUDY_UID = "1.2.826.0.1.3680043.8.498.31415926535897932384626433832795028841"
SERIES_UID = "1.2.826.0.1.3680043.8.498.14142135623730950488016887242096980785"

#: what ``xrayd.pipeline.analyse.Analyser._read`` must not turn into "instance not analysed": a
#: file that needs gigabytes, or nests too deep, has to be refused before that (findings)
NOT_CONTAINED: tuple[type[BaseException], ...] = (MemoryError, RecursionError)

#: the default bundle's preprocessing (models/bundles/xrayd-fracatlas-effnetlite0), smaller:
#: input_size and min_size only set sizes, and small ones let small seeds reach every step
PIXEL_PARAMS = (
    PreprocessParams(input_size=48, min_size=16, stretch_after_voi=True),
    PreprocessParams(input_size=48, min_size=16, stretch_after_voi=False, crop_borders=False),
)


class Finding(AssertionError):
    """The code under test answered, but with something it must never produce."""


def _known() -> tuple[type[BaseException], ...]:
    """Exception types named in ``FUZZ_ALLOW`` (e.g. ``zlib.error,KeyError``): a development
    aid to fuzz on past a finding already reported, never set by the tests or ``make fuzz``."""
    import builtins
    import importlib

    found: list[type[BaseException]] = []
    for name in filter(None, (n.strip() for n in os.environ.get("FUZZ_ALLOW", "").split(","))):
        module, _, attr = name.rpartition(".")
        kind = getattr(importlib.import_module(module) if module else builtins, attr)
        found.append(kind)
    return tuple(found)


KNOWN = _known()


def quiet() -> None:
    """pydicom warns about every odd value a mutated file has; the fuzzer does not care."""
    warnings.simplefilter("ignore")


def header_one(data: bytes) -> None:
    """``read_header`` must return a 4-tuple of strings or raise :class:`HeaderError`."""
    try:
        result = read_header(data, SOP_CLASS_UID, SOP_INSTANCE_UID)
    except HeaderError as exc:
        if not isinstance(exc.status, int) or not exc.reason:
            raise Finding(f"HeaderError without a status or reason: {exc!r}") from exc
        return
    except KNOWN:
        return
    study, series, modality, body_part = result
    if not all(isinstance(v, str) for v in (study, series, modality)):
        raise Finding(f"read_header returned non-strings: {result!r}")
    if body_part is not None and not isinstance(body_part, str):
        raise Finding(f"read_header returned a non-string body part: {body_part!r}")
    if len(modality) > 16 or (body_part is not None and len(body_part) > 64):
        raise Finding("read_header returned an over-long modality or body part")


def pixels_one(data: bytes, params: PreprocessParams | None = None) -> None:
    """A stored file's bytes -> model input, as ``xrayd.pipeline.analyse.Analyser._read`` does it.

    Allowed: a file that cannot be read (:func:`read_stored`); :class:`NotAnalysable` from
    ``prepare`` (except one caused by a ``MemoryError``: an image that big must be refused
    before it is decoded). A prepared image must be a finite [0, 1] square of the input size.
    """
    chosen = params or PIXEL_PARAMS[data[-1] & 1 if data else 0]
    try:
        _pixels(data, chosen)
    except KNOWN:
        return


def _dcmread(data: bytes) -> Dataset:
    return dcmread(BytesIO(data))


def _reader() -> Callable[[bytes], Dataset]:
    """``models.reading.read_image`` (the header's image size checked before the pixel data
    is read) where the tree has it, else plain ``dcmread``."""
    try:
        from models.limits import DEFAULT_LIMITS
        from models.reading import read_image
    except ImportError:
        return _dcmread
    return lambda data: read_image(data, DEFAULT_LIMITS)


_READ = _reader()


def read_stored(data: bytes) -> Dataset | None:
    """Read a stored file as ``xrayd.pipeline.analyse.Analyser._read`` must: read it, then convert
    every element at once, so that a corrupt one fails here - any exception: that instance is
    "not analysed" - and not in the middle of ``prepare`` or a result builder (finding 2 in
    docs/fuzzing.md). ``None``: not read."""
    try:
        ds = _READ(data)
        ds.walk(lambda _ds, _element: None)
    except NOT_CONTAINED:
        raise
    except Exception as exc:
        if raised_by_our_code(exc):
            raise
        return None
    return ds


def raised_by_our_code(exc: BaseException) -> bool:
    """A built-in or third-party exception (IndexError, ValueError...) raised in a frame of
    the project's packages: a bug there, not a file pydicom could not read. The project's own
    exception types (NotAnalysable, CorruptDeflate...) are raised on purpose."""
    if type(exc).__module__.partition(".")[0] in OUR_PACKAGES:
        return False
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    try:
        relative = Path(last.tb_frame.f_code.co_filename).resolve().relative_to(ROOT)
    except ValueError:
        return False
    return relative.parts[0] in OUR_PACKAGES


def out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or a decoder plugin's "Out of free memory", behind ``exc``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError) or "out of free memory" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _pixels(data: bytes, chosen: PreprocessParams) -> None:
    ds = read_stored(data)
    if ds is None:
        return
    try:
        prepared = prepare(ds, chosen)
    except NotAnalysable as exc:
        if out_of_memory(exc):
            raise Finding("decoding ran out of memory instead of refusing the image") from exc
        return
    pixels = prepared.pixels
    size = chosen.input_size
    if pixels.shape != (size, size) or pixels.dtype != np.float32:
        raise Finding(f"model input of shape {pixels.shape} {pixels.dtype}")
    if not np.isfinite(pixels).all():
        raise Finding("model input has NaN or infinite values")
    if pixels.size and (float(pixels.min()) < 0.0 or float(pixels.max()) > 1.0):
        raise Finding("model input outside [0, 1]")
    geometry = prepared.geometry
    if not math.isfinite(geometry.scale) or geometry.scale <= 0:
        raise Finding(f"geometry scale {geometry.scale!r}")
    if prepared.display.shape != (geometry.source_rows, geometry.source_cols):
        raise Finding("display image does not match the source geometry")


def corpus_files(kind: str) -> list[Path]:
    """The seed corpus of ``kind`` ("header" or "pixels") and its crash reproducers."""
    seeds = sorted((CORPUS / kind).glob("*")) if (CORPUS / kind).is_dir() else []
    crashes = sorted((CRASHES / kind).glob("*")) if (CRASHES / kind).is_dir() else []
    return [p for p in seeds + crashes if p.is_file() and not p.name.startswith(".")]
