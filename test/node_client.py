"""A test client of the installed node over DDS: publishes its inputs, collects its outputs.

Imported by the DDS tests (test/dds), which run in the environment of the colcon install space
(see test/run_ros_tests.py), where `mobilesam_ros.msg` and the test-only `vision_msgs` import.
"""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import rclpy
import vision_msgs.msg as vision_msgs
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from mobilesam_ros.msg import InstanceMaskArray, Prompt, PromptArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

WAIT_S = 30.0


def stop_node(process: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, float, str]:
    started = time.monotonic()
    process.send_signal(sig)
    try:
        output, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return -1, time.monotonic() - started, output
    return process.returncode, time.monotonic() - started, output


class Client:
    """Publishes inputs to the node and collects its outputs.

    `status` names the node's /diagnostics status (e.g. "/mobilesam: segmentation"): then each
    image sent is followed by waiting until the node counts it received (a node started with a
    short diagnostics_period answers fast), else by a fixed short spin.
    """

    def __init__(self, node, namespace: str = "", status: str | None = None) -> None:
        self.node = node
        self.status = status
        prefix = f"{namespace}/" if namespace else ""
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        # Images as camera drivers publish them: best effort, through the Fast DDS profile that
        # run_ros_tests.py names as the README tells users to (no reliable override here).
        camera_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.image_pub = node.create_publisher(Image, prefix + "image", camera_qos)
        self.compressed_pub = node.create_publisher(
            CompressedImage, prefix + "image/compressed", camera_qos
        )
        self.prompts_pub = node.create_publisher(PromptArray, prefix + "prompts", qos)
        self.click_pub = node.create_publisher(PointStamped, prefix + "clicked_pixel_stamped", qos)
        self.pixel_pub = node.create_publisher(Point, prefix + "clicked_pixel", qos)
        self.detections_pub = node.create_publisher(
            vision_msgs.Detection2DArray, prefix + "detections", qos
        )
        self.received: dict[str, list] = {
            k: [] for k in ("masks", "mask_image", "overlay", "refined", "diagnostics")
        }
        node.create_subscription(
            InstanceMaskArray, prefix + "masks", self.received["masks"].append, qos
        )
        node.create_subscription(
            Image, prefix + "mask_image", self.received["mask_image"].append, qos
        )
        node.create_subscription(Image, prefix + "overlay", self.received["overlay"].append, qos)
        node.create_subscription(
            vision_msgs.Detection2DArray,
            prefix + "detections_refined",
            self.received["refined"].append,
            qos,
        )
        node.create_subscription(
            DiagnosticArray, "/diagnostics", self.received["diagnostics"].append, qos
        )

    def spin_until(self, predicate, timeout: float = WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            value = predicate()
            if value:
                return value
        raise AssertionError(
            f"timed out after {timeout} s waiting for {predicate.__doc__ or predicate}"
        )

    def wait_for_node(self) -> None:
        def connected():
            """the node to subscribe to image and prompts and to publish masks"""
            return (
                self.image_pub.get_subscription_count()
                and self.prompts_pub.get_subscription_count()
                and self.node.count_publishers(self.image_pub.topic_name.replace("image", "masks"))
            )

        self.spin_until(connected)
        self.spin_until(lambda: self.received["diagnostics"], timeout=5.0)
        # Discovery is complete once a frame and its prompt went through: until then the node's
        # best-effort image subscription may not have matched this publisher yet.
        image = np.zeros((48, 64, 3), np.uint8)
        deadline = time.monotonic() + WAIT_S
        for second in range(1, 1000):
            stamp = header(50 + second, "warm_up")  # after the stamps used as "too old"
            self.publish_image(stamp, image)
            self.prompts_pub.publish(
                PromptArray(header=stamp, prompts=[box_prompt("w", (1, 1, 20, 20))])
            )
            try:
                self.spin_until(
                    lambda: any(m.header.frame_id == "warm_up" for m in self.received["masks"]),
                    timeout=1.0,
                )
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def wait_until_the_node_receives_images(self, node_namespace: str) -> None:
        """Discovery done: small frames, as a camera sends them, until the node (diagnostics of
        `<node_namespace>/...`) counts one received. A best-effort frame sent before the node's
        subscription matched this publisher is lost, by design, so a single frame may be."""

        def received():
            """the node to count a received image"""
            for array in self.received["diagnostics"]:
                for status in array.status:
                    if status.name.startswith(f"{node_namespace}/"):
                        values = {kv.key: kv.value for kv in status.values}
                        if int(values.get("images received (total)", 0)) > 0:
                            return True
            self.publish_image(header(40, "warm_up"), np.zeros((48, 64, 3), np.uint8))
            return False

        self.spin_until(received)

    def publish_image(self, header: Header, rgb: np.ndarray, encoding: str = "rgb8") -> None:
        pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1]}[encoding]
        message = Image(
            header=header,
            height=rgb.shape[0],
            width=rgb.shape[1],
            encoding=encoding,
            step=rgb.shape[1] * 3,
        )
        message.data = np.ascontiguousarray(pixels).tobytes()
        # The node keeps only the newest image in its queue (camera semantics): let it take this
        # one before the test sends the next.
        if self.status is None:
            self.image_pub.publish(message)
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                rclpy.spin_once(self.node, timeout_sec=0.05)
            return
        # A report from after this call: its count holds every earlier image.
        mark = len(self.received["diagnostics"])
        self.spin_until(lambda: self.images_received(mark) is not None, timeout=WAIT_S)
        before = self.images_received(mark)
        mark = len(self.received["diagnostics"])
        self.image_pub.publish(message)
        self.spin_until(lambda: (self.images_received(mark) or 0) > before, timeout=WAIT_S)

    def images_received(self, since: int = 0) -> int | None:
        """The node's newest count of images received in the reports from index `since` on
        (None when none came)."""
        for array in reversed(self.received["diagnostics"][since:]):
            for status in array.status:
                if status.name == self.status:
                    values = {kv.key: kv.value for kv in status.values}
                    return int(values.get("images received (total)", 0))
        return None

    def masks_for(self, header: Header, count: int = 1, where=lambda message: True):
        def arrived():
            """masks with the image's stamp"""
            matches = [
                m for m in self.received["masks"] if m.header.stamp == header.stamp and where(m)
            ]
            return matches if len(matches) >= count else None

        return self.spin_until(arrived)


def header(seconds: int, frame_id: str = "camera") -> Header:
    return Header(stamp=Time(sec=seconds, nanosec=0), frame_id=frame_id)


def box_prompt(prompt_id: str, box) -> Prompt:
    return Prompt(id=prompt_id, has_box=True, box=[float(v) for v in box])


def instance_masks(array: InstanceMaskArray, size) -> list[np.ndarray]:
    masks = []
    for instance in array.instances:
        full = np.zeros(size, bool)
        roi = instance.roi
        if roi.width:
            crop = np.frombuffer(bytes(instance.mask.data), np.uint8).reshape(roi.height, roi.width)
            full[
                roi.y_offset : roi.y_offset + roi.height, roi.x_offset : roi.x_offset + roi.width
            ] = crop == 255
        masks.append(full)
    return masks
