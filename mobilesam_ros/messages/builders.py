"""The core's results -> the node's output messages, built from the message classes given.

The classes come in a `MessageTypes`: rclpy's in the node (`ros/conversions.ROS_TYPES`),
rosbags' in the bag tools. Each is called with no arguments or with keyword fields, and its
constants (`PointField.FLOAT32`, `Marker.CUBE`) are read from it; the fields of a message made
with no arguments hold their defaults, nested messages included.

2D: sensor_msgs/Image, InstanceMaskArray, vision_msgs/Detection2DArray. 3D (core/depth/):
vision_msgs/Detection3DArray, sensor_msgs/PointCloud2 (xyz, instance label, optional rgb) and
visualization_msgs/MarkerArray. Every output's header is the color image's; 3D poses are in its
optical frame. Instances without a 3D result (None) are left out of every 3D output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mobilesam_ros.core.depth import Instance3D, instances_cloud
from mobilesam_ros.core.prompts import PromptMask
from mobilesam_ros.core.visualize import instance_color

MessageClass = Callable[..., Any]


@dataclass(frozen=True, kw_only=True)
class MessageTypes:
    """The message classes the builders construct, and how a uint8[] field is filled.

    The vision_msgs classes are None where vision_msgs is not installed: the node then has no
    detections_refined and no detections_3d output.
    """

    image: MessageClass  # sensor_msgs/Image
    region_of_interest: MessageClass  # sensor_msgs/RegionOfInterest
    instance_mask: MessageClass  # mobilesam_ros/InstanceMask
    instance_mask_array: MessageClass  # mobilesam_ros/InstanceMaskArray
    point_cloud2: MessageClass  # sensor_msgs/PointCloud2
    point_field: MessageClass  # sensor_msgs/PointField
    pose: MessageClass  # geometry_msgs/Pose
    point: MessageClass  # geometry_msgs/Point
    quaternion: MessageClass  # geometry_msgs/Quaternion
    vector3: MessageClass  # geometry_msgs/Vector3
    color_rgba: MessageClass  # std_msgs/ColorRGBA
    marker: MessageClass  # visualization_msgs/Marker
    marker_array: MessageClass  # visualization_msgs/MarkerArray
    # A C-contiguous array (any dtype) -> the value of a uint8[] field holding its bytes.
    byte_data: Callable[[np.ndarray], Any]
    # vision_msgs 4.x (Humble on); ObjectHypothesisWithPose serves the 2D and the 3D ones.
    detection_2d_array: MessageClass | None = None
    detection_2d: MessageClass | None = None
    hypothesis_with_pose: MessageClass | None = None
    detection_3d_array: MessageClass | None = None
    detection_3d: MessageClass | None = None
    object_hypothesis: MessageClass | None = None


def image_message(types: MessageTypes, header: Any, pixels: np.ndarray, encoding: str) -> Any:
    """An Image message holding `pixels` (HxW or HxWxC, uint8 or uint16), with `header`."""
    pixels = np.ascontiguousarray(pixels)
    message = types.image()
    message.header = header
    message.height, message.width = int(pixels.shape[0]), int(pixels.shape[1])
    message.encoding = encoding
    message.is_bigendian = 0
    message.step = int(pixels.strides[0])
    message.data = types.byte_data(pixels)
    return message


def instance_mask_array(
    types: MessageTypes,
    header: Any,
    results: Sequence[PromptMask],
    image_size: tuple[int, int],
) -> Any:
    """InstanceMaskArray with roi-cropped mono8 masks (255 = object), in the results' order;
    `image_size` is the source image's (height, width)."""
    array = types.instance_mask_array()
    array.header = header
    array.height, array.width = (int(v) for v in image_size)
    instances = []
    for label, result in enumerate(results, start=1):
        instance = types.instance_mask()
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
            instance.roi = types.region_of_interest(
                x_offset=crop.x0, y_offset=crop.y0, width=width, height=height
            )
            mask = crop.mask.view(np.uint8) * np.uint8(255)
            instance.mask = image_message(types, header, mask, "mono8")
        instances.append(instance)
    array.instances = instances
    return array


def refined_detections(types: MessageTypes, header: Any, results: Sequence[PromptMask]) -> Any:
    """Detection2DArray with mask-tight boxes and the source detections' hypotheses; id: the
    instance's identity (track id with tracking, else the prompt's or detection's id; the
    source detection's own id is masks' InstanceMask.id of the same position). Needs the
    vision_msgs 2D classes in `types`."""
    array = types.detection_2d_array()
    array.header = header
    detections = []
    for result in results:
        prompt = result.prompt
        detection = types.detection_2d()
        detection.header = header
        detection.id = result.track_id or prompt.id
        if prompt.source is not None and hasattr(prompt.source, "results"):  # vision_msgs
            detection.results = list(prompt.source.results)
        elif prompt.class_id:  # another detector's class and score (yolo_ros)
            hypothesis = types.hypothesis_with_pose()
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


def _pose(
    types: MessageTypes, center: np.ndarray, quaternion: tuple[float, float, float, float]
) -> Any:
    x, y, z, w = quaternion
    return types.pose(
        position=types.point(x=float(center[0]), y=float(center[1]), z=float(center[2])),
        orientation=types.quaternion(x=x, y=y, z=z, w=w),
    )


def _box(types: MessageTypes, instance: Instance3D, oriented: bool) -> tuple[Any, Any]:
    """Center pose and size of the oriented box, or of the axis-aligned one."""
    if oriented:
        center, size, quaternion = instance.obb_center, instance.obb_size, instance.obb_quaternion
    else:
        center, size, quaternion = instance.aabb_center, instance.aabb_size, (0.0, 0.0, 0.0, 1.0)
    scale = types.vector3(x=float(size[0]), y=float(size[1]), z=float(size[2]))
    return _pose(types, center, quaternion), scale


def _hypotheses(result: PromptMask) -> list[tuple[str, float]]:
    """(class id, score) pairs: the source detection's, else the prompt's own class if any."""
    source = result.prompt.source
    if source is not None and getattr(source, "results", None):
        return [(str(r.hypothesis.class_id), float(r.hypothesis.score)) for r in source.results]
    if result.prompt.class_id:
        return [(result.prompt.class_id, float(result.prompt.detection_score))]
    return []


def detections_3d(
    types: MessageTypes,
    header: Any,
    results: Sequence[PromptMask],
    instances: Sequence[Instance3D | None],
    oriented: bool = True,
) -> Any:
    """Detection3DArray: one Detection3D per instance with a 3D result (needs the vision_msgs
    3D classes in `types`).

    id: the track id when tracking is on, else the prompt's or detection's id;
    results: the source detection's class hypotheses (else the prompt's class) with the pose of
    the points' centroid, oriented like the box; bbox: the oriented box (or the axis-aligned one).
    """
    array = types.detection_3d_array()
    array.header = header
    detections = []
    for result, instance in zip(results, instances, strict=True):
        if instance is None:
            continue
        detection = types.detection_3d()
        detection.header = header
        detection.id = result.track_id or result.prompt.id
        detection.bbox.center, detection.bbox.size = _box(types, instance, oriented)
        quaternion = instance.obb_quaternion if oriented else (0.0, 0.0, 0.0, 1.0)
        centroid_pose = _pose(types, instance.centroid, quaternion)
        hypotheses = []
        for class_id, score in _hypotheses(result):
            hypothesis = types.hypothesis_with_pose()
            hypothesis.hypothesis = types.object_hypothesis(class_id=class_id, score=score)
            hypothesis.pose.pose = centroid_pose
            hypotheses.append(hypothesis)
        detection.results = hypotheses
        detections.append(detection)
    array.detections = detections
    return array


def _fields(types: MessageTypes, with_rgb: bool) -> list[Any]:
    point_field = types.point_field
    float32, uint32 = point_field.FLOAT32, point_field.UINT32
    fields = [
        point_field(name="x", offset=0, datatype=float32, count=1),
        point_field(name="y", offset=4, datatype=float32, count=1),
        point_field(name="z", offset=8, datatype=float32, count=1),
        point_field(name="label", offset=12, datatype=uint32, count=1),
    ]
    if with_rgb:
        # rviz reads `rgb` as FLOAT32 holding the bytes 0x00RRGGBB.
        fields.append(point_field(name="rgb", offset=16, datatype=float32, count=1))
    return fields


def instances_cloud_message(
    types: MessageTypes,
    header: Any,
    instances: Sequence[Instance3D | None],
    stride: int = 1,
    rgb: np.ndarray | None = None,
) -> Any:
    """PointCloud2 (unordered, height 1) of every instance's points: x, y, z (float32), label
    (uint32: i + 1 for instances[i], as in mask_image) and, with `rgb` (H, W, 3 in R, G, B
    order), rgb. Points on every `stride`-th image row and column."""
    cloud = instances_cloud(instances, stride, rgb)
    message = types.point_cloud2()
    message.header = header
    message.height, message.width = 1, int(cloud.shape[0])
    message.fields = _fields(types, rgb is not None)
    message.is_bigendian = False
    message.point_step = cloud.dtype.itemsize
    message.row_step = message.point_step * message.width
    message.is_dense = True
    message.data = types.byte_data(cloud)
    return message


BOX_NAMESPACE = "boxes"
LABEL_NAMESPACE = "labels"


class MarkerTracker:
    """Builds MarkerArrays of boxes and text labels; deletes the markers of ended instances.

    Each instance id keeps one marker id while it is present; when it is gone from a frame, its
    box and label get DELETE markers in that frame's array and its marker id is released.
    """

    def __init__(
        self, types: MessageTypes, box_alpha: float = 0.4, text_height: float = 0.06
    ) -> None:
        self._types = types
        self._box_alpha = box_alpha
        self._text_height = text_height
        self._marker_ids: dict[str, int] = {}
        self._next_marker_id = 0

    def _marker_id(self, instance_id: str) -> int:
        marker_id = self._marker_ids.get(instance_id)
        if marker_id is None:
            marker_id = self._next_marker_id
            self._next_marker_id += 1
            self._marker_ids[instance_id] = marker_id
        return marker_id

    def markers(
        self,
        header: Any,
        results: Sequence[PromptMask],
        instances: Sequence[Instance3D | None],
        captions: Sequence[str] | None = None,
        oriented: bool = True,
    ) -> Any:
        """MarkerArray of boxes and labels in the overlay's colors (instance_color of the
        result's index).

        captions[i] labels results[i] (default: the prompt id and class). Repeated instance ids
        in one frame get the marker of their first occurrence only.
        """
        types = self._types
        marker_type, color_type = types.marker, types.color_rgba
        markers = []
        present: set[str] = set()
        for index, (result, instance) in enumerate(zip(results, instances, strict=True)):
            instance_id = result.track_id or result.prompt.id or str(index)
            if instance is None or instance_id in present:
                continue
            present.add(instance_id)
            marker_id = self._marker_id(instance_id)
            blue, green, red = instance_color(index)
            color = color_type(r=red / 255.0, g=green / 255.0, b=blue / 255.0, a=self._box_alpha)
            box = marker_type(header=header, ns=BOX_NAMESPACE, id=marker_id)
            box.type, box.action = marker_type.CUBE, marker_type.ADD
            box.pose, box.scale = _box(types, instance, oriented)
            box.color = color
            markers.append(box)
            label = marker_type(header=header, ns=LABEL_NAMESPACE, id=marker_id)
            label.type, label.action = marker_type.TEXT_VIEW_FACING, marker_type.ADD
            top = instance.aabb_center - np.array([0.0, instance.aabb_size[1] / 2 + 0.05, 0.0])
            label.pose = _pose(types, top, (0.0, 0.0, 0.0, 1.0))
            label.scale.z = self._text_height
            label.color = color_type(r=color.r, g=color.g, b=color.b, a=1.0)
            if captions is not None and index < len(captions):
                label.text = captions[index]
            else:
                label.text = " ".join(x for x in (instance_id, result.prompt.class_id) if x)
            markers.append(label)
        for instance_id in [i for i in self._marker_ids if i not in present]:
            marker_id = self._marker_ids.pop(instance_id)
            for namespace in (BOX_NAMESPACE, LABEL_NAMESPACE):
                markers.append(
                    marker_type(
                        header=header, ns=namespace, id=marker_id, action=marker_type.DELETE
                    )
                )
        return types.marker_array(markers=markers)
