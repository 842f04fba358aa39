"""A camera's depth side inputs, matched to its color frames: the last depth images by stamp
(with the node's sync policy) and the newest camera_info. Read from messages, rclpy's or
rosbags'; thread-safe (the node's callbacks add, its publishing thread reads). The node
(ros/outputs_3d) and the bag tools (tools/bag/offline) share it."""

from __future__ import annotations

import threading
from typing import Any

from mobilesam_ros.core.depth import CameraModel, DepthImage
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.stream.failures import FailureLog
from mobilesam_ros.core.stream.frame_sync import StampCache
from mobilesam_ros.messages.readers import camera_from_info, depth_from_message, stamp_to_ns

DEPTH_REJECTED = "depth_images_rejected"
CAMERA_INFO_REJECTED = "camera_info_rejected"
DEPTH_CACHE_SIZE = 30


class DepthMatcher:
    def __init__(self, failures: FailureLog) -> None:
        self._failures = failures
        self._lock = threading.Lock()
        self._depth = StampCache(DEPTH_CACHE_SIZE)
        self._camera: CameraModel | None = None

    def add_depth(self, message: Any) -> None:
        """A sensor_msgs/Image of depth; decoded only when a frame uses it."""
        with self._lock:
            self._depth.add(stamp_to_ns(message.header.stamp), message)

    def add_camera_info(self, message: Any) -> None:
        """A sensor_msgs/CameraInfo; an uncalibrated one is counted and left out."""
        try:
            camera = camera_from_info(message)
        except InvalidInputError as exc:
            self._failures.report(CAMERA_INFO_REJECTED, f"camera_info rejected: {exc}")
            return
        with self._lock:
            self._camera = camera

    def for_frame(
        self, stamp_ns: int, policy: str, max_offset: float
    ) -> tuple[DepthImage | None, CameraModel | None]:
        """(depth image or None, camera model or None) for the color image stamped `stamp_ns`."""
        with self._lock:
            message = self._depth.match(stamp_ns, policy, int(max_offset * 1e9))
            camera = self._camera
        depth = None
        if message is not None:
            try:
                depth = depth_from_message(message)
            except InvalidInputError as exc:
                self._failures.report(DEPTH_REJECTED, f"depth image rejected: {exc}")
        return depth, camera
