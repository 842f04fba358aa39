"""Messages -> the core's types: image buffers, depth, intrinsics, prompts, masks.

Duck-typed on the fields of the ROS messages (rclpy's messages or rosbags' dataclasses alike):
a uint8[] `data` field may be bytes, array.array or a numpy uint8 array. No inference, no
threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mobilesam_ros.core.depth import CameraModel, DepthImage
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.image_codec import (
    DecodedImage,
    decode_compressed_image,
    decode_raw_image,
)
from mobilesam_ros.core.prompts import Prompt


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def decode_image_message(message: Any) -> DecodedImage:
    """sensor_msgs/Image or CompressedImage -> pixels and channel order (a view where possible).

    A raw Image is told apart by its `encoding` field (CompressedImage has `format` instead)."""
    if hasattr(message, "encoding"):
        return decode_raw_image(*_buffer_fields(message))
    return decode_compressed_image(message.data)


def depth_from_message(message: Any) -> DepthImage:
    """sensor_msgs/Image (16UC1 or mono16 in mm, 32FC1 in m) -> DepthImage (a view, no copy)."""
    return DepthImage.from_buffer(*_buffer_fields(message))


def _buffer_fields(image: Any) -> tuple[Any, int, int, int, str, bool]:
    """A sensor_msgs/Image's data, height, width, step, encoding and is_bigendian: the arguments
    of decode_raw_image and DepthImage.from_buffer."""
    return (
        image.data,
        image.height,
        image.width,
        image.step,
        image.encoding,
        bool(image.is_bigendian),
    )


def camera_from_info(message: Any) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel (its k and size; distortion is not applied)."""
    k = [float(v) for v in message.k]
    if k[0] <= 0 or k[4] <= 0:
        raise InvalidInputError(
            f"camera_info k has fx={k[0]}, fy={k[4]}: not calibrated (fx and fy must be > 0)"
        )
    return CameraModel.from_k(k, int(message.width), int(message.height))


def prompts_from_prompt_array(message: Any) -> list[Prompt]:
    prompts = []
    for index, prompt in enumerate(message.prompts):
        prompts.append(
            Prompt(
                id=prompt.id or str(index),
                box=tuple(float(v) for v in prompt.box) if prompt.has_box else None,
                points=tuple((float(p.x), float(p.y)) for p in prompt.points),
                point_labels=tuple(int(v) for v in prompt.point_labels),
            )
        )
    return prompts


def _best_hypothesis(detection: Any) -> tuple[str, float]:
    best_id, best_score = "", 0.0
    for result in detection.results:  # vision_msgs 4.x (Humble on): ObjectHypothesisWithPose
        class_id, score = result.hypothesis.class_id, float(result.hypothesis.score)
        if not best_id or score > best_score:
            best_id, best_score = str(class_id), score
    return best_id, best_score


def prompts_from_detections(message: Any) -> list[Prompt]:
    """One box prompt per vision_msgs/Detection2D, carrying its id, class and score; boxes in
    the detector's pixel space (the worker maps them, see core/stream/detections.py). A
    detection without an id gets "d<index>" (Isaac ROS decoders leave ids empty)."""
    prompts = []
    for index, detection in enumerate(message.detections):
        position = detection.bbox.center.position  # vision_msgs 4.x: Pose2D.position
        class_id, score = _best_hypothesis(detection)
        prompts.append(
            _detection_prompt(
                detection.id,
                index,
                (position.x, position.y, detection.bbox.size_x, detection.bbox.size_y),
                class_id,
                score,
                detection,
            )
        )
    return prompts


def prompts_from_yolo_detections(message: Any) -> list[Prompt]:
    """One box prompt per yolo_msgs/Detection (yolo_ros; boxes in camera pixels): its tracking
    id (empty without yolo_ros's tracker: "d<index>" then), class name and score."""
    return [
        _detection_prompt(
            detection.id,
            index,
            (
                detection.bbox.center.position.x,
                detection.bbox.center.position.y,
                detection.bbox.size.x,
                detection.bbox.size.y,
            ),
            detection.class_name,
            detection.score,
            detection,
        )
        for index, detection in enumerate(message.detections)
    ]


def _detection_prompt(
    detection_id: str,
    index: int,
    center_size: tuple[float, float, float, float],
    class_id: str,
    score: float,
    source: Any,
) -> Prompt:
    cx, cy, width, height = (float(v) for v in center_size)
    return Prompt(
        id=detection_id or f"d{index}",
        box=(cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2),
        class_id=str(class_id),
        detection_score=float(score),
        source=source,
        from_detector=True,
        generated_id=not detection_id,
    )


def prompt_from_click(point: Any, index: int) -> Prompt:
    """A clicked geometry_msgs/Point in image pixels -> one foreground point prompt."""
    x, y = float(point.x), float(point.y)
    return Prompt(id=f"click_{index}", points=((x, y),), point_labels=(1,))


def instance_full_mask(instance: Any, height: int, width: int) -> np.ndarray:
    """An InstanceMask (roi-cropped mono8) -> the (height, width) bool mask of the whole image."""
    full = np.zeros((height, width), bool)
    roi = instance.roi
    if roi.width and roi.height:
        crop = np.frombuffer(bytes(instance.mask.data), np.uint8)
        crop = crop.reshape(roi.height, instance.mask.step)[:, : roi.width]
        full[roi.y_offset : roi.y_offset + roi.height, roi.x_offset : roi.x_offset + roi.width] = (
            crop > 0
        )
    return full
