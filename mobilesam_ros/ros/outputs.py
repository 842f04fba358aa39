"""The node's published outputs: built lazily (only those with subscribers), image header kept."""

from __future__ import annotations

import time
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from mobilesam_ros.core.prompts import captions
from mobilesam_ros.core.stream.result_images import (
    label_encoding,
    label_image,
    overlay_image,
    refined_detections_wanted,
)
from mobilesam_ros.core.stream.stream import FrameResult
from mobilesam_ros.messages.builders import image_message, instance_mask_array, refined_detections
from mobilesam_ros.msg import InstanceMaskArray
from mobilesam_ros.ros.conversions import ROS_TYPES
from mobilesam_ros.ros.outputs_3d import Outputs3D, publisher_calls

OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)


class OutputPublishers:
    """masks, mask_image, overlay and detections_refined of one node, drawn with the settings
    each frame's result carries (run-time changes apply from the frame after them)."""

    def __init__(
        self,
        node: Node,
        outputs_3d: Outputs3D | None = None,
        prefix: str = "",
    ) -> None:
        """prefix: put before every topic name (a camera's "front/")."""
        self._node = node
        self._last_overlay = -float("inf")
        self.overlays_skipped = 0  # by overlay.max_rate
        self._outputs_3d = outputs_3d
        create, self._destroy = publisher_calls(node)
        self.masks = create(InstanceMaskArray, prefix + "masks", OUTPUT_QOS)
        self.mask_image = create(Image, prefix + "mask_image", OUTPUT_QOS)
        self.overlay = create(Image, prefix + "overlay", OUTPUT_QOS)
        self.refined = None
        if ROS_TYPES.detection_2d_array is not None:  # optional: vision_msgs
            self.refined = create(
                ROS_TYPES.detection_2d_array, prefix + "detections_refined", OUTPUT_QOS
            )
        else:
            node.get_logger().info("vision_msgs not installed: no detections_refined output")

    def _all(self) -> list[Any]:
        return [p for p in (self.masks, self.mask_image, self.overlay, self.refined) if p]

    def anyone_listening(self) -> bool:
        if self._outputs_3d is not None and self._outputs_3d.anyone_listening():
            return True
        return any(p.get_subscription_count() > 0 for p in self._all())

    def publish(self, result: FrameResult) -> int:
        """Build and publish every output that has a subscriber; returns how many."""
        header = result.frame.payload.header
        published = 0
        labels = None  # the label image, shared by mask_image and overlay
        if self.masks.get_subscription_count() > 0:
            size = result.decoded.pixels.shape[:2]
            self.masks.publish(instance_mask_array(ROS_TYPES, header, result.instances, size))
            published += 1
        if self.mask_image.get_subscription_count() > 0:
            labels = label_image(result)
            self.mask_image.publish(
                image_message(ROS_TYPES, header, labels, label_encoding(labels))
            )
            published += 1
        overlay = result.settings.overlay
        if self.overlay.get_subscription_count() > 0 and self._overlay_due(overlay.max_rate):
            labels = label_image(result) if labels is None else labels
            overlay_pixels = overlay_image(result, labels)
            self.overlay.publish(image_message(ROS_TYPES, header, overlay_pixels, "bgr8"))
            published += 1
        wanted = refined_detections_wanted(result)
        if self.refined is not None and wanted and self.refined.get_subscription_count():
            self.refined.publish(refined_detections(ROS_TYPES, header, result.instances))
            published += 1
        if self._outputs_3d is not None:
            published += self._outputs_3d.publish(result, header, captions(result.instances))
        return published

    def _overlay_due(self, max_rate: float) -> bool:
        """overlay.max_rate: skip drawing (counted) when the last overlay is too recent."""
        now = time.monotonic()
        if max_rate > 0 and now - self._last_overlay < 1.0 / max_rate:
            self.overlays_skipped += 1
            return False
        self._last_overlay = now
        return True

    def destroy(self) -> None:
        for publisher in self._all():
            self._destroy(publisher)
        if self._outputs_3d is not None:
            self._outputs_3d.destroy()
