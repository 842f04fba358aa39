"""Prompts as the node receives them (boxes and points mixed), decoded in few batched calls."""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.segmenter import ImageEmbedding, Segmenter


@dataclass(frozen=True)
class Prompt:
    """One prompt: an optional box and any number of labelled points, in image pixels."""

    id: str = ""
    box: tuple[float, float, float, float] | None = None  # x_min, y_min, x_max, y_max
    points: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()  # 1 foreground, 0 background
    class_id: str = ""
    detection_score: float = 0.0
    source: object = field(default=None, compare=False)  # e.g. the detection it came from
    from_detector: bool = False  # detections start tracks that end unless re-detected
    generated_id: bool = False  # the id was made up for a detection that had none

    def with_box(self, box: tuple[float, float, float, float] | None) -> Prompt:
        return dataclasses.replace(self, box=box)

    @property
    def structure(self) -> tuple[bool, int]:
        """Prompts of equal structure share one decoder call (same token count)."""
        return self.box is not None, len(self.points)


# Values of PromptMask.origin (and of InstanceMask.origin).
PROMPTED = 0  # decoded from a prompt or detection of this very frame
PROPAGATED = 1  # carried by tracking from an earlier frame


@dataclass(frozen=True)
class PromptMask:
    """The result for one prompt: its mask as a tight crop (`crop`), the full frame on demand.

    With tracking, `prompt` is the prompt or detection that last confirmed the instance (its
    id, class and score), `track_id` the instance's stable id and `origin` says whether this
    frame's mask answers a fresh prompt or was propagated.
    """

    prompt: Prompt
    crop: MaskCrop
    predicted_iou: float
    low_res_logits: np.ndarray | None  # (256, 256) float32; None unless asked (tracking)
    track_id: str = ""
    origin: int = PROMPTED

    @classmethod
    def from_mask(
        cls, prompt: Prompt, mask: np.ndarray, predicted_iou: float, low_res_logits: np.ndarray
    ) -> PromptMask:
        """From a full-frame (H, W) bool mask (the crop is a view of it)."""
        return cls(prompt, MaskCrop.from_mask(mask), predicted_iou, low_res_logits)

    @functools.cached_property
    def mask(self) -> np.ndarray:
        """(H, W) bool mask of the whole frame, made on first use (outputs use `crop`)."""
        return self.crop.to_full()


def decode_prompts(
    segmenter: Segmenter,
    embedding: ImageEmbedding,
    prompts: Sequence[Prompt],
    mask_inputs: Sequence[np.ndarray | None] | None = None,
    low_res_logits: bool = True,
) -> list[PromptMask]:
    """Masks for `prompts` in their order; prompts of equal structure go in one batched call.

    A detector's boxes all share one structure, so a frame of detections is one call. A prompt
    with neither box nor points raises InvalidInputError, as do bad coordinates. `mask_inputs`
    gives an optional (256, 256) low-res logit hint per prompt (None: no hint). Without
    `low_res_logits` the results carry none (only tracking needs them).
    """
    groups: dict[tuple[bool, int], list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        if prompt.box is None and not prompt.points:
            raise InvalidInputError(f"prompt {prompt.id or index!r} has neither a box nor points")
        if len(prompt.point_labels) != len(prompt.points):
            raise InvalidInputError(
                f"prompt {prompt.id or index!r} has {len(prompt.points)} points but "
                f"{len(prompt.point_labels)} labels"
            )
        groups[prompt.structure].append(index)
    results: list[PromptMask | None] = [None] * len(prompts)
    for (has_box, num_points), indices in groups.items():
        members = [prompts[i] for i in indices]
        boxes = np.array([p.box for p in members], dtype=np.float64) if has_box else None
        points = labels = None
        if num_points:
            points = np.array([p.points for p in members], dtype=np.float64)
            labels = np.array([p.point_labels for p in members], dtype=np.float64)
        hints = None
        if mask_inputs is not None and any(mask_inputs[i] is not None for i in indices):
            hints = [mask_inputs[i] for i in indices]
        result = segmenter.decode(
            embedding,
            boxes=boxes,
            points=points,
            point_labels=labels,
            mask_input=hints,
            crops=True,
            low_res_logits=low_res_logits,
        )
        logits = result.low_res_logits
        for row, index in enumerate(indices):
            results[index] = PromptMask(
                prompts[index],
                result.mask_crops[row],
                float(result.scores[row]),
                None if logits is None else logits[row],
            )
    return [r for r in results if r is not None]


def captions(instances: Sequence[PromptMask]) -> list[str]:
    """Overlay and marker labels: track id, prompt id, class, predicted IoU."""
    return [
        " ".join(x for x in (r.track_id, r.prompt.id, r.prompt.class_id) if x)
        + f" {r.predicted_iou:.2f}"
        for r in instances
    ]
