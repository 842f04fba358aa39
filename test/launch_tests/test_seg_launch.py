"""seg.launch.py as users start it, under launch_testing: answers, then a terminal's Ctrl-C.

`ros2 launch mobilesam_ros seg.launch.py` runs in a session of its own (as in a terminal), with
the installed Fast DDS profile (the launch file's default, or the one this shell exported, as the
README tells users) and the ONNX Runtime backend on random weights. The test sends 1280x720
frames best effort, as camera drivers do, with box prompts; it waits for masks, an overlay and
/diagnostics "ready", then sends SIGINT to the whole process group, as a terminal's Ctrl-C does
(launch forwards a second SIGINT to the node). After shutdown: exit code 0, launch's "process has
finished cleanly", no traceback.

Run with `launch_test test/launch_tests/test_seg_launch.py` in the install space's environment
(test/dds/test_launch_testing.py does; so does `colcon test`). MOBILESAM_ROS_TEST_MODELS, when
set, names a folder with a prepared checkpoint and export cache
(scripts/prepare_test_models.py); otherwise the test writes a random-weight checkpoint (needs
PyTorch) and the node exports it on its first start.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import unittest
from pathlib import Path

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import launch_testing.util
import rclpy
import yaml
from ament_index_python.packages import get_package_share_directory
from diagnostic_msgs.msg import DiagnosticArray
from launch import LaunchDescription
from launch.actions import ExecuteProcess
from mobilesam_ros.msg import InstanceMaskArray, Prompt, PromptArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mobilesam_ros.ros.dds_profile import profile_in_effect, with_profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/: the shared helpers
from helpers import camera_frame

NODE = "/mobilesam"
WAIT_S = 120.0
BOXES = [(100, 80, 500, 600), (600, 100, 1100, 650)]
# A Python that starts the command in a new session: its pid is the group a Ctrl-C signals.
IN_NEW_SESSION = "import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"


def _model(folder: Path) -> tuple[Path, Path]:
    prepared = os.environ.get("MOBILESAM_ROS_TEST_MODELS")
    if prepared:
        shutil.copytree(Path(prepared) / "cache", folder / "cache")
        return Path(prepared) / "mobile_sam.pt", folder / "cache"
    from mobilesam_ros.core.model.modules import write_random_checkpoint

    return write_random_checkpoint(folder / "mobile_sam.pt"), folder / "cache"


def generate_test_description():
    folder = Path(tempfile.mkdtemp(prefix="seg_launch_test_"))
    checkpoint, cache = _model(folder)
    params = folder / "params.yaml"
    parameters = {
        "checkpoint": str(checkpoint),
        "cache_dir": str(cache),
        "backend": "onnxruntime",
        "device": "cpu",
        "sync": {"max_wait": 3.0},
    }
    params.write_text(yaml.safe_dump({"/**/mobilesam": {"ros__parameters": parameters}}))
    # This process publishes the camera frames: the publisher's side decides whether large
    # best-effort images arrive, so it gets the installed profile too, unless one is exported.
    if profile_in_effect() is None:
        profile = Path(get_package_share_directory("mobilesam_ros")) / "config" / "fastdds.xml"
        os.environ.update(with_profile(os.environ, profile))
    ros2 = shutil.which(
        "ros2", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    ros2_launch = ExecuteProcess(
        cmd=[
            sys.executable,
            "-c",
            IN_NEW_SESSION,
            ros2,
            "launch",
            "mobilesam_ros",
            "seg.launch.py",
            f"params_file:={params}",
        ],
        output="screen",
        sigterm_timeout="10",
    )
    # The test stops ros2 launch itself; this keeps launch_testing's own launch running until
    # the test has finished.
    keep_alive = launch_testing.util.KeepAliveProc()
    return LaunchDescription([ros2_launch, keep_alive, launch_testing.actions.ReadyToTest()]), {
        "ros2_launch": ros2_launch
    }


class TestAnswersThenCtrlC(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("seg_launch_test")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def spin_until(self, condition, what: str, timeout: float = WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            value = condition()
            if value:
                return value
        self.fail(f"timed out after {timeout} s waiting for {what}")

    def test_answers_1280x720_frames_then_ctrl_c_ends_cleanly(self, proc_info, ros2_launch):
        node = self.node
        received = {"masks": [], "overlay": [], "diagnostics": []}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(InstanceMaskArray, "masks", received["masks"].append, reliable)
        node.create_subscription(Image, "overlay", received["overlay"].append, reliable)
        node.create_subscription(
            DiagnosticArray, "/diagnostics", received["diagnostics"].append, reliable
        )
        camera = node.create_publisher(
            Image, "image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        prompts = node.create_publisher(PromptArray, "prompts", reliable)
        frame = camera_frame(720, 1280)
        image = Image(height=720, width=1280, encoding="rgb8", step=1280 * 3)
        image.data = frame.tobytes()
        answered = {}

        def send_until_answered():
            """masks for a frame (frames go out twice a second until one is answered)"""
            stamp = Header(frame_id="camera")
            stamp.stamp.sec = int(time.time())
            stamp.stamp.nanosec = time.time_ns() % 1_000_000_000
            image.header = stamp
            camera.publish(image)
            prompts.publish(
                PromptArray(
                    header=stamp,
                    prompts=[
                        Prompt(id=f"box{i}", has_box=True, box=[float(v) for v in box])
                        for i, box in enumerate(BOXES)
                    ],
                )
            )
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
                for message in received["masks"]:
                    answered["masks"] = message
                    answered["header"] = message.header
                    return True
            return False

        self.spin_until(
            lambda: camera.get_subscription_count() and prompts.get_subscription_count(),
            "the node to subscribe",
        )
        self.spin_until(send_until_answered, "masks")
        masks = answered["masks"]
        self.assertEqual([i.id for i in masks.instances], ["box0", "box1"])
        self.assertEqual(masks.header.frame_id, "camera")
        overlay = self.spin_until(
            lambda: [m for m in received["overlay"] if m.header == answered["header"]], "overlay"
        )[0]
        self.assertEqual((overlay.height, overlay.width, overlay.encoding), (720, 1280, "bgr8"))

        received["diagnostics"].clear()
        last_frame = [0.0]

        def ready():
            """/diagnostics to say ready (the camera streams on meanwhile, at 10 Hz)"""
            if time.monotonic() - last_frame[0] > 0.1:
                last_frame[0] = time.monotonic()
                image.header.stamp.sec += 1
                camera.publish(image)
            return any(
                s.name == f"{NODE}: segmentation" and s.message == "ready"
                for array in received["diagnostics"]
                for s in array.status
            )

        self.spin_until(ready, "/diagnostics 'ready'", timeout=30.0)

        os.killpg(proc_info[ros2_launch].pid, signal.SIGINT)  # a terminal's Ctrl-C
        proc_info.assertWaitForShutdown(process=ros2_launch, timeout=15)


@launch_testing.post_shutdown_test()
class TestAfterCtrlC(unittest.TestCase):
    def test_launch_and_node_exit_cleanly(self, proc_info, proc_output, ros2_launch):
        launch_testing.asserts.assertExitCodes(proc_info, process=ros2_launch)
        output = "".join(item.text.decode() for item in proc_output[ros2_launch])
        self.assertIn("[seg_node-1]: process has finished cleanly", output)
        for bad in ("Traceback", "KeyboardInterrupt", "process has died"):
            self.assertNotIn(bad, output)
