"""A ready classifier from a bundle directory and the ``[model]`` settings.

``runtime="auto"`` runs :func:`models.runtime_choice.choose_runtime` on a few synthetic
phantoms prepared exactly like received images: the fastest runtime whose probabilities stay
within 1e-3 of torch eager is used, eager otherwise (and always on a GPU). Naming a runtime
uses it if it can be built here, and falls back to eager with a warning if not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.bundle import ExpectedBundle, LoadedModel, default_bundle_path, load_bundle
from models.inference import Classifier
from models.preprocess import prepare
from models.runtime_cache import RuntimeChoiceCache, host_fingerprint
from models.runtime_choice import RuntimeChoice, choose_runtime
from models.runtimes import BackboneRuntime, RuntimeUnavailable, build_runtime
from models.synthetic import generate_case, to_dicom

logger = logging.getLogger(__name__)

__all__ = ["ReadyClassifier", "load_classifier", "runtime_sample"]


@dataclass(frozen=True, eq=False)
class ReadyClassifier:
    classifier: Classifier
    model: LoadedModel
    runtime: str
    choice: RuntimeChoice | None


def runtime_sample(model: LoadedModel, n: int = 4) -> np.ndarray:
    """``n`` synthetic phantoms through the production preprocessing, (n, 1, S, S) float32."""
    params = model.metadata.preprocess
    size = max(64, 2 * params.input_size)
    images = [
        prepare(to_dicom(generate_case(1000 + i, size, fracture=i % 2 == 0)), params).pixels
        for i in range(n)
    ]
    return np.stack(images)[:, None].astype(np.float32)


def _rebuild(name: str, model: LoadedModel, threads: int) -> BackboneRuntime | None:
    """The runtime ``name`` chosen before, built again; None if it cannot be built here now
    (or is unknown): then it is chosen again."""
    try:
        return build_runtime(
            name, model.network, threads=threads, input_size=model.metadata.input_size
        )
    except (RuntimeUnavailable, ValueError) as exc:
        logger.info("runtime %s chosen before cannot be built now (%s); choosing again", name, exc)
        return None


def load_classifier(
    bundle: Path | None = None,
    *,
    device: str = "auto",
    runtime: str = "auto",
    threads: int = 2,
    batch_size: int = 8,
    expected: ExpectedBundle | None = None,
    cache: RuntimeChoiceCache | None = None,
) -> ReadyClassifier:
    """Load ``bundle`` (default: the default bundle) and put the chosen runtime behind it.

    ``expected``: what the model registry recorded about the bundle (see
    :func:`models.bundle.load_bundle`). Sets torch's CPU thread count to ``threads``
    (process-wide: this is the process's model). Raises :class:`models.errors.BundleError` for
    a bad bundle (:class:`models.bundle.BundleMismatchError` for one the registry does not
    know as such). ``cache``: with ``runtime="auto"``, reuse the runtime chosen before for
    these weights on this host (:mod:`models.runtime_cache`) instead of measuring again.
    """
    model = load_bundle(bundle or default_bundle_path(), device=device, expected=expected)
    if model.device.type == "cpu":
        torch.set_num_threads(threads)
    choice: RuntimeChoice | None = None
    chosen: BackboneRuntime | None = None
    if model.device.type != "cpu" or runtime == "eager":
        chosen = None
    elif runtime == "auto":
        fingerprint = host_fingerprint(threads) if cache is not None else ""
        remembered = cache.get(model.info.sha256, fingerprint) if cache is not None else None
        chosen = _rebuild(remembered, model, threads) if remembered is not None else None
        if chosen is not None:
            logger.info("runtime %s: chosen before for this model on this host", remembered)
        else:
            choice = choose_runtime(model.network, runtime_sample(model), threads=threads)
            chosen = choice.runtime
            if cache is not None:
                cache.put(model.info.sha256, fingerprint, chosen.name)
            for r in choice.records:
                logger.debug(
                    "runtime %s: available %s, max |dp| %s, %s ms/image%s",
                    r.name,
                    r.available,
                    "n/a" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}",
                    "n/a" if r.ms_per_image is None else f"{r.ms_per_image:.1f}",
                    f" ({r.reason})" if r.reason else "",
                )
    else:
        try:
            chosen = build_runtime(
                runtime, model.network, threads=threads, input_size=model.metadata.input_size
            )
        except RuntimeUnavailable as exc:
            logger.warning("runtime %s unavailable (%s); using torch eager", runtime, exc)
    classifier = Classifier(model, batch_size=batch_size, runtime=chosen)
    name = chosen.name if chosen is not None else "eager"
    logger.info(
        "model %s %s on %s, runtime %s", model.info.name, model.info.version, model.device, name
    )
    return ReadyClassifier(classifier, model, name, choice)
