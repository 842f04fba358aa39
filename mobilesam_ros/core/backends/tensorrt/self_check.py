"""Self-check of an inference backend against a reference on a real photo with box prompts.

Used after every TensorRT build: the engine's masks must match ONNX Runtime's FP32 masks on
the package's own photo (mobilesam_ros/data/astronaut.jpg), or the build keeps more layers
in FP32 and tries again. The cases cover the decoder's shapes: N = 1, 6, 7 and the profile's
maximum prompts, one mask hint shared by all prompts (M = 1) and one per prompt (M = N).
Plain numpy/OpenCV; works with any `Backend`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import cv2
import numpy as np

from mobilesam_ros.core.backends.base import Backend, DecoderInputs
from mobilesam_ros.core.errors import MobileSamError
from mobilesam_ros.core.processing.postprocess import masks_from_logits
from mobilesam_ros.core.processing.preprocess import (
    FrameGeometry,
    ImagePreprocessor,
    encode_prompts,
)

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
    data = resources.files("mobilesam_ros").joinpath("data").joinpath(SELF_CHECK_PHOTO).read_bytes()
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
class SelfCheckCase:
    """One decoder call of the self-check: N prompts, and M = 0, 1 or N mask hints."""

    name: str
    inputs: DecoderInputs


@dataclass
class SelfCheckReference:
    """The reference backend's masks for every case, computed once per build."""

    model_input: np.ndarray
    geometry: FrameGeometry
    cases: list[SelfCheckCase]
    masks: dict[tuple[str, bool], np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class SelfCheckResult:
    """Mask IoU of a candidate against the reference, by case and decoder."""

    iou_single: float  # mean over every single-mask case
    iou_multi: float  # mean over every multimask case
    iou_per_box: tuple[float, ...]  # the six boxes, single-mask decoder, no hints
    min_iou: float = SELF_CHECK_MIN_IOU
    iou_per_case: tuple[tuple[str, float], ...] = ()

    @property
    def iou(self) -> float:
        """The figure that decides: the worst case's mean (each decoder, each case)."""
        worst = [value for _, value in self.iou_per_case]
        return min([self.iou_single, self.iou_multi, *worst])

    @property
    def passed(self) -> bool:
        return self.iou >= self.min_iou

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        worst = min(self.iou_per_case, key=lambda item: item[1], default=("", 1.0))
        cases = f", worst case {worst[0]} {worst[1]:.4f}" if self.iou_per_case else ""
        return (
            f"mask IoU {self.iou:.4f} ({verdict}, needs {self.min_iou}): single-mask "
            f"{self.iou_single:.4f}, multimask {self.iou_multi:.4f} over "
            f"{len(self.iou_per_case) // 2 or 1} decoder inputs{cases}"
        )


def _tiled(inputs: DecoderInputs, count: int) -> DecoderInputs:
    """`count` prompts repeating the boxes' (identical-length) token rows."""
    rows = np.resize(np.arange(len(inputs)), count)
    return DecoderInputs(inputs.point_coords[rows], inputs.point_labels[rows])


def _cases(boxes: DecoderInputs, hints: np.ndarray, max_prompts: int) -> list[SelfCheckCase]:
    """N = 6 (the boxes), 1, 7 and the profile's maximum without hints; one hint shared by
    all six prompts (M = 1); one hint per prompt (M = N)."""
    cases = [SelfCheckCase(f"N={len(boxes)}", boxes)]
    for count in sorted({1, 7, max_prompts} - {len(boxes)}):
        cases.append(SelfCheckCase(f"N={count}", _tiled(boxes, count)))
    ones = np.ones(len(boxes), np.float32)
    shared = DecoderInputs(boxes.point_coords, boxes.point_labels, hints[1:2], ones[:1])
    per_prompt = DecoderInputs(boxes.point_coords, boxes.point_labels, hints, ones)
    cases.append(SelfCheckCase(f"N={len(boxes)} M=1 hint", shared))
    cases.append(SelfCheckCase(f"N={len(boxes)} M=N hints", per_prompt))
    return cases


def reference_masks(reference: Backend, max_prompts: int = 8) -> SelfCheckReference:
    """Run the reference on every case. Done before a build, so the reference runtime can be
    released before the candidate engines take their memory."""
    image = self_check_photo()
    model_input, geometry = ImagePreprocessor()(image)
    boxes = DecoderInputs(*encode_prompts(geometry, SELF_CHECK_BOXES, None, None))
    embedding = reference.encode(model_input)
    # Realistic hints: the reference's own low-res logits, as a tracker feeds back each frame.
    hints, _ = reference.decode(embedding, boxes, False)
    result = SelfCheckReference(model_input, geometry, _cases(boxes, hints, max_prompts))
    for case in result.cases:
        for multimask in (False, True):
            low_res, _ = reference.decode(embedding, case.inputs, multimask)
            result.masks[(case.name, multimask)] = masks_from_logits(low_res, geometry)
    return result


def compare_with_reference(
    candidate: Backend, reference: SelfCheckReference, min_iou: float = SELF_CHECK_MIN_IOU
) -> SelfCheckResult:
    """Segment every case with the candidate and compare with the reference's masks."""
    embedding = candidate.encode(reference.model_input)
    per_case: list[tuple[str, float]] = []
    means: dict[bool, list[float]] = {False: [], True: []}
    per_box: tuple[float, ...] = ()
    for case in reference.cases:
        for multimask in (False, True):
            low_res, _ = candidate.decode(embedding, case.inputs, multimask)
            ious = mask_iou(
                masks_from_logits(low_res, reference.geometry),
                reference.masks[(case.name, multimask)],
            )
            label = f"{case.name} {'multimask' if multimask else 'single-mask'}"
            per_case.append((label, float(ious.mean())))
            means[multimask].append(float(ious.mean()))
            if case is reference.cases[0] and not multimask:
                per_box = tuple(float(v) for v in ious[:, 0])
    return SelfCheckResult(
        iou_single=float(np.mean(means[False])),
        iou_multi=float(np.mean(means[True])),
        iou_per_box=per_box,
        min_iou=min_iou,
        iou_per_case=tuple(per_case),
    )


def run_self_check(
    candidate: Backend,
    reference: Backend,
    min_iou: float = SELF_CHECK_MIN_IOU,
    max_prompts: int = 8,
) -> SelfCheckResult:
    """Segment the built-in photo's cases with both backends and compare the masks."""
    return compare_with_reference(candidate, reference_masks(reference, max_prompts), min_iou)
