"""Host-side cost of one camera frame, without the model: the old full-frame path against the
cropped path that the node takes, per stage, at several frame sizes and mask counts.

Stages: decode the bgr8 image buffer (`decode_raw_image`), pre-process (resize + normalize),
post-process (low-res logits -> masks), label image, crops (each mask cut to its box), their
mono8 payloads (what the masks message carries), overlay, and, where the ROS messages import,
building the label image and overlay messages.
Old path (its drawing kept in this module as the baseline): `masks_from_logits` ->
`label_image` -> `mask_box` + crop of each full mask -> `draw_overlay`. New path:
`mask_crops_from_logits` -> `label_image_from_crops` -> the crops as they are ->
`draw_label_overlay` on the label image (scale 1, and the `--overlay-scale` one).

The logits are synthetic (no model runs): "small" masks are discs of 4-8 low-res cells radius
(25-50 pixels across at 640x480), "large" ones smooth random fields covering 60-97% of the
frame, like the masks of random weights.
Prints medians and p99 in milliseconds and the old/new ratio of each stage.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from benchmarks.common import cpu_name
from mobilesam_ros.core.model.constants import LOW_RES_SIZE
from mobilesam_ros.core.processing.image_codec import decode_raw_image
from mobilesam_ros.core.processing.postprocess import (
    MaskCrop,
    mask_box,
    mask_crops_from_logits,
    masks_from_logits,
)
from mobilesam_ros.core.processing.preprocess import FrameGeometry, ImagePreprocessor
from mobilesam_ros.core.visualize import (
    draw_label_overlay,
    instance_color,
    label_image_from_crops,
)
from mobilesam_ros.messages.builders import MessageTypes, image_message

SIZES = ((480, 640), (720, 1280), (1080, 1920))
COUNTS = (1, 10, 50)
KINDS = ("small", "large")


def synthetic_logits(kind: str, count: int, geometry: FrameGeometry, seed: int = 0) -> np.ndarray:
    """(count, 256, 256) float32 mask logits of `kind` "small" or "large" for `geometry`."""
    rng = np.random.default_rng(seed)
    # Low-res cells that cover the image (the rest is the model's padding).
    rows_kept, cols_kept = (-(-side // 4) for side in geometry.input_size)
    if kind == "small":
        rows, cols = np.mgrid[0:LOW_RES_SIZE, 0:LOW_RES_SIZE]
        centers = rng.uniform(8, [rows_kept - 8, cols_kept - 8], (count, 2))
        radii = rng.uniform(4, 8, count)
        return np.stack(
            [
                (r - np.hypot(rows - cy, cols - cx))
                for (cy, cx), r in zip(centers, radii, strict=True)
            ]
        ).astype(np.float32)
    if kind == "large":
        logits = []
        for _ in range(count):
            field = rng.standard_normal((6, 6)).astype(np.float32)
            field = cv2.resize(field, (LOW_RES_SIZE, LOW_RES_SIZE), interpolation=cv2.INTER_CUBIC)
            # Shift so that 60-97% of the image's cells are above 0.
            kept = field[:rows_kept, :cols_kept]
            logits.append(field - np.quantile(kept, 1.0 - rng.uniform(0.6, 0.97)))
        return np.stack(logits).astype(np.float32)
    raise ValueError(f"kind must be small or large, got {kind!r}")


# The old full-frame path, the baseline of the old/new ratios (the package draws from crops).


def label_image(
    masks: list[np.ndarray] | np.ndarray, scores: np.ndarray | None = None
) -> np.ndarray:
    """N bool (H, W) masks -> (H, W) labels: 0 background, i + 1 for masks[i]; where masks
    overlap, the higher score wins (without scores, the later mask)."""
    labels = np.zeros(masks[0].shape, dtype=np.uint8 if len(masks) <= 255 else np.uint16)
    order = np.argsort(scores, kind="stable") if scores is not None else range(len(masks))
    for index in order:
        labels[masks[index]] = index + 1
    return labels


def draw_overlay(
    bgr: np.ndarray,
    masks: list[np.ndarray] | np.ndarray,
    boxes: list[tuple[float, float, float, float] | None],
    captions: list[str],
    alpha: float = 0.5,
) -> np.ndarray:
    """Each mask's color blended into a copy of `bgr` in one pass (later masks win), its outline
    traced inside its bounding box, its box and caption drawn."""
    out = bgr.copy()
    colors = np.zeros_like(out)
    covered = np.zeros(out.shape[:2], dtype=bool)
    bounds = []
    for index, mask in enumerate(masks):
        colors[mask] = instance_color(index)
        covered |= mask
        bounds.append(mask_box(mask))
    if any(b is not None for b in bounds):
        blended = cv2.addWeighted(out, 1.0 - alpha, colors, alpha, 0.0)
        np.copyto(out, blended, where=covered[..., None])
    for index, (mask, bound) in enumerate(zip(masks, bounds, strict=True)):
        color = instance_color(index)
        anchor = None
        if bound is not None:
            x0, y0, x1, y1 = bound
            crop = np.ascontiguousarray(mask[y0 : y1 + 1, x0 : x1 + 1], dtype=np.uint8)
            contours, _ = cv2.findContours(
                crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
            )
            cv2.drawContours(out, contours, -1, color, 2)
            anchor = (x0, max(y0 - 6, 12))
        box = boxes[index] if index < len(boxes) else None
        if box is not None:
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
            anchor = (x0, max(y0 - 6, 12))
        if index < len(captions) and anchor is not None:
            cv2.putText(out, captions[index], anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3)
            cv2.putText(out, captions[index], anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)
    return out


def camera_frame(height: int, width: int) -> bytes:
    """A bgr8 image buffer as a camera driver publishes it (a photo, resized)."""
    try:
        from skimage import data

        rgb = data.astronaut()
    except ImportError:  # any texture will do for timing
        rgb = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    bgr = cv2.resize(rgb[..., ::-1], (width, height), interpolation=cv2.INTER_AREA)
    return bgr.tobytes()


def prompt_boxes(crops: list[MaskCrop]) -> list[tuple[float, float, float, float] | None]:
    """Boxes around each mask, as a detector would give them."""
    return [None if c.box is None else tuple(float(v) for v in c.box) for c in crops]


@dataclass
class Stage:
    name: str
    old: Callable[[], object] | None
    new: Callable[[], object] | None


def _samples(fn: Callable[[], object], repeats: int, budget_s: float) -> np.ndarray:
    """`repeats` timed runs after one warm-up, fewer (at least 5) past `budget_s` seconds."""
    fn()  # warm-up (allocations, OpenCV dispatch)
    times = []
    deadline = time.perf_counter() + budget_s
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
        if len(times) >= 5 and started > deadline:
            break
    return np.array(times) * 1e3


def _ros_messages() -> MessageTypes | None:
    """The node's message classes if the ROS messages import here, else None."""
    try:
        from mobilesam_ros.ros.conversions import ROS_TYPES
    except ImportError:
        return None
    return ROS_TYPES


def run_case(
    size: tuple[int, int],
    count: int,
    kind: str,
    repeats: int,
    budget_s: float,
    overlay_scale: float,
    ros_types: MessageTypes | None,
) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    height, width = size
    buffer = camera_frame(height, width)
    geometry = FrameGeometry.for_image(height, width)
    logits = synthetic_logits(kind, count, geometry)
    scores = np.random.default_rng(1).uniform(0.5, 1.0, count).astype(np.float32)
    preprocess = ImagePreprocessor()
    raw_fields = (buffer, height, width, width * 3, "bgr8")  # sensor_msgs/Image fields
    decoded = decode_raw_image(*raw_fields)
    bgr = decoded.to_bgr()
    masks = masks_from_logits(logits, geometry)
    crops = mask_crops_from_logits(logits, geometry)
    labels = label_image_from_crops(crops, scores)
    boxes = prompt_boxes(crops)
    mask_boxes = [c.box for c in crops]
    captions = [f"obj{i} {s:.2f}" for i, s in enumerate(scores)]

    def old_crops():
        out = []
        for mask in masks:
            box = mask_box(mask)
            if box is not None:
                x0, y0, x1, y1 = box
                out.append(mask[y0 : y1 + 1, x0 : x1 + 1])
        return out

    def mono8_payloads():  # what the masks message carries: 255 = object
        return [c.mask.view(np.uint8) * np.uint8(255) for c in crops if not c.empty]

    stages = [
        Stage("decode image buffer", lambda: decode_raw_image(*raw_fields), None),
        Stage("pre-process", lambda: preprocess(decoded.pixels, "bgr"), None),
        Stage(
            "post-process",
            lambda: masks_from_logits(logits, geometry),
            lambda: mask_crops_from_logits(logits, geometry),
        ),
        Stage(
            "label image",
            lambda: label_image(masks, scores),
            lambda: label_image_from_crops(crops, scores),
        ),
        # The new path's post-process already returns the crops.
        Stage("crops", old_crops, lambda: [c.mask for c in crops]),
        Stage("mono8 payload of the crops", mono8_payloads, mono8_payloads),
        Stage(
            "overlay",
            lambda: draw_overlay(bgr, masks, boxes, captions),
            lambda: draw_label_overlay(bgr, labels, boxes, captions, mask_boxes=mask_boxes),
        ),
    ]
    if overlay_scale != 1.0:
        stages.append(
            Stage(
                f"overlay at scale {overlay_scale:g}",
                None,
                lambda: draw_label_overlay(
                    bgr, labels, boxes, captions, scale=overlay_scale, mask_boxes=mask_boxes
                ),
            )
        )
    if ros_types is not None:
        from std_msgs.msg import Header

        header = Header()
        overlay = draw_label_overlay(bgr, labels, boxes, captions, mask_boxes=mask_boxes)
        stages.append(
            Stage(
                "messages: label image + overlay",
                None,
                lambda: (
                    image_message(ros_types, header, labels, "mono8"),
                    image_message(ros_types, header, overlay, "bgr8"),
                ),
            )
        )
    rows = []
    for stage in stages:
        old = _samples(stage.old, repeats, budget_s) if stage.old is not None else None
        new = _samples(stage.new, repeats, budget_s) if stage.new is not None else None
        rows.append((stage.name, old, new))
    return rows


def _figure(samples: np.ndarray | None) -> str:
    if samples is None:
        return "-"
    runs = f" ({samples.size} runs)" if samples.size < 20 else ""
    return f"{np.median(samples):.2f} / {np.percentile(samples, 99):.2f}{runs}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per stage")
    parser.add_argument(
        "--budget-s", type=float, default=3.0, help="stop a stage's runs after this (min 5 runs)"
    )
    parser.add_argument("--sizes", default="640x480,1280x720,1920x1080", help="WxH list")
    parser.add_argument("--counts", default="1,10,50", help="masks per frame")
    parser.add_argument("--kinds", default="small,large", help="small, large or both")
    parser.add_argument("--overlay-scale", type=float, default=0.5, help="extra scaled overlay")
    parser.add_argument("--threads", type=int, default=-1, help="cv2.setNumThreads (-1: default)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads >= 0:
        cv2.setNumThreads(args.threads)
    sizes = []
    for text in args.sizes.split(","):
        try:
            width, height = (int(v) for v in text.lower().split("x"))
        except ValueError:
            parser.error(f"--sizes takes WxH items such as 640x480, got {text!r}")
        sizes.append((height, width))
    counts = [int(v) for v in args.counts.split(",")]
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind not in KINDS:
            parser.error(f"--kinds takes small and/or large, got {kind!r}")
    ros_types = _ros_messages()
    print(
        f"host: {cpu_name()}, {os.cpu_count()} logical CPUs; Python "
        f"{platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__} "
        f"(threads {cv2.getNumThreads()}, IPP {'on' if cv2.ipp.useIPP() else 'off'}); "
        f"{args.repeats} runs per stage, median / p99 in ms"
    )
    if ros_types is None:
        print("ROS messages not importable here: message building is not timed")
    for height, width in sizes:
        for count in counts:
            for kind in kinds:
                print(f"\n{width}x{height}, {count} {kind} masks")
                print("| stage | old path | new path | old/new (medians) |")
                print("| --- | ---: | ---: | ---: |")
                for name, old, new in run_case(
                    (height, width),
                    count,
                    kind,
                    args.repeats,
                    args.budget_s,
                    args.overlay_scale,
                    ros_types,
                ):
                    ratio = "-"
                    if old is not None and new is not None:
                        ratio = f"{np.median(old) / np.median(new):.1f}x"
                    print(f"| {name} | {_figure(old)} | {_figure(new)} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
