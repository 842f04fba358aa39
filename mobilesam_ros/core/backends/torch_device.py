"""The PyTorch fast path for a CUDA GPU: pre-processing, FP16 encoder in a CUDA graph, batched
decoder and post-processing all on the device, with pinned-memory transfers.

Per frame: one host-to-device copy of the camera image (from a pinned staging buffer), one CUDA
graph replay for the encoder, one decoder call for all prompts, and one device-to-host copy of
the boolean masks. Buffers are allocated when the image size (or the prompt count) first appears
and reused after that. The same code runs on the CPU without graphs and pinned memory, which is
how the tests check it against the numpy/OpenCV path where no GPU is present.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mobilesam_ros.core.model.constants import IMAGE_SIZE, LOW_RES_SIZE
from mobilesam_ros.core.processing.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    FrameGeometry,
    validate_image,
)

_UPSCALE = IMAGE_SIZE // LOW_RES_SIZE


class DevicePipeline:
    """Device-side pre-processing, encoding and mask post-processing for one encoder."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        device: str,
        fp16: bool = True,
        cuda_graph: bool = True,
    ) -> None:
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"
        self.encoder = encoder.to(self.device).eval()
        self.fp16 = fp16 and on_cuda
        self.use_graph = cuda_graph and on_cuda
        self.pin = on_cuda
        self._input = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=self.device)
        self._mean = torch.tensor(PIXEL_MEAN, device=self.device).view(1, 3, 1, 1)
        self._inv_std = (1.0 / torch.tensor(PIXEL_STD, device=self.device)).view(1, 3, 1, 1)
        self._staging: torch.Tensor | None = None  # pinned host copy of the camera image
        self._geometry: FrameGeometry | None = None
        self._graph: Any = None
        self._graph_output: torch.Tensor | None = None
        self._mask_staging: dict[tuple[int, ...], torch.Tensor] = {}

    # -- encoder ---------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(
        self, image: np.ndarray, channel_order: str = "rgb"
    ) -> tuple[torch.Tensor, FrameGeometry]:
        image = validate_image(image, channel_order)
        geometry = self._upload(image, channel_order)
        output = self._run_encoder()
        # The graph's output buffer is overwritten by the next frame: hand out a copy (the FP32
        # conversion of the FP16 output is that copy).
        embedding = output.float() if output.dtype != torch.float32 else output.clone()
        return embedding, geometry

    def _upload(self, image: np.ndarray, channel_order: str) -> FrameGeometry:
        height, width = image.shape[:2]
        if self._geometry is None or self._geometry.original_size != (height, width):
            self._geometry = FrameGeometry.for_image(height, width)
            self._input.zero_()  # padding is 0 after normalization, as in SAM
            self._staging = None
        if self._staging is None or self._staging.shape != image.shape:
            self._staging = torch.empty(image.shape, dtype=torch.uint8, pin_memory=self.pin)
        np.copyto(self._staging.numpy(), image)
        pixels = self._staging.to(self.device, non_blocking=True)
        order = [channel_order.index(c) for c in "rgb"]
        chw = pixels.permute(2, 0, 1)[order].unsqueeze(0).float()
        nh, nw = self._geometry.input_size
        resized = F.interpolate(chw, (nh, nw), mode="bilinear", align_corners=False)
        # OpenCV rounds the resized pixels to uint8 before normalizing; do the same.
        resized = resized.round_().clamp_(0, 255)
        self._input[:, :, :nh, :nw] = (resized - self._mean) * self._inv_std
        return self._geometry

    def _run_encoder(self) -> torch.Tensor:
        if not self.use_graph:
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
                return self.encoder(self._input)
        if self._graph is None:
            self._capture()
        self._graph.replay()
        return self._graph_output

    def _capture(self) -> None:
        """Record the encoder once; later frames replay it (no launch overhead, no allocations)."""
        side_stream = torch.cuda.Stream()
        side_stream.wait_stream(torch.cuda.current_stream())
        with (
            torch.cuda.stream(side_stream),
            torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16, cache_enabled=False),
        ):
            for _ in range(3):  # warm up kernels and cuDNN choices outside the graph
                self.encoder(self._input)
        torch.cuda.current_stream().wait_stream(side_stream)
        self._graph = torch.cuda.CUDAGraph()
        with (
            torch.cuda.graph(self._graph),
            torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16, cache_enabled=False),
        ):
            self._graph_output = self.encoder(self._input)

    # -- masks -----------------------------------------------------------------------------

    @torch.inference_mode()
    def masks(
        self, low_res_logits: torch.Tensor, geometry: FrameGeometry, threshold: float
    ) -> np.ndarray:
        """(N, K, 256, 256) device logits -> (N, K, H, W) bool numpy masks, as postprocess.py."""
        height, width = geometry.original_size
        nh, nw = geometry.input_size
        lead = low_res_logits.shape[:-2]
        rows = min(LOW_RES_SIZE, -(-nh // _UPSCALE) + 1)
        cols = min(LOW_RES_SIZE, -(-nw // _UPSCALE) + 1)
        x = low_res_logits.reshape(1, -1, LOW_RES_SIZE, LOW_RES_SIZE)[..., :rows, :cols]
        x = F.interpolate(
            x, (rows * _UPSCALE, cols * _UPSCALE), mode="bilinear", align_corners=False
        )
        x = x[..., :nh, :nw]
        if (nh, nw) != (height, width):
            x = F.interpolate(x, (height, width), mode="bilinear", align_corners=False)
        masks = (x > threshold).reshape(*lead, height, width)
        return self._download(masks)

    def _download(self, masks: torch.Tensor) -> np.ndarray:
        if not self.pin:
            return masks.numpy().copy()
        staging = self._mask_staging.get(tuple(masks.shape))
        if staging is None:
            staging = torch.empty(masks.shape, dtype=torch.bool, pin_memory=True)
            self._mask_staging = {tuple(masks.shape): staging}  # keep only the latest shape
        staging.copy_(masks, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        # The result leaves with the caller; the staging buffer is reused for the next frame.
        return staging.numpy().copy()
