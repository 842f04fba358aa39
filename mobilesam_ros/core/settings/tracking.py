"""How instances are followed between detections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mobilesam_ros.core.settings.fields import Settings, setting


@dataclass(frozen=True)
class TrackingSettings(Settings):
    PREFIX: ClassVar[str] = "tracking."
    enabled: bool = setting(
        True,
        "Follow every instance from frame to frame with a stable id: between detections, each "
        "track is re-segmented on every new frame from its optically propagated box.",
    )
    max_age: float = setting(
        1.0,
        "Seconds a detector-started track lives on without a matching detection.",
        minimum=0.05,
        maximum=60.0,
        dynamic=True,
    )
    prompt_max_age: float = setting(
        0.0,
        "Seconds a track started by a prompt or click lives on without a new prompt on it "
        "(0: no limit; it ends when the object is lost).",
        minimum=0.0,
        maximum=3600.0,
        dynamic=True,
    )
    min_iou: float = setting(
        0.5,
        "Predicted IoU below which a propagated frame counts as bad; 3 in a row end the track "
        "(0: never).",
        minimum=0.0,
        maximum=1.0,
        dynamic=True,
    )
    iou_match: float = setting(
        0.3,
        "Least box IoU between a detection and a track's propagated box to refresh that track.",
        minimum=0.01,
        maximum=1.0,
        dynamic=True,
    )
    margin: float = setting(
        0.1,
        "Share of a propagated box's size added on each side of its prompt box.",
        minimum=0.0,
        maximum=1.0,
        dynamic=True,
    )
    max_tracks: int = setting(
        100,
        "Most live tracks; beyond it the oldest propagated tracks end first (counted as "
        "tracks_ended_over_max_tracks).",
        minimum=1,
        maximum=1000,
        dynamic=True,
    )
    match_detection_ids: bool = setting(
        False,
        "Detections refresh the track that carries their id (for detectors with stable ids, "
        "e.g. yolo_ros with its tracker) instead of the one their box overlaps most.",
        dynamic=True,
    )
    min_iou_frames: int = setting(
        3, "Bad propagated frames in a row that end a track.", minimum=1, exposed=False
    )
    min_margin_px: float = setting(
        4.0, "Least margin on each side of a prompt box, pixels.", minimum=0.0, exposed=False
    )
    mask_prompt: bool = setting(
        True, "Pass each track's last logits, moved with its flow, as a mask hint.", exposed=False
    )
    min_visible: float = setting(
        0.5,
        "Least share of the propagated box inside the image for a track to go on.",
        minimum=0.0,
        maximum=1.0,
        exposed=False,
    )
    max_points: int = setting(50, "Feature points tracked per instance.", minimum=4, exposed=False)
