"""Instance masks lifted into 3D with a registered depth image (no ROS).

Frame: the color camera's optical frame (x right, y down, z forward), metres. Lens distortion is
not modelled: use rectified images.

- `camera`: the pinhole model and its scaling to another image size.
- `images`: depth images as received (16UC1, mono16, 32FC1) and their depth in metres.
- `lifting`: `lift_instances`, masks to points (depth range, flying pixels, erosion).
- `depth_range`: one instance's depth range from its mask's depths.
- `boxes3d`: centroids, axis-aligned and oriented boxes; rotations as quaternions.
- `instances`: the results (`Instance3D`, `LiftResult`) and the counters of missing ones.
- `cloud`: the instances' points packed as point cloud records.
"""

from mobilesam_ros.core.depth.boxes3d import rotation_to_quaternion
from mobilesam_ros.core.depth.camera import CameraModel
from mobilesam_ros.core.depth.cloud import CLOUD_DTYPE, CLOUD_RGB_DTYPE, instances_cloud
from mobilesam_ros.core.depth.images import DepthImage
from mobilesam_ros.core.depth.instances import (
    CAMERA_INFO_MISSING,
    CAMERA_INFO_SIZE_MISMATCH,
    DEPTH_MISSING,
    DEPTH_SIZE_MISMATCH,
    EMPTY_MASK,
    TOO_FEW_DEPTH_POINTS,
    Instance3D,
    LiftResult,
)
from mobilesam_ros.core.depth.lifting import lift_instances

__all__ = [
    "CAMERA_INFO_MISSING",
    "CAMERA_INFO_SIZE_MISMATCH",
    "CLOUD_DTYPE",
    "CLOUD_RGB_DTYPE",
    "DEPTH_MISSING",
    "DEPTH_SIZE_MISMATCH",
    "EMPTY_MASK",
    "TOO_FEW_DEPTH_POINTS",
    "CameraModel",
    "DepthImage",
    "Instance3D",
    "LiftResult",
    "instances_cloud",
    "lift_instances",
    "rotation_to_quaternion",
]
