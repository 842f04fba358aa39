"""Self-check of an inference backend against a reference on a real photo with box prompts.

Used after every TensorRT build: the engine's masks must match ONNX Runtime's FP32 masks on
the package's own photo (mobilesam_ros/data/astronaut.jpg), or the build keeps more layers
in FP32 and tries again. Plain numpy/OpenCV; works with any `Backend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np

from mobilesam_ros.core.backends.base import Backend, DecoderInputs
from mobilesam_ros.core.errors import MobileSamError
from mobilesam_ros.core.processing.postprocess import masks_from_logits
from mobilesam_ros.core.processing.preprocess import ImagePreprocessor, encode_prompts

SELF_CHECK_PHOTO = "astronaut.jpg"
# Boxes on the 256x256 photo, x_min, y_min, x_max, y_max: face, whole person, helmet,
# shuttle model, mission patch, flag. Large and small objects, some touching the border.
SELF_CHECK_BOXES = np.array(
    [
        [75, 5, 152, 80],
        [10, 70, 185, 256],
        [138, 170, 256, 256],
        [176, 0, 232, 140],
        [66, 172, 106, 212],
        [0, 0, 48, 190],
    ],
    dtype=np.float64,
)
# Mean mask IoU against the FP32 reference below which an engine is not accepted.
SELF_CHECK_MIN_IOU = 0.97


def self_check_photo() -> np.ndarray:
    """The built-in photo as a 256x256x3 uint8 RGB array."""
    data = resources.files("mobilesam_ros").joinpath("data", SELF_CHECK_PHOTO).read_bytes()
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MobileSamError(f"the package's self-check photo {SELF_CHECK_PHOTO} is unreadable")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boolean masks over the last two axes; 1.0 where both masks are empty."""
    intersection = np.logical_and(a, b).sum(axis=(-2, -1))
    union = np.logical_or(a, b).sum(axis=(-2, -1))
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


@dataclass(frozen=True)
class SelfCheckResult:
    """Mask IoU of a candidate against the reference, per decoder (mean over all masks)."""

    iou_single: float
    iou_multi: float
    iou_per_box: tuple[float, ...]  # single-mask decoder
    min_iou: float = SELF_CHECK_MIN_IOU

    @property
    def iou(self) -> float:
        """The figure that decides: the lower of the two decoders' means."""
        return min(self.iou_single, self.iou_multi)

    @property
    def passed(self) -> bool:
        return self.iou >= self.min_iou

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"mask IoU {self.iou:.4f} ({verdict}, needs {self.min_iou}): single-mask "
            f"{self.iou_single:.4f}, multimask {self.iou_multi:.4f} over "
            f"{len(self.iou_per_box)} boxes"
        )


def run_self_check(
    candidate: Backend, reference: Backend, min_iou: float = SELF_CHECK_MIN_IOU
) -> SelfCheckResult:
    """Segment the built-in photo's boxes with both backends and compare the masks."""
    image = self_check_photo()
    model_input, geometry = ImagePreprocessor()(image)
    inputs = DecoderInputs(*encode_prompts(geometry, SELF_CHECK_BOXES, None, None))
    # Both backends copy the input before returning, so one preprocessed buffer serves both.
    embeddings = [backend.encode(model_input) for backend in (candidate, reference)]
    ious = {}
    for multimask in (False, True):
        masks = []
        for backend, embedding in zip((candidate, reference), embeddings, strict=True):
            low_res, _ = backend.decode(embedding, inputs, multimask)
            masks.append(masks_from_logits(low_res, geometry))
        ious[multimask] = mask_iou(*masks)
    return SelfCheckResult(
        iou_single=float(ious[False].mean()),
        iou_multi=float(ious[True].mean()),
        iou_per_box=tuple(float(v) for v in ious[False][:, 0]),
        min_iou=min_iou,
    )
