"""One node, two cameras (parameter cameras): each camera's topics under its name, answered with
its own headers and track ids; a camera that stops is reported stale on its own while the other
goes on. A real rclpy node with the node's runtime, and a client node, over DDS in one process;
the model is the box-filling stand-in of doubles.py.
"""

from __future__ import annotations

import time

import pytest
from helpers import photo

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from doubles import BoxSegmenterDouble  # noqa: E402
from mobilesam_ros.msg import InstanceMaskArray, Prompt, PromptArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mobilesam_ros.messages.builders import image_message  # noqa: E402
from mobilesam_ros.ros.conversions import ROS_TYPES  # noqa: E402
from mobilesam_ros.ros.runtime import SegmentationRuntime  # noqa: E402

CAMERAS = ("front", "left")
IMAGE = photo("astronaut")[:240, :320]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


class TwoCameras:
    def __init__(self) -> None:
        overrides = [
            Parameter("cameras", value=list(CAMERAS)),
            Parameter("tracking.enabled", value=True),
            Parameter("diagnostics.stale_after", value=1.0),
            Parameter("diagnostics_period", value=0.2),
        ]
        self.node = rclpy.create_node(
            "mobilesam", namespace="/robot", parameter_overrides=overrides
        )
        self.runtime = SegmentationRuntime(self.node)
        self.runtime.create_outputs()
        self.runtime.start()
        self.runtime.pipeline.attach(BoxSegmenterDouble())
        self.client = rclpy.create_node("client", namespace="/robot")
        self.executor = SingleThreadedExecutor()
        for node in (self.node, self.client):
            self.executor.add_node(node)
        self.masks = {camera: [] for camera in CAMERAS}
        self.images, self.prompts = {}, {}
        for camera in CAMERAS:
            self.client.create_subscription(
                InstanceMaskArray, f"{camera}/masks", self.masks[camera].append, RELIABLE
            )
            self.images[camera] = self.client.create_publisher(
                Image, f"{camera}/image", BEST_EFFORT
            )
            self.prompts[camera] = self.client.create_publisher(
                PromptArray, f"{camera}/prompts", RELIABLE
            )
        self.diagnostics: list[DiagnosticArray] = []
        self.client.create_subscription(
            DiagnosticArray, "/diagnostics", self.diagnostics.append, RELIABLE
        )
        self.spin_until(
            lambda: all(p.get_subscription_count() for p in self.images.values()), "subscriptions"
        )

    def spin_until(self, condition, what: str, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
            value = condition()
            if value:
                return value
        raise AssertionError(f"timed out waiting for {what}")

    def frame(self, camera: str, seconds: int) -> Header:
        header = Header(frame_id=f"{camera}_optical")
        header.stamp.sec = seconds
        message = image_message(ROS_TYPES, header, IMAGE, "rgb8")
        received = self.runtime.pipeline.stream_report(camera)[0]["images received"]
        self.spin_until(
            lambda: (
                self.images[camera].publish(message)
                or self.runtime.pipeline.stream_report(camera)[0]["images received"] > received
            ),
            f"{camera}'s frame",
        )
        return header

    def answer(self, camera: str, header: Header, box) -> InstanceMaskArray:
        prompt = Prompt(id=f"{camera}-box", has_box=True, box=[float(v) for v in box])
        self.prompts[camera].publish(PromptArray(header=header, prompts=[prompt]))
        return self.spin_until(
            lambda: next((m for m in self.masks[camera] if m.header == header), None),
            f"{camera}/masks",
        )

    def camera_status(self, camera: str) -> DiagnosticStatus | None:
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == f"/robot/mobilesam: {camera}":
                    return status
        return None

    def close(self) -> None:
        self.runtime.stop()
        self.runtime.destroy_outputs()
        self.runtime.close()
        self.executor.shutdown()
        self.client.destroy_node()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def cameras():
    rclpy.init()
    world = TwoCameras()
    yield world
    world.close()
    rclpy.try_shutdown()


def test_each_camera_is_answered_on_its_own_topics_with_its_own_header_and_ids(cameras):
    boxes = {"front": (10, 20, 110, 140), "left": (150, 30, 300, 200)}
    for camera in CAMERAS:
        header = cameras.frame(camera, 10)  # the same stamp on both cameras
        answer = cameras.answer(camera, header, boxes[camera])
        assert answer.header.frame_id == f"{camera}_optical"
        [instance] = [i for i in answer.instances if i.id == f"{camera}-box"]
        assert instance.track_id.startswith(f"{camera}/")
    # Nothing crossed over: every answer on a camera's topic carries that camera's frame id.
    for camera in CAMERAS:
        assert {m.header.frame_id for m in cameras.masks[camera]} == {f"{camera}_optical"}


def test_a_camera_that_stops_is_stale_on_its_own_while_the_other_is_served(cameras):
    started = time.monotonic()
    second = 20
    while time.monotonic() - started < 2.0:  # left sends nothing from here on
        header = cameras.frame("front", second)
        cameras.answer("front", header, (10, 20, 110, 140))
        second += 1
    left = cameras.spin_until(
        lambda: (s := cameras.camera_status("left")) and s.level == DiagnosticStatus.WARN and s,
        "left reported stale",
    )
    assert left.message.startswith("no image received for")
    cameras.frame("front", second)
    front = cameras.spin_until(
        lambda: (s := cameras.camera_status("front")) and s.level == DiagnosticStatus.OK and s,
        "front reported receiving",
    )
    values = {v.key: v.value for v in front.values}
    assert int(values["prompt messages answered (total)"]) >= 3
