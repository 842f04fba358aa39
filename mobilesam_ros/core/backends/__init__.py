"""Inference runtimes behind one interface, chosen by name and imported lazily."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

from mobilesam_ros.core.backends.base import Backend
from mobilesam_ros.core.choices import BACKENDS, check_choice, check_device, is_cuda
from mobilesam_ros.core.errors import BackendUnavailableError, MobileSamError

TENSORRT_OPTIONS = ("precision", "max_prompts", "force_rebuild", "workspace_mib")
X86 = ("x86_64", "amd64")

logger = logging.getLogger(__name__)
_reported_fallbacks: set[str] = set()


def create_backend(
    name: str,
    checkpoint: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    device: str = "auto",
    progress: bool = True,
    options: dict[str, Any] | None = None,
) -> Backend:
    """Build the backend `name` for a checkpoint file.

    `auto` takes TensorRT when it imports, sees a GPU, builds (minutes once, then cached) and
    passes its self-check; otherwise ONNX Runtime with CUDA, PyTorch with CUDA, then the CPU:
    OpenVINO on x86 where it is installed (FP32 unless precision says bf16), else ONNX
    Runtime, in that order. Device "cpu" goes to the CPU directly; "gpu" (an Intel GPU) and
    precision "bf16" to OpenVINO. Why TensorRT was passed over is logged once and kept in the
    returned backend's `fallback_reason`. `tensorrt` asked for by name fails with the reason
    instead. Options: tensorrt: precision, max_prompts, force_rebuild, workspace_mib (defaults
    in `engine_cache`: FP16, 64 prompts, 2048 MiB); torch: fp16, compile_decoder.
    """
    options = dict(options or {})
    check_choice("backend", name, BACKENDS)
    check_device(device)
    if name == "auto":
        return _create_auto(checkpoint, cache_dir, device, progress, options)
    if name == "openvino":
        from mobilesam_ros.core.backends.openvino_backend import OpenVinoBackend
        from mobilesam_ros.core.model.export import export_onnx

        models = export_onnx(checkpoint, Path(cache_dir), progress=progress)
        return OpenVinoBackend(models, Path(cache_dir), device, options.get("precision", "fp32"))
    _check_not_openvino_only(name, device, options.get("precision", "fp16"))
    if name == "onnxruntime":
        from mobilesam_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend
        from mobilesam_ros.core.model.export import export_onnx

        models = export_onnx(checkpoint, Path(cache_dir), progress=progress)
        return OnnxRuntimeBackend(models, device)
    if name == "torch":
        from mobilesam_ros.core.backends.torch_backend import TorchBackend

        return TorchBackend(
            checkpoint,
            device,
            fp16=options.get("fp16", True),
            compile_decoder=options.get("compile_decoder", False),
        )
    from mobilesam_ros.core.backends.tensorrt.factory import create_tensorrt_backend

    trt_options = {k: options[k] for k in TENSORRT_OPTIONS if k in options}
    return create_tensorrt_backend(checkpoint, cache_dir, device, progress=progress, **trt_options)


def _check_not_openvino_only(name: str, device: str, precision: str) -> None:
    """Device 'gpu' (an Intel GPU) and precision 'bf16' are OpenVINO's alone."""
    if device == "gpu":
        raise BackendUnavailableError(
            f"device 'gpu' is an Intel GPU, run by backend 'openvino', not {name!r}; an NVIDIA "
            "GPU is 'cuda' or 'cuda:N'"
        )
    if precision == "bf16":
        raise BackendUnavailableError(
            f"precision 'bf16' is computed by backend 'openvino' (on CPUs with AMX or AVX-512 "
            f"BF16), not {name!r}"
        )


def _create_auto(
    checkpoint: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    device: str,
    progress: bool,
    options: dict[str, Any],
) -> Backend:
    if device in ("cpu", "gpu") or options.get("precision") == "bf16":
        # No NVIDIA GPU asked for: OpenVINO where it serves this device, else ONNX Runtime.
        return create_backend(
            _cpu_backend(device), checkpoint, cache_dir, device, progress, options
        )
    from mobilesam_ros.core.backends.tensorrt.compat import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    installed = reason is None or "not importable" not in reason
    if reason is None:
        try:
            return create_backend("tensorrt", checkpoint, cache_dir, device, progress, options)
        except MobileSamError as exc:
            reason = str(exc)
        except Exception as exc:  # an unforeseen TensorRT failure must not cost the user a backend
            reason = f"{type(exc).__name__}: {exc}"
    _report_fallback(reason, loud=installed)
    name, fallback_device = _pick_without_tensorrt(device, reason)
    backend = create_backend(name, checkpoint, cache_dir, fallback_device, progress, options)
    backend.fallback_reason = reason
    return backend


def _report_fallback(reason: str, loud: bool) -> None:
    """Log why TensorRT was passed over, once per reason and process."""
    if reason in _reported_fallbacks:
        return
    _reported_fallbacks.add(reason)
    level = logging.WARNING if loud else logging.INFO
    logger.log(level, "backend 'auto' does not use TensorRT: %s", reason)


def _pick_without_tensorrt(device: str, tensorrt_reason: str) -> tuple[str, str]:
    from mobilesam_ros.core.backends.onnxruntime_backend import cuda_provider_available
    from mobilesam_ros.core.backends.torch_backend import torch_cuda_available

    if cuda_provider_available():
        return "onnxruntime", device
    if torch_cuda_available():
        return "torch", device
    if is_cuda(device):
        raise BackendUnavailableError(
            f"device {device!r} asked for, but neither onnxruntime-gpu nor a CUDA PyTorch is "
            f"installed, and TensorRT cannot be used: {tensorrt_reason}"
        )
    return _cpu_backend("cpu"), "cpu"


def _cpu_backend(device: str) -> str:
    """OpenVINO on an x86 CPU (and for an Intel GPU) where it is installed, else ONNX Runtime."""
    from mobilesam_ros.core.backends.openvino_backend import openvino_available

    if device == "gpu" or (platform.machine().lower() in X86 and openvino_available()):
        return "openvino"
    return "onnxruntime"


__all__ = ["Backend", "create_backend"]
