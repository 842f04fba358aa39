"""The node's published outputs: built lazily (only those with subscribers), image header kept."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from mobilesam_ros.core.prompts import captions
from mobilesam_ros.core.stream.detections import DETECTOR_SOURCES
from mobilesam_ros.core.stream.stream import FrameResult
from mobilesam_ros.core.visualize import draw_label_overlay, label_image_from_crops
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
        tracking: bool,
        outputs_3d: Outputs3D | None = None,
        prefix: str = "",
    ) -> None:
        """prefix: put before every topic name (a camera's "front/")."""
        self._node = node
        self._tracking = tracking
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
            labels = self._labels(result)
            encoding = "mono8" if labels.dtype.itemsize == 1 else "mono16"
            self.mask_image.publish(image_message(ROS_TYPES, header, labels, encoding))
            published += 1
        overlay = result.settings.overlay
        if self.overlay.get_subscription_count() > 0 and self._overlay_due(overlay.max_rate):
            labels = self._labels(result) if labels is None else labels
            self.overlay.publish(self._overlay_message(header, result, labels))
            published += 1
        # Without tracking, refined detections answer detection messages only (not clicks).
        refined_wanted = self._tracking or bool(DETECTOR_SOURCES.keys() & set(result.sources))
        if self.refined is not None and refined_wanted and self.refined.get_subscription_count():
            self.refined.publish(refined_detections(ROS_TYPES, header, result.instances))
            published += 1
        if self._outputs_3d is not None:
            published += self._outputs_3d.publish(result, header, captions(result.instances))
        return published

    @staticmethod
    def _labels(result: FrameResult) -> np.ndarray:
        """Label image from the masks' crops: i + 1 = instances[i], the higher score on top."""
        return label_image_from_crops(
            [r.crop for r in result.instances],
            [r.predicted_iou for r in result.instances],
            result.frame.embedding.original_size,
        )

    def _overlay_due(self, max_rate: float) -> bool:
        """overlay.max_rate: skip drawing (counted) when the last overlay is too recent."""
        now = time.monotonic()
        if max_rate > 0 and now - self._last_overlay < 1.0 / max_rate:
            self.overlays_skipped += 1
            return False
        self._last_overlay = now
        return True

    def _overlay_message(self, header: Any, result: FrameResult, labels: np.ndarray) -> Image:
        instances = result.instances
        settings = result.settings.overlay
        boxes = [r.prompt.box for r in instances] if settings.draw_boxes else None
        overlay = draw_label_overlay(
            result.decoded.to_bgr(),
            labels,
            boxes,
            captions(instances) if settings.draw_labels else None,
            alpha=settings.alpha,
            scale=settings.scale,
            mask_boxes=[r.crop.box for r in instances],
        )
        return image_message(ROS_TYPES, header, overlay, "bgr8")

    def destroy(self) -> None:
        for publisher in self._all():
            self._destroy(publisher)
        if self._outputs_3d is not None:
            self._outputs_3d.destroy()
