"""A stream result's pictures and 3D lifting, as the node publishes them and the bag tools
record them."""

from __future__ import annotations

import numpy as np

from mobilesam_ros.core.depth import CameraModel, DepthImage, lift_instances
from mobilesam_ros.core.depth.instances import LiftResult
from mobilesam_ros.core.prompts import captions
from mobilesam_ros.core.stream.detections import DETECTOR_SOURCES
from mobilesam_ros.core.stream.stream import FrameResult
from mobilesam_ros.core.visualize import draw_label_overlay, label_image_from_crops


def label_image(result: FrameResult) -> np.ndarray:
    """mask_image: i + 1 = instances[i], 0 background; the higher predicted IoU on top."""
    return label_image_from_crops(
        [r.crop for r in result.instances],
        [r.predicted_iou for r in result.instances],
        result.decoded.pixels.shape[:2],
    )


def label_encoding(labels: np.ndarray) -> str:
    return "mono8" if labels.dtype.itemsize == 1 else "mono16"


def overlay_image(result: FrameResult, labels: np.ndarray) -> np.ndarray:
    """overlay: the image (BGR) with the masks, boxes and captions the result's settings ask."""
    instances = result.instances
    settings = result.settings.overlay
    boxes = [r.prompt.box for r in instances] if settings.draw_boxes else None
    return draw_label_overlay(
        result.decoded.to_bgr(),
        labels,
        boxes,
        captions(instances) if settings.draw_labels else None,
        alpha=settings.alpha,
        scale=settings.scale,
        mask_boxes=[r.crop.box for r in instances],
    )


def refined_detections_wanted(result: FrameResult) -> bool:
    """detections_refined answers detector messages; with tracking, every frame (tracks)."""
    if result.everything:
        return False
    return result.settings.tracking.enabled or bool(DETECTOR_SOURCES.keys() & set(result.sources))


def lift_result(
    result: FrameResult, depth: DepthImage | None, camera: CameraModel | None
) -> LiftResult:
    """The result's instances in 3D with its depth settings (None where they cannot be)."""
    return lift_instances(
        [r.crop for r in result.instances],
        depth,
        camera,
        result.settings.depth,
        image_size=result.decoded.pixels.shape[:2],
    )
