"""Low-resolution mask logits -> full-resolution boolean masks, in numpy/OpenCV."""

from __future__ import annotations

import cv2
import numpy as np

from mobilesam_ros.core.model.constants import IMAGE_SIZE, LOW_RES_SIZE
from mobilesam_ros.core.processing.preprocess import FrameGeometry

_UPSCALE = IMAGE_SIZE // LOW_RES_SIZE  # 4


def masks_from_logits(
    low_res_logits: np.ndarray,
    geometry: FrameGeometry,
    threshold: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Upscale (..., 256, 256) logits to the original image and threshold them.

    The same two bilinear steps as SAM's `postprocess_masks` (256 -> 1024 model frame, crop the
    padding, resize to the original size), except that step one only computes the rows and
    columns the crop keeps: the upscaled pixels are the same, the padding is never made.
    Returns bool masks of shape (..., H, W), written into `out` when given.
    """
    height, width = geometry.original_size
    nh, nw = geometry.input_size
    lead_shape = low_res_logits.shape[:-2]
    if out is None:
        out = np.empty((*lead_shape, height, width), dtype=bool)
    # Low-res rows/cols whose bilinear footprint reaches the kept region, plus one of margin so
    # the border clamp never affects a kept pixel.
    src_rows = min(LOW_RES_SIZE, -(-nh // _UPSCALE) + 1)
    src_cols = min(LOW_RES_SIZE, -(-nw // _UPSCALE) + 1)
    flat_logits = low_res_logits.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE)
    flat_out = out.reshape(-1, height, width)
    for logits, mask in zip(flat_logits, flat_out, strict=True):
        upscaled = cv2.resize(
            logits[:src_rows, :src_cols],
            (src_cols * _UPSCALE, src_rows * _UPSCALE),
            interpolation=cv2.INTER_LINEAR,
        )[:nh, :nw]
        if (nh, nw) != (height, width):
            upscaled = cv2.resize(upscaled, (width, height), interpolation=cv2.INTER_LINEAR)
        np.greater(upscaled, threshold, out=mask)
    return out
