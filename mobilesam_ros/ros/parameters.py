"""The node's parameters as plain data: name, default, description, range, run-time changeable.

The single source for the node's declarations, `config/seg.yaml` and the launch file's defaults
(tests check that they agree). Importable without ROS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mobilesam_ros.core.choices import (
    BACKENDS,
    DEFAULT_PRECISION,
    PRECISIONS,
    SYNC_POLICIES,
    check_device,
)
from mobilesam_ros.core.errors import InvalidInputError, MobileSamError
from mobilesam_ros.core.settings import DepthSettings
from mobilesam_ros.core.stream.pipeline import StreamSettings

NODE_NAME = "mobilesam"


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: bool | int | float | str
    description: str
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    dynamic: bool = False  # changeable while the node runs


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "checkpoint",
        "",
        "Path of mobile_sam.pt; empty downloads the official checkpoint once into cache_dir.",
    ),
    ParameterSpec("backend", "auto", "Inference runtime.", choices=BACKENDS),
    ParameterSpec(
        "device",
        "auto",
        "Where inference runs: auto, cpu, cuda or cuda:N.",
    ),
    ParameterSpec(
        "precision",
        DEFAULT_PRECISION,
        "Arithmetic of the GPU backends (TensorRT engines, PyTorch on CUDA); layers that lose "
        "accuracy stay FP32.",
        choices=PRECISIONS,
    ),
    ParameterSpec(
        "compile_decoder",
        False,
        "PyTorch on CUDA only: compile the decoder with torch.compile (needs Triton): about 2x "
        "faster decoding, but 10-20 s of compiling the first time each prompt count bucket "
        "(1, 2, 4, 8, 16, ...) comes up.",
    ),
    ParameterSpec(
        "force_rebuild",
        False,
        "Build the TensorRT engines again at start even when valid ones are cached.",
    ),
    ParameterSpec(
        "cache_dir",
        "",
        "Folder for the checkpoint and exported graphs; empty means $XDG_CACHE_HOME/mobilesam_ros.",
    ),
    ParameterSpec(
        "decoder_memory_mb",
        256,
        "Working memory of one decoder call on the CPU path, in MB (about 40 MB per prompt); "
        "more prompts are decoded in several calls of that size, so memory stays flat however "
        "many prompts a frame has.",
        min_value=1,
        max_value=65536,
    ),
    ParameterSpec(
        "mask_threshold",
        0.0,
        "Mask logit above which a pixel belongs to the object (0 = probability 0.5).",
        min_value=-20.0,
        max_value=20.0,
        dynamic=True,
    ),
    ParameterSpec(
        "max_prompts",
        100,
        "Most prompts answered per message; further prompts are dropped and counted.",
        min_value=1,
        max_value=1000,
        dynamic=True,
    ),
    ParameterSpec(
        "sync.policy",
        "exact",
        "How prompts find their image: exact stamp, nearest stamp within sync.max_offset, "
        "or the latest image.",
        choices=SYNC_POLICIES,
        dynamic=True,
    ),
    ParameterSpec(
        "sync.max_offset",
        0.05,
        "Largest stamp difference in seconds that the nearest policy accepts.",
        min_value=0.0,
        max_value=10.0,
        dynamic=True,
    ),
    ParameterSpec(
        "sync.max_wait",
        0.5,
        "Seconds prompts wait for their image before they are dropped and counted.",
        min_value=0.0,
        max_value=10.0,
        dynamic=True,
    ),
    ParameterSpec(
        "sync.cache_size",
        30,
        "Images kept for matching with late prompts (each with its embedding once encoded).",
        min_value=1,
        max_value=300,
    ),
    ParameterSpec(
        "use_compressed",
        False,
        "Subscribe to image/compressed (jpeg, png) instead of image.",
    ),
    ParameterSpec(
        "overlay.alpha",
        0.5,
        "Opacity of the mask colors in the overlay image.",
        min_value=0.0,
        max_value=1.0,
        dynamic=True,
    ),
    ParameterSpec(
        "overlay.scale",
        1.0,
        "Size of the overlay image relative to the camera image (0.5: half width and height, "
        "a quarter of the drawing cost).",
        min_value=0.05,
        max_value=1.0,
        dynamic=True,
    ),
    ParameterSpec(
        "overlay.max_rate",
        0.0,
        "Most overlay images per second (0: one per answered frame); frames in between get no "
        "overlay, counted in /diagnostics.",
        min_value=0.0,
        max_value=1000.0,
        dynamic=True,
    ),
    ParameterSpec(
        "overlay.draw_boxes", True, "Draw prompt boxes in the overlay image.", dynamic=True
    ),
    ParameterSpec(
        "overlay.draw_labels",
        True,
        "Write ids, classes and scores in the overlay image.",
        dynamic=True,
    ),
    ParameterSpec(
        "tracking.enabled",
        True,
        "Follow every instance from frame to frame with a stable id: between detections, each "
        "track is re-segmented on every new frame from its optically propagated box.",
    ),
    ParameterSpec(
        "tracking.max_age",
        1.0,
        "Seconds a detector-started track lives on without a matching detection.",
        min_value=0.05,
        max_value=60.0,
        dynamic=True,
    ),
    ParameterSpec(
        "tracking.prompt_max_age",
        0.0,
        "Seconds a track started by a prompt or click lives on without a new prompt on it "
        "(0: no limit; it ends when the object is lost).",
        min_value=0.0,
        max_value=3600.0,
        dynamic=True,
    ),
    ParameterSpec(
        "tracking.min_iou",
        0.5,
        "Predicted IoU below which a propagated frame counts as bad; 3 in a row end the track "
        "(0: never).",
        min_value=0.0,
        max_value=1.0,
        dynamic=True,
    ),
    ParameterSpec(
        "tracking.iou_match",
        0.3,
        "Least box IoU between a detection and a track's propagated box to refresh that track.",
        min_value=0.01,
        max_value=1.0,
        dynamic=True,
    ),
    ParameterSpec(
        "tracking.margin",
        0.1,
        "Share of a propagated box's size added on each side of its prompt box.",
        min_value=0.0,
        max_value=1.0,
        dynamic=True,
    ),
    ParameterSpec(
        "depth.max_offset",
        0.02,
        "Largest stamp difference in seconds between a color image and the depth image used "
        "for it under sync.policy nearest (exact: equal stamps; latest: the newest depth).",
        min_value=0.0,
        max_value=1.0,
        dynamic=True,
    ),
    ParameterSpec(
        "depth.min",
        0.1,
        "Nearest valid depth in metres; nearer (and zero, NaN) depth is ignored.",
        min_value=0.0,
        max_value=100.0,
        dynamic=True,
    ),
    ParameterSpec(
        "depth.max",
        10.0,
        "Farthest valid depth in metres.",
        min_value=0.01,
        max_value=1000.0,
        dynamic=True,
    ),
    ParameterSpec(
        "depth.erode_px",
        3,
        "Pixels the mask is eroded by before its depth range is taken (keeps edge bleed out).",
        min_value=0,
        max_value=50,
        dynamic=True,
    ),
    ParameterSpec(
        "depth.min_points",
        20,
        "Fewest valid depth points for an instance to get a 3D pose (fewer: counted).",
        min_value=3,
        max_value=100000,
        dynamic=True,
    ),
    ParameterSpec(
        "depth.cloud_stride",
        2,
        "instances_cloud keeps the points on every n-th image row and column.",
        min_value=1,
        max_value=64,
        dynamic=True,
    ),
    ParameterSpec(
        "depth.cloud_rgb", True, "Add the image's colors to instances_cloud.", dynamic=True
    ),
    ParameterSpec(
        "depth.oriented_boxes",
        True,
        "3D boxes oriented along the points' principal axes (false: axis-aligned boxes).",
        dynamic=True,
    ),
    ParameterSpec(
        "diagnostics.stale_after",
        2.0,
        "Seconds without an image after which /diagnostics reports the input as stale (WARN).",
        min_value=0.1,
        max_value=3600.0,
        dynamic=True,
    ),
    ParameterSpec(
        "diagnostics_period",
        1.0,
        "Seconds between /diagnostics messages.",
        min_value=0.1,
        max_value=60.0,
    ),
)


# Parameters that the stream pipeline applies between jobs, by StreamSettings field.
STREAM_SETTINGS = {
    "sync_policy": "sync.policy",
    "sync_max_offset": "sync.max_offset",
    "sync_max_wait": "sync.max_wait",
    "max_prompts": "max_prompts",
    "mask_threshold": "mask_threshold",
    "tracking_max_age": "tracking.max_age",
    "tracking_prompt_max_age": "tracking.prompt_max_age",
    "tracking_min_iou": "tracking.min_iou",
    "tracking_iou_match": "tracking.iou_match",
    "tracking_margin": "tracking.margin",
}


def stream_settings(value_of: Callable[[str], Any]) -> StreamSettings:
    """The pipeline's settings from parameter values (`value_of(name)`)."""
    return StreamSettings(**{field: value_of(name) for field, name in STREAM_SETTINGS.items()})


def check_value(spec: ParameterSpec, value: Any) -> str | None:
    """None if `value` is accepted for `spec`, else the reason, naming the accepted values."""
    if spec.choices and value not in spec.choices:
        return (
            f"parameter {spec.name} = {value!r} is not accepted; "
            f"accepted values: {', '.join(spec.choices)}"
        )
    if spec.min_value is not None and not (spec.min_value <= value <= spec.max_value):
        return (
            f"parameter {spec.name} = {value!r} is out of range "
            f"[{spec.min_value}, {spec.max_value}]"
        )
    if spec.name == "device":
        try:
            check_device(value)
        except InvalidInputError as exc:
            return f"parameter {exc}"
    return None


def change_problem(changes: dict[str, Any], value_of: Callable[[str], Any]) -> str | None:
    """Why a run-time change of parameters (name -> new value) is refused, or None: each value
    against its spec, then the ranges that depend on each other (depth.min < depth.max)."""
    specs = {spec.name: spec for spec in PARAMETERS}
    for name, value in changes.items():
        spec = specs.get(name)
        problem = check_value(spec, value) if spec is not None else None
        if problem:
            return problem
    try:
        DepthSettings(
            min_depth=changes.get("depth.min", value_of("depth.min")),
            max_depth=changes.get("depth.max", value_of("depth.max")),
        )
    except InvalidInputError as exc:
        return f"depth.min/depth.max: {exc}"
    return None


def declare_parameters(node: Any) -> None:
    """Declare every parameter on an rclpy node, with its description and range; raises
    MobileSamError naming the first value (from the command line or a file) that is refused."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    for spec in PARAMETERS:
        descriptor = ParameterDescriptor(description=spec.description, read_only=not spec.dynamic)
        if spec.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
        if spec.min_value is not None and isinstance(spec.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=spec.min_value, to_value=spec.max_value)
            ]
        elif spec.min_value is not None and isinstance(spec.default, int):
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)
            ]
        node.declare_parameter(spec.name, spec.default, descriptor)
        problem = check_value(spec, node.get_parameter(spec.name).value)
        if problem:
            raise MobileSamError(problem)


def parameter(name: str) -> ParameterSpec:
    for spec in PARAMETERS:
        if spec.name == name:
            return spec
    raise KeyError(name)
