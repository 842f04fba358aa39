"""The device path's two resizes, each giving the host path's result: camera pixels down to the
model's input, and low-res logits up to the camera frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mobilesam_ros.core.model.constants import IMAGE_SIZE, LOW_RES_SIZE
from mobilesam_ros.core.processing.preprocess import FrameGeometry

_UPSCALE = IMAGE_SIZE // LOW_RES_SIZE


def resize_like_pillow(chw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 3, H, W) float pixels -> (1, 3, h, w), as the official pipeline's PIL bilinear resize
    (antialiased when shrinking) followed by its rounding to uint8."""
    resized = F.interpolate(chw, size, mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255)


def upscale_logits(low_res_logits: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """(N, K, 256, 256) logits -> (N, K, H, W) logits in the original frame, the two bilinear
    steps of postprocess.masks_from_logits (only the low-res rows/cols the crop keeps)."""
    height, width = geometry.original_size
    nh, nw = geometry.input_size
    lead = low_res_logits.shape[:-2]
    rows = min(LOW_RES_SIZE, -(-nh // _UPSCALE) + 1)
    cols = min(LOW_RES_SIZE, -(-nw // _UPSCALE) + 1)
    x = low_res_logits.reshape(1, -1, LOW_RES_SIZE, LOW_RES_SIZE)[..., :rows, :cols]
    x = F.interpolate(x, (rows * _UPSCALE, cols * _UPSCALE), mode="bilinear", align_corners=False)
    x = x[..., :nh, :nw]
    if (nh, nw) != (height, width):
        x = F.interpolate(x, (height, width), mode="bilinear", align_corners=False)
    return x.reshape(*lead, height, width)
