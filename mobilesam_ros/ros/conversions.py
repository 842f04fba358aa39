"""The node's message classes for the builders of mobilesam_ros/messages (`ROS_TYPES`).

vision_msgs is optional: without it the node has no detections input and no
detections_refined or detections_3d output, and those classes are None.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from mobilesam_ros.messages.builders import MessageTypes
from mobilesam_ros.msg import InstanceMask, InstanceMaskArray


def _vision_msgs() -> dict[str, Any]:
    """The vision_msgs 4.x detection classes by MessageTypes field; none when not installed."""
    try:
        from vision_msgs.msg import (
            Detection2D,
            Detection2DArray,
            Detection3D,
            Detection3DArray,
            ObjectHypothesis,
            ObjectHypothesisWithPose,
        )
    except ImportError:  # pragma: no cover - depends on the install
        return {}
    return {
        "detection_2d_array": Detection2DArray,
        "detection_2d": Detection2D,
        "hypothesis_with_pose": ObjectHypothesisWithPose,
        "detection_3d_array": Detection3DArray,
        "detection_3d": Detection3D,
        "object_hypothesis": ObjectHypothesis,
    }


ROS_TYPES = MessageTypes(
    image=Image,
    region_of_interest=RegionOfInterest,
    instance_mask=InstanceMask,
    instance_mask_array=InstanceMaskArray,
    point_cloud2=PointCloud2,
    point_field=PointField,
    pose=Pose,
    point=Point,
    quaternion=Quaternion,
    vector3=Vector3,
    color_rgba=ColorRGBA,
    marker=Marker,
    marker_array=MarkerArray,
    # The array's bytes, as the node has always set rclpy's uint8[] fields.
    byte_data=np.ndarray.tobytes,
    **_vision_msgs(),
)
