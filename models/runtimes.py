"""Backbone runtimes: torch eager and the faster CPU engines a user would pick.

Only the backbone (:meth:`models.network.MultiTaskNet.feature_map`) is expensive; the heads and
Grad-CAM stay in torch (:mod:`models.inference`). A runtime maps a float32 batch (N, 1, S, S)
to the feature map (N, C, h, w) as a float32 torch tensor:

``eager``
    the network as it is, under ``torch.no_grad`` (on the model's device, CUDA included);
``channels_last``
    a copy of the backbone in channels-last memory format, under ``torch.inference_mode``;
``onnxruntime``
    the backbone exported to ONNX with a dynamic batch axis, run by ONNX Runtime's CPU
    provider with ``threads`` intra-op threads;
``openvino``
    the same ONNX model (or, without one, the backbone converted by ``openvino.convert_model``)
    compiled for OpenVINO's CPU device with ``threads`` threads and fp32 precision.

The torch runtimes use torch's process-wide thread count (``torch.set_num_threads``), which
library code leaves alone; the daemon sets it once at start-up. ONNX Runtime and OpenVINO get
``threads`` explicitly. A runtime whose import, export or compilation fails raises
:class:`RuntimeUnavailable`; :func:`models.runtime_choice.choose_runtime` logs it and falls
back to torch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from models.errors import ModelsError
from models.network import MultiTaskNet

logger = logging.getLogger(__name__)

__all__ = [
    "RUNTIMES",
    "BackboneRuntime",
    "ChannelsLastRuntime",
    "EagerRuntime",
    "OnnxRuntime",
    "OpenVinoRuntime",
    "RuntimeUnavailable",
    "as_batch",
    "build_runtime",
    "export_onnx",
]

#: The runtimes :func:`build_runtime` knows, fastest-first as usually measured on a CPU.
RUNTIMES: tuple[str, ...] = ("openvino", "onnxruntime", "channels_last", "eager")

_INPUT = "pixels"
_OUTPUT = "features"


class RuntimeUnavailable(ModelsError):
    """An optional runtime cannot be used here (its import, export or compilation failed)."""


@runtime_checkable
class BackboneRuntime(Protocol):
    """Computes the backbone's feature map: (N, 1, S, S) float32 -> (N, C, h, w) float32."""

    name: str

    def __call__(self, pixels: npt.NDArray[np.float32]) -> Tensor: ...


def as_batch(pixels: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``pixels`` as a C-contiguous float32 (N, 1, S, S) array; ``ValueError`` otherwise."""
    batch = np.ascontiguousarray(pixels, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1] != 1 or batch.shape[0] < 1:
        raise ValueError(f"pixels must be (N, 1, S, S) with N >= 1, got {batch.shape}")
    return batch


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _require_eval(network: MultiTaskNet) -> None:
    if network.training:
        raise ValueError("the network must be in eval mode (BatchNorm running statistics)")


class EagerRuntime:
    """The network's own :meth:`~models.network.MultiTaskNet.feature_map` without autograd."""

    name = "eager"

    def __init__(self, network: MultiTaskNet) -> None:
        self.network = network
        self.device = _device(network)

    def __call__(self, pixels: npt.NDArray[np.float32]) -> Tensor:
        x = torch.from_numpy(as_batch(pixels)).to(self.device)
        with torch.no_grad():
            return self.network.feature_map(x)


class ChannelsLastRuntime:
    """A channels-last copy of the backbone under ``torch.inference_mode``.

    The copy is taken when the runtime is built: later weight changes do not reach it. The
    result is cloned outside inference mode into the default layout, so it is an ordinary
    tensor that autograd (Grad-CAM) accepts.
    """

    name = "channels_last"

    def __init__(self, network: MultiTaskNet) -> None:
        _require_eval(network)
        self.backbone = copy.deepcopy(network.backbone).eval()
        for param in self.backbone.parameters():  # what Module.to(memory_format=...) does
            if param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
        self.device = _device(self.backbone)

    def __call__(self, pixels: npt.NDArray[np.float32]) -> Tensor:
        x = torch.from_numpy(as_batch(pixels)).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out: Tensor = self.backbone(x)
        return out.clone(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporters warn about deprecations inside torch/onnxscript that we cannot act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_onnx(
    network: MultiTaskNet, path: Path, input_size: int, *, dynamo: bool | None = None
) -> Path:
    """Export ``network.backbone`` to ONNX at ``path`` (one file), batch axis dynamic.

    Input ``pixels`` (batch, 1, S, S), output ``features`` (batch, C, h, w). By default the
    torch.export-based ("dynamo") exporter is tried first: it is torch 2.13's default and
    maintained exporter (the TorchScript-based one is deprecated since torch 2.9), and for
    both backbones it gives the same operators (no ``Identity`` nodes) and the same ONNX
    Runtime speed as the TorchScript exporter, at a slower export (~5 s for resnet18, ~20 s
    for densenet121 on 2 cores, once per process). Where it fails, the TorchScript exporter
    (``dynamo=False``) is tried. ``dynamo`` picks one exporter only. Raises
    :class:`RuntimeUnavailable` naming each failure.
    """
    _require_eval(network)
    backbone = network.backbone
    if _device(backbone).type != "cpu":
        backbone = copy.deepcopy(backbone).cpu()
    # Batch 2, not 1: torch.export specialises a dimension whose example size is 0 or 1.
    example = torch.zeros(2, 1, input_size, input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for use_dynamo in (True, False) if dynamo is None else (dynamo,):
        kind = "dynamo" if use_dynamo else "torchscript"
        try:
            with _quiet():
                if use_dynamo:
                    torch.onnx.export(
                        backbone,
                        (example,),
                        str(path),
                        dynamo=True,
                        input_names=[_INPUT],
                        output_names=[_OUTPUT],
                        dynamic_shapes=({0: torch.export.Dim("batch")},),
                        external_data=False,
                        verbose=False,
                    )
                else:
                    torch.onnx.export(
                        backbone,
                        (example,),
                        str(path),
                        dynamo=False,
                        input_names=[_INPUT],
                        output_names=[_OUTPUT],
                        dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}},
                        opset_version=18,
                    )
        except Exception as exc:  # any exporter failure means "try the next / unavailable"
            errors.append(f"{kind} exporter: {type(exc).__name__}: {exc}")
            logger.warning("ONNX export with the %s exporter failed: %s", kind, exc)
            continue
        logger.info("exported the %s backbone to ONNX (%s exporter)", network.arch, kind)
        return path
    raise RuntimeUnavailable("ONNX export failed: " + "; ".join(errors))


@contextlib.contextmanager
def _onnx_file(
    network: MultiTaskNet, onnx_file: Path | None, input_size: int | None
) -> Iterator[Path]:
    """``onnx_file``, or a fresh export in a temporary directory removed afterwards."""
    if onnx_file is not None:
        yield Path(onnx_file)
        return
    if input_size is None:
        raise ValueError("input_size is needed to export the backbone")
    with tempfile.TemporaryDirectory(prefix="xrayd-onnx-") as tmp:
        yield export_onnx(network, Path(tmp) / "backbone.onnx", input_size)


class OnnxRuntime:
    """The exported backbone in an ONNX Runtime CPU session (``threads`` intra-op threads).

    Idle worker threads do not spin: on a daemon's 2 cores a spinning pool takes CPU from
    everything else (and from the next benchmark).
    """

    name = "onnxruntime"

    def __init__(self, onnx_file: Path, *, threads: int = 2) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailable(f"onnxruntime cannot be imported: {exc}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session: Any = ort.InferenceSession(
                str(onnx_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types
            raise RuntimeUnavailable(f"onnxruntime cannot load the model: {exc}") from exc
        self.threads = threads

    def __call__(self, pixels: npt.NDArray[np.float32]) -> Tensor:
        (out,) = self.session.run([_OUTPUT], {_INPUT: as_batch(pixels)})
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


class OpenVinoRuntime:
    """The backbone compiled for OpenVINO's CPU device, fp32, ``threads`` threads.

    ``model`` is an ONNX file or an ``openvino.Model``. fp32 is requested explicitly: on CPUs
    with bf16 support OpenVINO would otherwise lower the precision and change the outputs.
    """

    name = "openvino"

    def __init__(self, model: Path | Any, *, threads: int = 2) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeUnavailable(f"openvino cannot be imported: {exc}") from exc
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        source = str(model) if isinstance(model, Path) else model
        try:
            self.compiled: Any = ov.Core().compile_model(source, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types
            raise RuntimeUnavailable(f"openvino cannot compile the model: {exc}") from exc
        self.threads = threads

    @classmethod
    def from_torch(
        cls, network: MultiTaskNet, input_size: int, *, threads: int = 2
    ) -> OpenVinoRuntime:
        """Convert the backbone with ``openvino.convert_model`` (no ONNX file needed)."""
        _require_eval(network)
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeUnavailable(f"openvino cannot be imported: {exc}") from exc
        backbone = copy.deepcopy(network.backbone).cpu()
        example = torch.zeros(2, 1, input_size, input_size)
        try:
            with _quiet():
                model = ov.convert_model(
                    backbone,
                    example_input=example,
                    input=[ov.PartialShape([-1, 1, input_size, input_size])],
                )
        except Exception as exc:  # conversion failures come in many types
            raise RuntimeUnavailable(f"openvino cannot convert the backbone: {exc}") from exc
        return cls(model, threads=threads)

    def __call__(self, pixels: npt.NDArray[np.float32]) -> Tensor:
        result = self.compiled({0: as_batch(pixels)}, share_outputs=False)
        out = np.asarray(result[0], dtype=np.float32)
        return torch.from_numpy(out)


def build_runtime(
    name: str,
    network: MultiTaskNet,
    *,
    threads: int = 2,
    input_size: int | None = None,
    onnx_file: Path | None = None,
) -> BackboneRuntime:
    """The runtime called ``name`` (one of :data:`RUNTIMES`) for ``network`` (eval mode).

    ``onnxruntime`` and ``openvino`` read ``onnx_file`` when given (e.g. a cached export);
    otherwise they export the backbone for ``input_size`` into a temporary directory, and
    ``openvino`` converts it from torch directly if the export fails. Raises
    :class:`RuntimeUnavailable` when the runtime cannot be built here, ``ValueError`` for an
    unknown name or non-positive ``threads``.
    """
    if threads < 1:
        raise ValueError("threads must be positive")
    if name == "eager":
        return EagerRuntime(network)
    if name == "channels_last":
        return ChannelsLastRuntime(network)
    if name == "onnxruntime":
        with _onnx_file(network, onnx_file, input_size) as path:
            return OnnxRuntime(path, threads=threads)
    if name == "openvino":
        if onnx_file is not None:
            return OpenVinoRuntime(Path(onnx_file), threads=threads)
        if input_size is None:
            raise ValueError("input_size is needed to export the backbone")
        try:
            with _onnx_file(network, None, input_size) as path:
                return OpenVinoRuntime(path, threads=threads)
        except RuntimeUnavailable as exc:
            logger.info("openvino from ONNX failed (%s); converting from torch", exc)
            return OpenVinoRuntime.from_torch(network, input_size, threads=threads)
    raise ValueError(f"unknown runtime {name!r}; expected one of {list(RUNTIMES)}")
