"""The ROS layer in one process, for tests: the node's runtime on a real rclpy node and a
client node, spun by one executor, with the box-filling stand-in of doubles.py as the model (a
prompt's mask is its box, so every expected mask is known).

Needs the install space's environment (test/run_ros_tests.py): the generated messages import.
"""

from __future__ import annotations

import time

import numpy as np
import rclpy
import vision_msgs.msg as vision_msgs
from diagnostic_msgs.msg import DiagnosticArray
from doubles import BoxSegmenterDouble
from mobilesam_ros.msg import InstanceMaskArray, Prompt, PromptArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mobilesam_ros.messages.builders import image_message
from mobilesam_ros.ros.conversions import ROS_TYPES
from mobilesam_ros.ros.runtime import SegmentationRuntime

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
BOXES = [(10, 20, 110, 140), (150, 30, 300, 200)]


class World:
    """The node under test and a client, spun together."""

    def __init__(self, image: np.ndarray, namespace: str = "/inproc", **parameters) -> None:
        """`parameters`: node parameter values by name, e.g. {"tracking.enabled": False}."""
        self.image = image
        self.node = rclpy.create_node(
            "mobilesam",
            namespace=namespace,
            parameter_overrides=[Parameter(n, value=v) for n, v in parameters.items()],
        )
        self.runtime = SegmentationRuntime(self.node)
        self.runtime.create_outputs()
        self.runtime.start()
        self.segmenter = BoxSegmenterDouble()
        self.runtime.pipeline.attach(self.segmenter)
        self.client = rclpy.create_node("inproc_client", namespace=namespace)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        self.received: dict[str, list] = {}
        for name, kind in (
            ("masks", InstanceMaskArray),
            ("mask_image", Image),
            ("overlay", Image),
            ("detections_refined", vision_msgs.Detection2DArray),
        ):
            self.received[name] = []
            self.client.create_subscription(kind, name, self.received[name].append, RELIABLE)
        self.received["diagnostics"] = []
        self.client.create_subscription(
            DiagnosticArray, "/diagnostics", self.received["diagnostics"].append, RELIABLE
        )
        best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.images = self.client.create_publisher(Image, "image", best_effort)
        self.prompts = self.client.create_publisher(PromptArray, "prompts", RELIABLE)
        self.detections = self.client.create_publisher(
            vision_msgs.Detection2DArray, "detections", RELIABLE
        )
        self.spin_until(lambda: self.images.get_subscription_count(), "the node's subscriptions")

    def spin_until(self, condition, what: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
            value = condition()
            if value:
                return value
        raise AssertionError(f"timed out waiting for {what}")

    def frame(self, seconds: int) -> Header:
        header = Header(frame_id="camera")
        header.stamp.sec = seconds
        message = image_message(ROS_TYPES, header, self.image, "rgb8")
        # Best effort: a frame sent before the subscription matched is lost, so send until the
        # node counts it.
        received = self.runtime.pipeline.totals()["images received"]
        self.spin_until(
            lambda: (
                self.images.publish(message)
                or self.runtime.pipeline.totals()["images received"] > received
            ),
            "the node to receive a frame",
        )
        return header

    def answer(self, header: Header, boxes=BOXES) -> InstanceMaskArray:
        self.prompts.publish(
            PromptArray(
                header=header,
                prompts=[
                    Prompt(id=f"p{i}", has_box=True, box=[float(v) for v in box])
                    for i, box in enumerate(boxes)
                ],
            )
        )
        ids = {f"p{i}" for i in range(len(boxes))}
        # With tracking, a frame may be answered for its live tracks before the prompts arrive.
        # Only masks that arrive from now on: a module's tests share a world, and an earlier
        # test may have had its answer for the same stamp and ids.
        earlier = len(self.received["masks"])
        return self.spin_until(
            lambda: next(
                (
                    m
                    for m in self.received["masks"][earlier:]
                    if m.header == header and {i.id for i in m.instances} >= ids
                ),
                None,
            ),
            "masks",
        )

    def close(self) -> None:
        self.runtime.stop()
        self.runtime.close()
        self.executor.shutdown()
        self.client.destroy_node()
        self.node.destroy_node()
