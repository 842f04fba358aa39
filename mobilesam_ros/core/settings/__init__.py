"""Every setting of the node: one frozen type per subsystem, the single source of each
setting's default, accepted values, description and whether it may change at run time.

The node's ROS parameters (`ros/parameters.py`), the checks of `config/seg.yaml` and the
README's parameter table derive from these types. A value is checked where a settings object is
made, so a bad one never reaches the code that uses it: `InvalidInputError` names the parameter
and what it accepts. Fields marked `exposed=False` are tuning constants of the code, with the
same checks, that are not node parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mobilesam_ros.core.choices import (
    BACKENDS,
    DEFAULT_PRECISION,
    DEVICE_FORMS,
    PRECISIONS,
    SYNC_POLICIES,
    check_device,
)
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.settings.fields import (
    Setting,
    SettingInfo,
    Settings,
    setting,
    value_problem,
)

__all__ = [
    "DecodeSettings",
    "DepthSettings",
    "DiagnosticsSettings",
    "InputSettings",
    "ModelSettings",
    "NodeSettings",
    "OverlaySettings",
    "Setting",
    "SettingInfo",
    "Settings",
    "SyncSettings",
    "TrackingSettings",
    "value_problem",
]


@dataclass(frozen=True)
class ModelSettings(Settings):
    checkpoint: str = setting(
        "", "Path of mobile_sam.pt; empty downloads the official checkpoint once into cache_dir."
    )
    backend: str = setting("auto", "Inference runtime.", choices=BACKENDS)
    device: str = setting("auto", "Where inference runs.", forms=", ".join(DEVICE_FORMS))
    precision: str = setting(
        DEFAULT_PRECISION,
        "Arithmetic of the GPU backends (TensorRT engines, PyTorch on CUDA); layers that lose "
        "accuracy stay FP32.",
        choices=PRECISIONS,
    )
    compile_decoder: bool = setting(
        False,
        "PyTorch on CUDA only: compile the decoder with torch.compile (needs Triton): about 2x "
        "faster decoding, but 10-20 s of compiling the first time each prompt count bucket "
        "(1, 2, 4, 8, 16, ...) comes up.",
    )
    force_rebuild: bool = setting(
        False, "Build the TensorRT engines again at start even when valid ones are cached."
    )
    cache_dir: str = setting(
        "",
        "Folder for the checkpoint and exported graphs; empty means $XDG_CACHE_HOME/mobilesam_ros.",
    )
    decoder_memory_mb: int = setting(
        256,
        "Working memory of one decoder call on the CPU path, in MB (about 40 MB per prompt); "
        "more prompts are decoded in several calls of that size, so memory stays flat however "
        "many prompts a frame has.",
        minimum=1,
        maximum=65536,
    )

    def check(self) -> None:
        try:
            check_device(self.device)
        except InvalidInputError as exc:
            raise InvalidInputError(f"parameter {exc}") from None


@dataclass(frozen=True)
class DecodeSettings(Settings):
    mask_threshold: float = setting(
        0.0,
        "Mask logit above which a pixel belongs to the object (0 = probability 0.5).",
        minimum=-20.0,
        maximum=20.0,
        dynamic=True,
    )
    max_prompts: int = setting(
        100,
        "Most prompts answered per message; further prompts are dropped and counted.",
        minimum=1,
        maximum=1000,
        dynamic=True,
    )


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
class InputSettings(Settings):
    use_compressed: bool = setting(
        False, "Subscribe to image/compressed (jpeg, png) instead of image."
    )


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


@dataclass(frozen=True)
class NodeSettings:
    """The node's settings, one object per subsystem."""

    model: ModelSettings = ModelSettings()
    decode: DecodeSettings = DecodeSettings()
    sync: SyncSettings = SyncSettings()
    inputs: InputSettings = InputSettings()
    overlay: OverlaySettings = OverlaySettings()
    tracking: TrackingSettings = TrackingSettings()
    depth: DepthSettings = DepthSettings()
    diagnostics: DiagnosticsSettings = DiagnosticsSettings()

    @classmethod
    def groups(cls) -> Iterator[tuple[str, type[Settings]]]:
        for item in dataclasses.fields(cls):
            yield item.name, type(item.default)

    @classmethod
    def parameters(cls) -> list[Setting]:
        """Every node parameter (exposed field), in declaration order."""
        return [s for _, group in cls.groups() for s in group.settings() if s.info.exposed]

    @classmethod
    def from_values(cls, value_of: Callable[[str], Any]) -> NodeSettings:
        """Settings from parameter values; InvalidInputError names the first bad one."""
        return cls(**{name: group.from_values(value_of) for name, group in cls.groups()})

    def with_changes(self, changes: Mapping[str, Any]) -> NodeSettings:
        """These settings with some parameters changed (name -> value); InvalidInputError
        names a refused one, and a change of a parameter that is fixed at start."""
        known = {s.name: s for s in self.parameters()}
        for name in changes:
            if name in known and not known[name].info.dynamic:
                raise InvalidInputError(f"parameter {name} cannot change while the node runs")
        values = self.values()
        values.update({k: v for k, v in changes.items() if k in known})
        return self.from_values(values.__getitem__)

    def values(self) -> dict[str, Any]:
        """Every parameter's value, by name."""
        return {
            s.name: getattr(getattr(self, name), s.field_name)
            for name, group in self.groups()
            for s in group.settings()
            if s.info.exposed
        }
