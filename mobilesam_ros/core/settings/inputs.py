"""What comes in: images, how prompts find them, how detector boxes become prompts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from mobilesam_ros.core.choices import SYNC_POLICIES
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.settings.fields import Settings, setting

LETTERBOXES = ("none", "bottom_right", "center")
_NETWORK_SIZE = re.compile(r"(\d+)x(\d+)")
_CAMERA = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class InputSettings(Settings):
    use_compressed: bool = setting(
        False, "Subscribe to image/compressed (jpeg, png) instead of image."
    )
    cameras: tuple[str, ...] = setting(
        (),
        "Names of the cameras one node serves with one model: each camera <cam> has its topics "
        "under <cam>/ (<cam>/image, <cam>/masks, ...), its own frame cache, sync, tracks and "
        "diagnostics status. Empty: one camera on the topics without a prefix.",
        forms="a list of distinct names of letters, digits and _, not starting with a digit",
    )

    def check(self) -> None:
        names = self.cameras
        if not isinstance(names, tuple):
            object.__setattr__(self, "cameras", tuple(names))  # a list from a parameter
            names = self.cameras
        bad = [name for name in names if not isinstance(name, str) or not _CAMERA.fullmatch(name)]
        if bad:
            raise InvalidInputError(
                f"parameter cameras: {bad!r} cannot name topics; a camera name is letters, "
                "digits and _, not starting with a digit (a namespace goes in the launch file)"
            )
        if len(set(names)) != len(names):
            raise InvalidInputError(f"parameter cameras names a camera twice: {list(names)}")


@dataclass(frozen=True)
class SyncSettings(Settings):
    PREFIX: ClassVar[str] = "sync."
    policy: str = setting(
        "exact",
        "How prompts find their image: exact stamp, nearest stamp within sync.max_offset, "
        "or the latest image.",
        choices=SYNC_POLICIES,
        dynamic=True,
    )
    max_offset: float = setting(
        0.05,
        "Largest stamp difference in seconds that the nearest policy accepts.",
        minimum=0.0,
        maximum=10.0,
        dynamic=True,
    )
    max_wait: float = setting(
        0.5,
        "Seconds prompts wait for their image before they are dropped and counted.",
        minimum=0.0,
        maximum=10.0,
        dynamic=True,
    )
    cache_size: int = setting(
        30,
        "Images kept for matching with late prompts (each with its embedding once encoded).",
        minimum=1,
        maximum=300,
    )


@dataclass(frozen=True)
class DetectionSettings(Settings):
    """How detector boxes become prompts: their pixel space, and which are kept."""

    PREFIX: ClassVar[str] = "detections."
    input_size: str = setting(
        "0",
        "The detector network's input size WxH when its boxes are in those pixels (e.g. "
        "960x544 for Isaac ROS Grounding DINO, 640x640 for Isaac ROS YOLOv8); 0: camera pixels.",
        dynamic=True,
        forms="0, WxH",
    )
    letterbox: str = setting(
        "none",
        "How the camera image was fitted into the network input: none (stretched to it), "
        "bottom_right (scaled keeping its aspect, padded right and below), center (scaled, "
        "padded on both sides).",
        choices=LETTERBOXES,
        dynamic=True,
    )
    min_score: float = setting(
        0.0,
        "Detections with a lower score are not prompted (counted).",
        minimum=0.0,
        maximum=1.0,
        dynamic=True,
    )
    class_filter: str = setting(
        "",
        "Comma-separated class ids to prompt (others are counted and left out); empty: all.",
        dynamic=True,
    )
    nms_iou: float = setting(
        0.7,
        "A detection whose box overlaps a higher-scored one of the same class by more than "
        "this box IoU is suppressed (counted); 1: off. Detectors without their own suppression "
        "(Isaac ROS Grounding DINO, RT-DETR) send near-duplicates.",
        minimum=0.0,
        maximum=1.0,
        dynamic=True,
    )

    def check(self) -> None:
        if self.input_size != "0" and not _NETWORK_SIZE.fullmatch(self.input_size):
            raise InvalidInputError(
                f"parameter detections.input_size = {self.input_size!r} is not accepted; "
                "accepted: 0 (camera pixels) or WxH, e.g. 960x544"
            )
        size = self.network_size
        if size is not None and min(size) < 1:
            raise InvalidInputError(
                f"parameter detections.input_size = {self.input_size!r}: width and height must "
                "be at least 1"
            )

    @property
    def network_size(self) -> tuple[int, int] | None:
        """(width, height) of the network input; None for camera pixels."""
        match = _NETWORK_SIZE.fullmatch(self.input_size)
        return (int(match.group(1)), int(match.group(2))) if match else None

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.class_filter.split(",") if c.strip())
