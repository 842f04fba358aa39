"""Inference runtimes behind one interface, chosen by name and imported lazily."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mobilesam_ros.core.backends.base import Backend
from mobilesam_ros.core.choices import BACKENDS, check_choice, check_device, is_cuda
from mobilesam_ros.core.errors import BackendUnavailableError

BACKEND_NAMES = BACKENDS  # kept for callers of the old name


def create_backend(
    name: str,
    checkpoint: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    device: str = "auto",
    progress: bool = True,
    options: dict[str, Any] | None = None,
) -> Backend:
    """Build the backend `name` for a checkpoint file.

    `auto` picks the fastest runtime present: TensorRT when it imports and a CUDA GPU is
    visible (engines are built once, minutes, then cached), else ONNX Runtime with CUDA, else
    PyTorch with CUDA, else ONNX Runtime on the CPU. `tensorrt` builds with the defaults of
    `engine_cache` (FP16, up to 64 prompts per decoder call) unless `options` says otherwise
    (tensorrt: precision, max_prompts, force_rebuild; torch: fp16).
    """
    options = dict(options or {})
    check_choice("backend", name, BACKENDS)
    check_device(device)
    if name == "auto":
        name, device = _pick_fastest(device)
    if name == "onnxruntime":
        from mobilesam_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend
        from mobilesam_ros.core.model.export import export_onnx

        models = export_onnx(checkpoint, Path(cache_dir), progress=progress)
        return OnnxRuntimeBackend(models, device)
    if name == "torch":
        from mobilesam_ros.core.backends.torch_backend import TorchBackend

        return TorchBackend(checkpoint, device, fp16=options.get("fp16", True))
    from mobilesam_ros.core.backends.tensorrt.backend import create_tensorrt_backend

    trt_options = {
        k: options[k] for k in ("precision", "max_prompts", "force_rebuild") if k in options
    }
    return create_tensorrt_backend(checkpoint, cache_dir, device, progress=progress, **trt_options)


def _pick_fastest(device: str) -> tuple[str, str]:
    from mobilesam_ros.core.backends.onnxruntime_backend import cuda_provider_available
    from mobilesam_ros.core.backends.tensorrt.backend import tensorrt_usable
    from mobilesam_ros.core.backends.torch_backend import torch_cuda_available

    if device == "cpu":
        return "onnxruntime", "cpu"
    if tensorrt_usable():
        return "tensorrt", device
    if cuda_provider_available():
        return "onnxruntime", device
    if torch_cuda_available():
        return "torch", device
    if is_cuda(device):
        raise BackendUnavailableError(
            f"device {device!r} asked for, but neither TensorRT (with cuda-python and a "
            "visible GPU), onnxruntime-gpu nor a CUDA PyTorch is installed"
        )
    return "onnxruntime", "cpu"


__all__ = ["BACKEND_NAMES", "Backend", "create_backend"]
