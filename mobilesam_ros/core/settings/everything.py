"""Segment everything: SAM's automatic mask generator, with its parameter names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mobilesam_ros.core.settings.fields import Settings, setting


@dataclass(frozen=True)
class EverythingSettings(Settings):
    PREFIX: ClassVar[str] = "everything."
    points_per_side: int = setting(
        32,
        "Grid of points per image side whose masks make up everything (32: 1024 prompts).",
        minimum=1,
        maximum=128,
        dynamic=True,
    )
    points_per_batch: int = setting(
        64,
        "Grid points decoded in one batch (on the CPU in chunks of decoder_memory_mb).",
        minimum=1,
        maximum=1024,
        dynamic=True,
    )
    pred_iou_thresh: float = setting(
        0.88,
        "Masks whose predicted IoU is not above this are dropped (0: keep all).",
        minimum=0.0,
        maximum=1.0,
        dynamic=True,
    )
    stability_score_thresh: float = setting(
        0.95,
        "Masks less stable than this are dropped: the IoU of the mask thresholded at "
        "mask_threshold plus and minus everything.stability_score_offset (0: keep all).",
        minimum=0.0,
        maximum=1.0,
        dynamic=True,
    )
    stability_score_offset: float = setting(
        1.0,
        "Logit offset of the stability score's two thresholds.",
        minimum=0.0,
        maximum=20.0,
        dynamic=True,
    )
    box_nms_thresh: float = setting(
        0.7,
        "Box IoU above which the mask with the lower predicted IoU is dropped as a duplicate.",
        minimum=0.0,
        maximum=1.0,
        dynamic=True,
    )
    min_mask_region_area: int = setting(
        0,
        "Disconnected regions and holes smaller than this many pixels are removed (0: off).",
        minimum=0,
        maximum=100_000,
        dynamic=True,
    )
    crop_n_layers: int = setting(
        0,
        "Layers of image crops run again at higher resolution (layer i: (2^i)^2 crops).",
        minimum=0,
        maximum=3,
        dynamic=True,
    )
    crop_nms_thresh: float = setting(
        0.7,
        "Box IoU above which masks of different crops are duplicates (the smaller crop wins).",
        minimum=0.0,
        maximum=1.0,
        exposed=False,
    )
    crop_overlap_ratio: float = setting(
        512 / 1500,
        "Overlap of neighbouring crops, as a fraction of the image's short side per layer.",
        minimum=0.0,
        maximum=1.0,
        exposed=False,
    )
    max_rate: float = setting(
        0.0,
        "Most frames per second segmented whole (everything/masks, everything/overlay); "
        "0: only on request (service segment with everything true).",
        minimum=0.0,
        maximum=30.0,
        dynamic=True,
    )
