"""Test doubles shared by the tests: a clock the test moves, and a stand-in for Segmenter.

The stand-in's "mask" for a box prompt is the box itself (for points: a 21 x 21 square around
the first point), with a fixed predicted IoU. It makes expected answers known without model
weights, for tests of scheduling, tracking and bookkeeping, never of segmentation.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.processing.preprocess import FrameGeometry
from mobilesam_ros.core.segmenter import SegmentationResult

POINT_HALF_SIZE = 10


class FakeClock:
    """Monotonic seconds that only the test moves (`clock.now += dt`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BoxSegmenterDouble:
    """encode() and decode() of a Segmenter, with masks = prompt boxes (module docstring).

    Records what it was asked: `encoded` (ids of the pixel arrays), `calls` (each decode's
    boxes, points and mask hints). Fails on demand: `fail_encode` holds ids of pixel arrays
    whose encoding raises.
    """

    def __init__(self, score: float = 0.9) -> None:
        self.score = score
        self.mask_threshold = 0.0
        self.timings = SimpleNamespace(preprocess_ms=0.0, encode_ms=0.0)  # as StageTimings
        self.backend = SimpleNamespace(describe=lambda: "box double", fallback_reason=None)
        self.encoded: list[int] = []
        self.fail_encode: set[int] = set()
        self.calls: list[dict[str, Any]] = []

    def encode(self, pixels: np.ndarray, channel_order: str = "rgb") -> FrameGeometry:
        if id(pixels) in self.fail_encode:
            raise RuntimeError("encoder crashed")
        self.encoded.append(id(pixels))
        return FrameGeometry.for_image(*pixels.shape[:2])

    def decode(
        self,
        embedding: FrameGeometry,
        boxes: Any = None,
        points: Any = None,
        point_labels: Any = None,
        mask_input: Any = None,
        crops: bool = False,
        low_res_logits: bool = True,
    ) -> SegmentationResult:
        self.calls.append({"boxes": boxes, "points": points, "mask_input": mask_input})
        height, width = embedding.original_size
        count = len(boxes) if boxes is not None else len(points)
        masks = np.zeros((count, height, width), bool)
        for row in range(count):
            if boxes is not None:
                x0, y0, x1, y1 = (round(float(v)) for v in boxes[row])
            else:
                x, y = (round(float(v)) for v in points[row][0])
                x0, y0 = x - POINT_HALF_SIZE, y - POINT_HALF_SIZE
                x1, y1 = x + POINT_HALF_SIZE, y + POINT_HALF_SIZE
            masks[row, max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
        logits = np.full((count, 256, 256), -8.0, np.float32) if low_res_logits else None
        scores = np.full(count, self.score, np.float32)
        return SegmentationResult(masks, scores, logits, [MaskCrop.from_mask(m) for m in masks])
