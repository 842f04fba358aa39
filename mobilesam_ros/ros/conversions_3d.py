"""ROS messages <-> the core's depth lifting (core/depth/): inputs and the 3D outputs.

Inputs: sensor_msgs/Image depth (16UC1 mm, 32FC1 m) and sensor_msgs/CameraInfo.
Outputs: vision_msgs/Detection3DArray (when vision_msgs is installed: `vision_msgs_3d()`),
sensor_msgs/PointCloud2 (xyz, instance label, optional rgb) and visualization_msgs/MarkerArray.
Every output's header is the color image's; poses are in its optical frame. Instances without a
3D result (None) are left out of every output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from mobilesam_ros.core.depth import CameraModel, DepthImage, Instance3D, instances_cloud
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.prompts import PromptMask
from mobilesam_ros.core.visualize import instance_color


def depth_from_message(message: Image) -> DepthImage:
    """sensor_msgs/Image (16UC1 or mono16 in mm, 32FC1 in m) -> DepthImage (a view, no copy)."""
    return DepthImage.from_buffer(
        message.data,
        message.height,
        message.width,
        message.step,
        message.encoding,
        bool(message.is_bigendian),
    )


def camera_from_info(message: CameraInfo) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel (its k and size; distortion is not applied)."""
    k = [float(v) for v in message.k]
    if k[0] <= 0 or k[4] <= 0:
        raise InvalidInputError(
            f"camera_info k has fx={k[0]}, fy={k[4]}: not calibrated (fx and fy must be > 0)"
        )
    return CameraModel.from_k(k, int(message.width), int(message.height))


@dataclass(frozen=True)
class VisionMsgs3D:
    """The vision_msgs types that detections_3d needs."""

    detection_array: type
    detection: type
    hypothesis_with_pose: type
    hypothesis: type


def vision_msgs_3d() -> VisionMsgs3D | None:
    """The vision_msgs 4.x 3D detection types, or None when vision_msgs is not installed."""
    try:
        from vision_msgs.msg import (
            Detection3D,
            Detection3DArray,
            ObjectHypothesis,
            ObjectHypothesisWithPose,
        )
    except ImportError:
        return None
    return VisionMsgs3D(Detection3DArray, Detection3D, ObjectHypothesisWithPose, ObjectHypothesis)


def _pose(center: np.ndarray, quaternion: tuple[float, float, float, float]) -> Pose:
    x, y, z, w = quaternion
    return Pose(
        position=Point(x=float(center[0]), y=float(center[1]), z=float(center[2])),
        orientation=Quaternion(x=x, y=y, z=z, w=w),
    )


def _box(instance: Instance3D, oriented: bool) -> tuple[Pose, Vector3]:
    """Center pose and size of the oriented box, or of the axis-aligned one."""
    if oriented:
        center, size, quaternion = instance.obb_center, instance.obb_size, instance.obb_quaternion
    else:
        center, size, quaternion = instance.aabb_center, instance.aabb_size, (0.0, 0.0, 0.0, 1.0)
    return _pose(center, quaternion), Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2]))


def _hypotheses(result: PromptMask) -> list[tuple[str, float]]:
    """(class id, score) pairs: the source detection's, else the prompt's own class if any."""
    source = result.prompt.source
    if source is not None and getattr(source, "results", None):
        return [(str(r.hypothesis.class_id), float(r.hypothesis.score)) for r in source.results]
    if result.prompt.class_id:
        return [(result.prompt.class_id, float(result.prompt.detection_score))]
    return []


def detections_3d(
    header: Any,
    results: Sequence[PromptMask],
    instances: Sequence[Instance3D | None],
    types: VisionMsgs3D,
    oriented: bool = True,
) -> Any:
    """Detection3DArray: one Detection3D per instance with a 3D result.

    id: the track id when tracking is on, else the prompt's or detection's id;
    results: the source detection's class hypotheses (else the prompt's class) with the pose of
    the points' centroid, oriented like the box; bbox: the oriented box (or the axis-aligned one).
    """
    array = types.detection_array()
    array.header = header
    detections = []
    for result, instance in zip(results, instances, strict=True):
        if instance is None:
            continue
        detection = types.detection()
        detection.header = header
        detection.id = result.track_id or result.prompt.id
        detection.bbox.center, detection.bbox.size = _box(instance, oriented)
        quaternion = instance.obb_quaternion if oriented else (0.0, 0.0, 0.0, 1.0)
        centroid_pose = _pose(instance.centroid, quaternion)
        hypotheses = []
        for class_id, score in _hypotheses(result):
            hypothesis = types.hypothesis_with_pose()
            hypothesis.hypothesis = types.hypothesis(class_id=class_id, score=score)
            hypothesis.pose.pose = centroid_pose
            hypotheses.append(hypothesis)
        detection.results = hypotheses
        detections.append(detection)
    array.detections = detections
    return array


def _fields(with_rgb: bool) -> list[PointField]:
    fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="label", offset=12, datatype=PointField.UINT32, count=1),
    ]
    if with_rgb:
        # rviz reads `rgb` as FLOAT32 holding the bytes 0x00RRGGBB.
        fields.append(PointField(name="rgb", offset=16, datatype=PointField.FLOAT32, count=1))
    return fields


def instances_cloud_message(
    header: Any,
    instances: Sequence[Instance3D | None],
    stride: int = 1,
    rgb: np.ndarray | None = None,
) -> PointCloud2:
    """PointCloud2 (unordered, height 1) of every instance's points: x, y, z (float32), label
    (uint32: i + 1 for instances[i], as in mask_image) and, with `rgb` (H, W, 3 in R, G, B
    order), rgb. Points on every `stride`-th image row and column."""
    cloud = instances_cloud(instances, stride, rgb)
    message = PointCloud2()
    message.header = header
    message.height, message.width = 1, int(cloud.shape[0])
    message.fields = _fields(rgb is not None)
    message.is_bigendian = False
    message.point_step = cloud.dtype.itemsize
    message.row_step = message.point_step * message.width
    message.is_dense = True
    message.data = cloud.tobytes()
    return message


BOX_NAMESPACE = "boxes"
LABEL_NAMESPACE = "labels"


class MarkerTracker:
    """Builds MarkerArrays of boxes and text labels; deletes the markers of ended instances.

    Each instance id keeps one marker id while it is present; when it is gone from a frame, its
    box and label get DELETE markers in that frame's array and its marker id is released.
    """

    def __init__(self, box_alpha: float = 0.4, text_height: float = 0.06) -> None:
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
    ) -> MarkerArray:
        """Boxes and labels in the overlay's colors (instance_color of the result's index).

        captions[i] labels results[i] (default: the prompt id and class). Repeated instance ids
        in one frame get the marker of their first occurrence only.
        """
        markers = []
        present: set[str] = set()
        for index, (result, instance) in enumerate(zip(results, instances, strict=True)):
            instance_id = result.track_id or result.prompt.id or str(index)
            if instance is None or instance_id in present:
                continue
            present.add(instance_id)
            marker_id = self._marker_id(instance_id)
            blue, green, red = instance_color(index)
            color = ColorRGBA(r=red / 255.0, g=green / 255.0, b=blue / 255.0, a=self._box_alpha)
            box = Marker(header=header, ns=BOX_NAMESPACE, id=marker_id)
            box.type, box.action = Marker.CUBE, Marker.ADD
            box.pose, box.scale = _box(instance, oriented)
            box.color = color
            markers.append(box)
            label = Marker(header=header, ns=LABEL_NAMESPACE, id=marker_id)
            label.type, label.action = Marker.TEXT_VIEW_FACING, Marker.ADD
            top = instance.aabb_center - np.array([0.0, instance.aabb_size[1] / 2 + 0.05, 0.0])
            label.pose = _pose(top, (0.0, 0.0, 0.0, 1.0))
            label.scale.z = self._text_height
            label.color = ColorRGBA(r=color.r, g=color.g, b=color.b, a=1.0)
            if captions is not None and index < len(captions):
                label.text = captions[index]
            else:
                label.text = " ".join(x for x in (instance_id, result.prompt.class_id) if x)
            markers.append(label)
        for instance_id in [i for i in self._marker_ids if i not in present]:
            marker_id = self._marker_ids.pop(instance_id)
            for namespace in (BOX_NAMESPACE, LABEL_NAMESPACE):
                markers.append(
                    Marker(header=header, ns=namespace, id=marker_id, action=Marker.DELETE)
                )
        return MarkerArray(markers=markers)
