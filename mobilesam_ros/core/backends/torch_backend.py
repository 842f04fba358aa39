"""PyTorch backend: the reference implementation, on CPU or CUDA."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mobilesam_ros.core.backends.base import Backend, DecoderInputs, DecoderOutputs
from mobilesam_ros.core.choices import check_device, is_cuda
from mobilesam_ros.core.errors import BackendUnavailableError
from mobilesam_ros.core.processing.postprocess import MaskCrop


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        device: str = "auto",
        fp16: bool = True,
        compile_decoder: bool = False,
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

            # GPU: pre/post-processing on the device, encoder and decoder (FP16 with the
            # sensitive parts in FP32) replayed from CUDA graphs.
            self._device_pipeline = DevicePipeline(
                self._encoder,
                device,
                decoders=self._decoders,
                fp16=fp16,
                compile_decoder=compile_decoder,
            )
            self.name = ("torch-fp16" if fp16 else "torch") + (
                "-compiled-decoder" if compile_decoder else ""
            )

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
        low_res: bool = True,
        crops: bool = False,
    ) -> tuple[np.ndarray | list[MaskCrop], np.ndarray, np.ndarray | None] | None:
        """As Backend.decode_masks."""
        if self._device_pipeline is None:
            return None
        return self._device_pipeline.decode(
            embedding, inputs, multimask, geometry, threshold, low_res=low_res, crops=crops
        )

    def stage_timings(self) -> dict[str, float] | None:
        """Device milliseconds per stage of the last frame on the GPU path (CUDA events; see
        DevicePipeline.stage_timings), None on the CPU."""
        if self._device_pipeline is None:
            return None
        return self._device_pipeline.stage_timings()

    def encode(self, image: np.ndarray) -> Any:
        torch = self._torch
        with torch.inference_mode():
            return self._encoder(torch.from_numpy(image).to(self.device))

    def decode(self, embedding: Any, inputs: DecoderInputs, multimask: bool) -> DecoderOutputs:
        torch = self._torch
        # The GPU path's embeddings are FP16; these FP32 decoders take them as FP32.
        embedding = embedding.float()
        tensors = [torch.from_numpy(a).to(self.device, non_blocking=True) for a in inputs.arrays()]
        with torch.inference_mode():
            masks, iou = self._decoders[multimask](embedding, *tensors)
        return masks.cpu().numpy(), iou.cpu().numpy()

    def embedding_to_numpy(self, embedding: Any) -> np.ndarray:
        return embedding.float().cpu().numpy()
