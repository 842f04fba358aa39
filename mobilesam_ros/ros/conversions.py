"""ROS messages <-> the core's arrays and prompts. No inference, no threads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sensor_msgs.msg import Image, RegionOfInterest

from mobilesam_ros.core.processing.image_codec import (
    DecodedImage,
    decode_compressed_image,
    decode_raw_image,
)
from mobilesam_ros.core.prompts import Prompt, PromptMask
from mobilesam_ros.msg import InstanceMask, InstanceMaskArray


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def decode_image_message(message: Any) -> DecodedImage:
    """sensor_msgs/Image or CompressedImage -> pixels and channel order (a view where possible)."""
    if isinstance(message, Image):
        return decode_raw_image(
            message.data,
            message.height,
            message.width,
            message.step,
            message.encoding,
            bool(message.is_bigendian),
        )
    return decode_compressed_image(message.data)


def image_message(header: Any, pixels: np.ndarray, encoding: str) -> Image:
    """An Image message holding `pixels` (HxW or HxWxC, uint8 or uint16), with `header`."""
    pixels = np.ascontiguousarray(pixels)
    message = Image()
    message.header = header
    message.height, message.width = int(pixels.shape[0]), int(pixels.shape[1])
    message.encoding = encoding
    message.is_bigendian = 0
    message.step = int(pixels.strides[0])
    message.data = pixels.tobytes()
    return message


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


def instance_mask_array(
    header: Any, results: Sequence[PromptMask], image_size: tuple[int, int]
) -> InstanceMaskArray:
    """InstanceMaskArray with roi-cropped mono8 masks (255 = object), in the results' order;
    `image_size` is the source image's (height, width)."""
    array = InstanceMaskArray()
    array.header = header
    array.height, array.width = (int(v) for v in image_size)
    instances = []
    for label, result in enumerate(results, start=1):
        instance = InstanceMask()
        instance.label = label
        instance.id = result.prompt.id
        instance.track_id = result.track_id
        instance.origin = result.origin
        instance.class_id = result.prompt.class_id
        instance.detection_score = float(result.prompt.detection_score)
        instance.predicted_iou = float(result.predicted_iou)
        instance.mask.header = header
        instance.mask.encoding = "mono8"
        crop = result.crop
        if not crop.empty:
            height, width = crop.mask.shape
            instance.roi = RegionOfInterest(
                x_offset=crop.x0, y_offset=crop.y0, width=width, height=height
            )
            instance.mask = image_message(header, crop.mask.view(np.uint8) * np.uint8(255), "mono8")
        instances.append(instance)
    array.instances = instances
    return array


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


def refined_detections(header: Any, results: Sequence[PromptMask], detection_types: Any) -> Any:
    """Detection2DArray with mask-tight boxes and the source detections' hypotheses; id: the
    instance's identity (track id with tracking, else the prompt's or detection's id; the
    source detection's own id is masks' InstanceMask.id of the same position)."""
    array_type, detection_type, hypothesis_type = detection_types
    array = array_type()
    array.header = header
    detections = []
    for result in results:
        prompt = result.prompt
        detection = detection_type()
        detection.header = header
        detection.id = result.track_id or prompt.id
        if prompt.source is not None and hasattr(prompt.source, "results"):  # vision_msgs
            detection.results = list(prompt.source.results)
        elif prompt.class_id:  # another detector's class and score (yolo_ros)
            hypothesis = hypothesis_type()
            hypothesis.hypothesis.class_id = prompt.class_id
            hypothesis.hypothesis.score = float(prompt.detection_score)
            detection.results = [hypothesis]
        box = result.crop.box
        if box is not None:
            x0, y0, x1, y1 = box
            position = detection.bbox.center.position
            # Box of pixel edges: the mask covers [x0, x1 + 1) x [y0, y1 + 1).
            position.x, position.y = (x0 + x1 + 1) / 2.0, (y0 + y1 + 1) / 2.0
            detection.bbox.size_x, detection.bbox.size_y = float(x1 - x0 + 1), float(y1 - y0 + 1)
        detections.append(detection)
    array.detections = detections
    return array
