"""The node's subscriptions: messages converted to frames and prompt requests, never blocking."""

from __future__ import annotations

import time
from typing import Any

from geometry_msgs.msg import Point, PointStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from mobilesam_ros.core import InvalidInputError
from mobilesam_ros.core.processing.image_codec import check_raw_image
from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.settings import InputSettings
from mobilesam_ros.core.stream.detections import SOURCE_DETECTIONS, SOURCE_YOLO
from mobilesam_ros.core.stream.failures import IMAGES_REJECTED, FailureLog
from mobilesam_ros.core.stream.frame_sync import Frame, PromptRequest
from mobilesam_ros.core.stream.pipeline import StreamPipeline
from mobilesam_ros.messages import readers
from mobilesam_ros.msg import PromptArray
from mobilesam_ros.ros.conversions import ROS_TYPES
from mobilesam_ros.ros.diagnostics import StageStats

try:  # optional: yolo_ros's messages, when installed
    from yolo_msgs.msg import DetectionArray as YoloDetectionArray
except ImportError:  # pragma: no cover - depends on the install
    YoloDetectionArray = None

CLICKS_IN_OTHER_FRAME = "clicks_in_another_frame"


class InputSubscriptions:
    """image (or image/compressed), prompts, detections (vision_msgs), yolo_detections
    (yolo_msgs, when installed), clicked_pixel_stamped, clicked_pixel.

    Images: sensor-data QoS, depth 1 (the newest frame wins), overridable by qos_overrides.
    """

    def __init__(
        self,
        node: Node,
        pipeline: StreamPipeline,
        failures: FailureLog,
        stats: StageStats,
        settings: InputSettings,
        stream: str = "",
    ) -> None:
        """stream: the camera's name ("" for the node's single camera); its topics are under
        <stream>/ then."""
        self._node = node
        self._stream = stream
        self._pipeline = pipeline
        self._failures = failures
        self._stats = stats
        self.last_image: float | None = None  # monotonic seconds
        self._image_frame_id = ""
        self._clicks = 0
        image_qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
        options = QoSOverridingOptions.with_default_policies()
        prefix = f"{stream}/" if stream else ""
        image_type, image_topic = Image, prefix + "image"
        if settings.use_compressed:
            image_type, image_topic = CompressedImage, prefix + "image/compressed"
        self._subscriptions = [
            node.create_subscription(
                image_type, image_topic, self._on_image, image_qos, qos_overriding_options=options
            ),
            node.create_subscription(PromptArray, prefix + "prompts", self._on_prompts, 10),
            node.create_subscription(
                PointStamped, prefix + "clicked_pixel_stamped", self._on_click, 10
            ),
            node.create_subscription(Point, prefix + "clicked_pixel", self._on_clicked_pixel, 10),
        ]
        if ROS_TYPES.detection_2d_array is not None:  # optional: vision_msgs
            self._subscriptions.append(
                node.create_subscription(
                    ROS_TYPES.detection_2d_array, prefix + "detections", self._on_detections, 10
                )
            )
        else:
            node.get_logger().info("vision_msgs not installed: no detections input")
        if YoloDetectionArray is not None:  # yolo_ros publishes its own message type
            self._subscriptions.append(
                node.create_subscription(
                    YoloDetectionArray, prefix + "yolo_detections", self._on_yolo_detections, 10
                )
            )

    def destroy(self) -> None:
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions = []

    def _on_image(self, message: Image | CompressedImage) -> None:
        now = time.monotonic()
        self.last_image = now
        self._image_frame_id = message.header.frame_id
        self._stats.count("images_in")
        if isinstance(message, Image):
            try:
                check_raw_image(
                    len(message.data), message.height, message.width, message.step, message.encoding
                )
            except InvalidInputError as exc:
                self._failures.report(IMAGES_REJECTED, f"image rejected: {exc}")
                return
        stamp_ns = readers.stamp_to_ns(message.header.stamp)
        frame = Frame(stamp_ns, message.header.frame_id, message, now)
        self._pipeline.add_frame(frame, self._stream)

    def _enqueue(self, header: Any, prompts: list[Prompt], source: str) -> None:
        self._stats.count("prompt_messages_in")
        stamp_ns = readers.stamp_to_ns(header.stamp) if header is not None else 0
        frame_id = header.frame_id if header is not None else ""
        request = PromptRequest(stamp_ns, frame_id, prompts, time.monotonic(), source)
        self._pipeline.add_request(request, self._stream)

    def _on_prompts(self, message: PromptArray) -> None:
        self._enqueue(message.header, readers.prompts_from_prompt_array(message), "prompts")

    def _on_detections(self, message: Any) -> None:
        prompts = readers.prompts_from_detections(message)
        self._enqueue(message.header, prompts, SOURCE_DETECTIONS)

    def _on_yolo_detections(self, message: Any) -> None:
        prompts = readers.prompts_from_yolo_detections(message)
        self._enqueue(message.header, prompts, SOURCE_YOLO)

    def _on_click(self, message: PointStamped) -> None:
        frame_id = message.header.frame_id
        if frame_id and self._image_frame_id and frame_id != self._image_frame_id:
            self._failures.report(
                CLICKS_IN_OTHER_FRAME,
                f"clicked_pixel_stamped in frame {frame_id!r}, not the image's "
                f"{self._image_frame_id!r}: "
                "it holds no pixel coordinates (rviz's Publish Point tool sends metres); "
                "click in rqt_image_view, which publishes clicked_pixel",
            )
            return
        self._clicks += 1
        self._enqueue(
            message.header, [readers.prompt_from_click(message.point, self._clicks)], "clicks"
        )

    def _on_clicked_pixel(self, message: Point) -> None:
        """rqt_image_view's clicks: pixels of the image it shows, no stamp (newest frame)."""
        self._clicks += 1
        self._enqueue(None, [readers.prompt_from_click(message, self._clicks)], "clicks")
