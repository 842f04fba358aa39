"""3D outputs from registered depth: detections_3d, instances_cloud, markers (lazy, optional).

Depth images and camera_info arrive on their own topics (`DepthInputs`); each answered frame
takes the depth image matched to its stamp with the node's sync policy and the newest
camera_info. Missing or unusable inputs are counted; the 2D outputs never wait for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from mobilesam_ros.core.stream.failures import FailureLog
from mobilesam_ros.core.stream.result_images import lift_result
from mobilesam_ros.core.stream.stream import FrameResult
from mobilesam_ros.messages.builders import MarkerTracker, detections_3d, instances_cloud_message
from mobilesam_ros.messages.depth_inputs import DepthMatcher
from mobilesam_ros.ros.conversions import ROS_TYPES


def publisher_calls(node: Node) -> tuple[Callable[..., Any], Callable[[Any], Any]]:
    """How outputs are created and destroyed on `node`: a lifecycle node's publishers publish
    only while it is active (and are dropped from its managed entities when destroyed)."""
    if isinstance(node, LifecycleNode):
        return node.create_lifecycle_publisher, node.destroy_lifecycle_publisher
    return node.create_publisher, node.destroy_publisher


class DepthInputs:
    """depth and camera_info subscriptions; written by callbacks, read by the publishing thread."""

    def __init__(self, node: Node, failures: FailureLog, prefix: str = "") -> None:
        self._node = node
        self._prefix = prefix  # before the topic names: a camera's "front/"
        self._matcher = DepthMatcher(failures)
        self.seen = False  # any depth image or camera_info so far: a depth camera is wired
        self._subscriptions: list[Any] = []

    def subscribe(self) -> None:
        node = self._node
        self._subscriptions = [
            node.create_subscription(
                Image, self._prefix + "depth", self._on_depth, qos_profile_sensor_data
            ),
            node.create_subscription(
                CameraInfo,
                self._prefix + "camera_info",
                self._on_camera_info,
                qos_profile_sensor_data,
            ),
        ]

    def _on_depth(self, message: Image) -> None:
        self.seen = True
        self._matcher.add_depth(message)

    def _on_camera_info(self, message: CameraInfo) -> None:
        self.seen = True
        self._matcher.add_camera_info(message)

    def for_frame(self, stamp_ns: int, policy: str, max_offset: float) -> tuple[Any, Any]:
        """(depth image or None, camera model or None) for the color image stamped `stamp_ns`."""
        return self._matcher.for_frame(stamp_ns, policy, max_offset)

    def unsubscribe(self) -> None:
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions = []


class Outputs3D:
    def __init__(
        self,
        node: Node,
        depth_inputs: DepthInputs,
        failures: FailureLog,
        prefix: str = "",
    ) -> None:
        self._node = node
        self._inputs = depth_inputs
        self._failures = failures
        self._markers = MarkerTracker(ROS_TYPES)
        self._said_no_depth = False
        create, self._destroy = publisher_calls(node)
        self.cloud = create(PointCloud2, prefix + "instances_cloud", 2)
        self.markers = create(MarkerArray, prefix + "markers", 2)
        self.detections = None
        if ROS_TYPES.detection_3d_array is not None:  # optional: vision_msgs
            self.detections = create(ROS_TYPES.detection_3d_array, prefix + "detections_3d", 2)
        else:
            node.get_logger().info("vision_msgs not installed: no detections_3d output")

    def _all(self) -> list[Any]:
        return [p for p in (self.detections, self.cloud, self.markers) if p is not None]

    def anyone_listening(self) -> bool:
        return any(p.get_subscription_count() > 0 for p in self._all())

    def publish(self, result: FrameResult, header: Any, captions: Sequence[str]) -> int:
        if not self.anyone_listening():
            return 0
        if not self._inputs.seen:
            # No depth camera wired (rviz shows the 3D displays by default): nothing to lift,
            # nothing lost; said once.
            if not self._said_no_depth:
                self._said_no_depth = True
                self._node.get_logger().info(
                    "3D outputs are subscribed, but no depth image or camera_info has arrived "
                    "(topics depth and camera_info): no 3D results until they do"
                )
            return 0
        settings = result.settings.depth
        depth, camera = self._inputs.for_frame(
            result.frame.stamp_ns, result.settings.sync.policy, settings.max_offset
        )
        lifted = lift_result(result, depth, camera)
        for reason, count in lifted.counts.items():
            self._failures.report(reason, f"{count} instance(s) without 3D pose: {reason}", count)
        oriented = settings.oriented_boxes
        published = 0
        if self.detections is not None and self.detections.get_subscription_count():
            self.detections.publish(
                detections_3d(ROS_TYPES, header, result.instances, lifted.instances, oriented)
            )
            published += 1
        if self.cloud.get_subscription_count():
            rgb = result.decoded.to_bgr()[..., ::-1] if settings.cloud_rgb else None
            stride = settings.cloud_stride
            self.cloud.publish(
                instances_cloud_message(ROS_TYPES, header, lifted.instances, stride, rgb)
            )
            published += 1
        if self.markers.get_subscription_count():
            self.markers.publish(
                self._markers.markers(
                    header, result.instances, lifted.instances, captions, oriented
                )
            )
            published += 1
        return published

    def destroy(self) -> None:
        for publisher in self._all():
            self._destroy(publisher)
