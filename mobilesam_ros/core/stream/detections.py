"""Detector boxes as prompts: from the detector's pixel space into the camera image's, and only
the detections worth a mask.

Detectors do not all publish boxes in camera pixels. Isaac ROS Grounding DINO scales the camera
image into its network input keeping the aspect ratio and pads right and below (960x544 by
default) and reports boxes in that input; Isaac ROS YOLOv8 pads on both sides (640x640);
yolo_ros and Isaac ROS RT-DETR's core launch report camera pixels. `DetectionSettings` says
which, and `camera_box` maps a box back (within a pixel of the detectors' integer resize sizes).
Then low scores, other classes and near-duplicates of one object (detectors without their own
suppression send several boxes per object) are left out, each counted.

ROS-free: the node converts messages into `Prompt`s with `from_detector` set; the worker calls
`detection_prompts` once the frame (and so the camera image's size) is known.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.settings import DetectionSettings
from mobilesam_ros.core.stream.boxes import Box, box_iou

# Request sources that carry detections, and whether their boxes are in the pixel space that
# DetectionSettings describes (vision_msgs detections) or always in camera pixels (yolo_ros).
SOURCE_DETECTIONS = "detections"
SOURCE_YOLO = "yolo_detections"
DETECTOR_SOURCES = {SOURCE_DETECTIONS: True, SOURCE_YOLO: False}

# Totals of detections left out (diagnostics keys, "(total)" appended there).
BELOW_MIN_SCORE = "detections below min_score"
OTHER_CLASSES = "detections of classes not in class_filter"
SUPPRESSED = "detections suppressed as duplicates (nms_iou)"


def camera_box(box: Box, image_size: tuple[int, int], settings: DetectionSettings) -> Box:
    """`box` in the detector's pixel space -> pixels of the camera image (height, width)."""
    network = settings.network_size
    if network is None:
        return box
    net_width, net_height = network
    height, width = image_size
    x0, y0, x1, y1 = box
    if settings.letterbox == "none":  # the image was stretched to the network input
        sx, sy = width / net_width, height / net_height
        return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    scale = min(net_width / width, net_height / height)  # camera -> network, aspect kept
    pad_x = pad_y = 0.0
    if settings.letterbox == "center":
        pad_x = (net_width - width * scale) / 2
        pad_y = (net_height - height * scale) / 2
    return (
        (x0 - pad_x) / scale,
        (y0 - pad_y) / scale,
        (x1 - pad_x) / scale,
        (y1 - pad_y) / scale,
    )


def detection_prompts(
    prompts: Sequence[Prompt],
    image_size: tuple[int, int],
    settings: DetectionSettings,
    left_out: Counter[str],
    network_space: bool = True,
) -> list[Prompt]:
    """The detections to segment, in camera pixels and in their message order; those left out
    are counted in `left_out` by reason. Without `network_space` the boxes are camera pixels
    whatever `settings.input_size` says."""
    classes = settings.classes
    kept: list[Prompt] = []
    for prompt in prompts:
        if prompt.detection_score < settings.min_score:
            left_out[BELOW_MIN_SCORE] += 1
        elif classes and prompt.class_id not in classes:
            left_out[OTHER_CLASSES] += 1
        else:
            if network_space and prompt.box is not None:
                prompt = prompt.with_box(camera_box(prompt.box, image_size, settings))
            kept.append(prompt)
    return _suppress_duplicates(kept, settings.nms_iou, left_out)


def _suppress_duplicates(
    prompts: list[Prompt], threshold: float, left_out: Counter[str]
) -> list[Prompt]:
    """Greedy non-maximum suppression within each class: by descending score, a box that
    overlaps a kept one of its class by more than `threshold` box IoU is left out."""
    if threshold >= 1.0 or len(prompts) < 2:
        return prompts
    order = sorted(range(len(prompts)), key=lambda i: -prompts[i].detection_score)
    kept: list[int] = []
    for index in order:
        prompt = prompts[index]
        duplicate = prompt.box is not None and any(
            prompts[other].class_id == prompt.class_id
            and prompts[other].box is not None
            and box_iou(prompts[other].box, prompt.box) > threshold
            for other in kept
        )
        if duplicate:
            left_out[SUPPRESSED] += 1
        else:
            kept.append(index)
    return [prompts[i] for i in sorted(kept)]
