"""What goes out: the overlay image, the 3D outputs from depth, /diagnostics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.settings.fields import Settings, setting


@dataclass(frozen=True)
class OverlaySettings(Settings):
    PREFIX: ClassVar[str] = "overlay."
    alpha: float = setting(
        0.5,
        "Opacity of the mask colors in the overlay image.",
        minimum=0.0,
        maximum=1.0,
        dynamic=True,
    )
    scale: float = setting(
        1.0,
        "Size of the overlay image relative to the camera image (0.5: half width and height, "
        "a quarter of the drawing cost).",
        minimum=0.05,
        maximum=1.0,
        dynamic=True,
    )
    max_rate: float = setting(
        0.0,
        "Most overlay images per second (0: one per answered frame); frames in between get no "
        "overlay, counted in /diagnostics.",
        minimum=0.0,
        maximum=1000.0,
        dynamic=True,
    )
    draw_boxes: bool = setting(True, "Draw prompt boxes in the overlay image.", dynamic=True)
    draw_labels: bool = setting(
        True, "Write ids, classes and scores in the overlay image.", dynamic=True
    )


@dataclass(frozen=True)
class DepthSettings(Settings):
    """How masks become 3D points; depths in metres."""

    PREFIX: ClassVar[str] = "depth."
    max_offset: float = setting(
        0.02,
        "Largest stamp difference in seconds between a color image and the depth image used "
        "for it under sync.policy nearest (exact: equal stamps; latest: the newest depth).",
        minimum=0.0,
        maximum=1.0,
        dynamic=True,
    )
    min_depth: float = setting(
        0.1,
        "Nearest valid depth in metres; nearer (and zero, NaN) depth is ignored.",
        minimum=0.0,
        maximum=100.0,
        dynamic=True,
        parameter="depth.min",
    )
    max_depth: float = setting(
        10.0,
        "Farthest valid depth in metres.",
        minimum=0.01,
        maximum=1000.0,
        dynamic=True,
        parameter="depth.max",
    )
    erode_px: int = setting(
        3,
        "Pixels the mask is eroded by before its depth range is taken (keeps edge bleed out).",
        minimum=0,
        maximum=50,
        dynamic=True,
    )
    min_points: int = setting(
        20,
        "Fewest valid depth points for an instance to get a 3D pose (fewer: counted).",
        minimum=3,
        maximum=100000,
        dynamic=True,
    )
    cloud_stride: int = setting(
        2,
        "instances_cloud keeps the points on every n-th image row and column.",
        minimum=1,
        maximum=64,
        dynamic=True,
    )
    cloud_rgb: bool = setting(True, "Add the image's colors to instances_cloud.", dynamic=True)
    oriented_boxes: bool = setting(
        True,
        "3D boxes oriented along the points' principal axes (false: axis-aligned boxes).",
        dynamic=True,
    )
    clip_percentile: float = setting(
        5.0,
        "Percent of the nearest and farthest points left out of the depth range.",
        minimum=0.0,
        maximum=49.99,
        exposed=False,
    )
    depth_gap: float = setting(
        0.05,
        "Largest jump in metres between neighbouring depths of one surface.",
        minimum=1e-6,
        exposed=False,
    )
    flying_threshold: float = setting(
        0.05,
        "Depth difference in metres to a neighbour above which a pixel is a flying pixel.",
        minimum=0.0,
        exposed=False,
    )

    def check(self) -> None:
        if not self.min_depth < self.max_depth:
            raise InvalidInputError(
                f"depth.min/depth.max: depth range must satisfy min < max, got "
                f"min={self.min_depth}, max={self.max_depth}"
            )


@dataclass(frozen=True)
class DiagnosticsSettings(Settings):
    PREFIX: ClassVar[str] = "diagnostics."
    stale_after: float = setting(
        2.0,
        "Seconds without an image after which /diagnostics reports the input as stale (WARN).",
        minimum=0.1,
        maximum=3600.0,
        dynamic=True,
    )
    period: float = setting(
        1.0,
        "Seconds between /diagnostics messages.",
        minimum=0.1,
        maximum=60.0,
        parameter="diagnostics_period",
    )
