"""PyTorch backend: the reference implementation, on CPU or CUDA."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mobilesam_ros.core.backends.base import Backend, DecoderInputs, DecoderOutputs
from mobilesam_ros.core.choices import check_device, is_cuda
from mobilesam_ros.core.errors import BackendUnavailableError


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self, checkpoint: str | os.PathLike[str], device: str = "auto", fp16: bool = True
    ) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend 'torch' needs PyTorch (pip install torch)"
            ) from exc
        from mobilesam_ros.core.model.modules import load_modules

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if is_cuda(check_device(device)) and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r}: this PyTorch sees no CUDA device")
        self._torch = torch
        self.device = device
        modules = load_modules(checkpoint)
        self._encoder = modules.encoder.to(device)
        self._decoders = {m: modules.decoder(m).to(device) for m in (False, True)}
        self._device_pipeline = None
        if is_cuda(device):
            from mobilesam_ros.core.backends.torch_device import DevicePipeline

            # GPU: pre/post-processing on the device, FP16 encoder replayed from a CUDA graph.
            self._device_pipeline = DevicePipeline(self._encoder, device, fp16=fp16)
            self.name = "torch-fp16" if fp16 else "torch"

    def encode_image(self, image: np.ndarray, channel_order: str) -> tuple[Any, Any] | None:
        if self._device_pipeline is None:
            return None
        return self._device_pipeline.encode(image, channel_order)

    def decode_masks(
        self,
        embedding: Any,
        inputs: DecoderInputs,
        multimask: bool,
        geometry: Any,
        threshold: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if self._device_pipeline is None:
            return None
        low_res, iou = self._decode_tensors(embedding, inputs, multimask)
        masks = self._device_pipeline.masks(low_res, geometry, threshold)
        return masks, iou.cpu().numpy(), low_res.cpu().numpy()

    def encode(self, image: np.ndarray) -> Any:
        torch = self._torch
        with torch.inference_mode():
            return self._encoder(torch.from_numpy(image).to(self.device))

    def decode(self, embedding: Any, inputs: DecoderInputs, multimask: bool) -> DecoderOutputs:
        masks, iou = self._decode_tensors(embedding, inputs, multimask)
        return masks.cpu().numpy(), iou.cpu().numpy()

    def _decode_tensors(
        self, embedding: Any, inputs: DecoderInputs, multimask: bool
    ) -> tuple[Any, Any]:
        torch = self._torch
        tensors = [torch.from_numpy(a).to(self.device, non_blocking=True) for a in inputs.arrays()]
        with torch.inference_mode():
            return self._decoders[multimask](embedding, *tensors)

    def embedding_to_numpy(self, embedding: Any) -> np.ndarray:
        return embedding.cpu().numpy()
