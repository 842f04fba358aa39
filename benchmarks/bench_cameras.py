"""Several cameras, one node: answers per camera per second and the node's RSS, against the same
node serving one camera, in one run.

Starts the installed `seg_node` once per camera count (1, then each --cameras count; with more
than one, parameter cameras names them cam0, cam1, ...), and one client process that plays
every camera: a simulated 640x480 view over a real photo at --rate Hz each, best effort as
camera drivers publish, with --prompts boxes per frame as one PromptArray stamped like the frame.
The cameras' views are offset from one another, so no two send the same picture. Prints per
camera the answers per second, the slowest camera's rate over the fastest's (equal load: the
worker's turns should keep it near 1), and the node's RSS sampled once a second (steady median:
the second half of the run), with its ratio to the one-camera node's.

  . install/setup.sh && python benchmarks/bench_cameras.py --checkpoint F [--cameras 2 4]

(a script, not a module: the installed package, with its messages, must come first.)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from mobilesam_ros.msg import InstanceMaskArray, Prompt, PromptArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mobilesam_ros.tools.camera_sim import astronaut_camera, prompt_boxes
from mobilesam_ros.tools.demo import seg_node_executable, use_dds_profile
from mobilesam_ros.tools.process_memory import rss_mib

# Frames between the views of two neighbouring cameras.
CAMERA_OFFSET = 37


@dataclass
class CameraCounts:
    published: set[int] = field(default_factory=set)  # stamps in ns
    answered: set[int] = field(default_factory=set)


class Cameras(Node):
    """Publishes every camera's frames and prompts and counts each camera's answers."""

    def __init__(self, names: list[str], prompts: int) -> None:
        super().__init__("bench_cameras")
        self.names = names
        self.prompts = prompts
        self.scene = astronaut_camera()
        self.index = 0
        self.counts = {name: CameraCounts() for name in names}
        reliable = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self.images, self.prompt_publishers = {}, {}
        for name in names:
            prefix = f"{name}/" if name else ""
            self.images[name] = self.create_publisher(
                Image, prefix + "image", qos_profile_sensor_data
            )
            self.prompt_publishers[name] = self.create_publisher(
                PromptArray, prefix + "prompts", reliable
            )
            self.create_subscription(
                InstanceMaskArray,
                prefix + "masks",
                lambda message, name=name: self._on_masks(name, message),
                reliable,
            )

    def ready(self) -> bool:
        return all(p.get_subscription_count() for p in self.prompt_publishers.values())

    def publish_frames(self) -> None:
        """One frame of every camera, stamped now."""
        for number, name in enumerate(self.names):
            frame = self.scene.frame(self.index + number * CAMERA_OFFSET)
            header = Header(frame_id=f"{name or 'camera'}_optical")
            header.stamp = self.get_clock().now().to_msg()
            height, width = frame.bgr.shape[:2]
            image = Image(header=header, height=height, width=width, encoding="bgr8")
            image.step = width * 3
            image.data = frame.bgr.tobytes()
            self.images[name].publish(image)
            prompts = [
                Prompt(id=object_name, has_box=True, box=[float(v) for v in box])
                for object_name, box in prompt_boxes(frame.boxes, self.prompts).items()
            ]
            self.prompt_publishers[name].publish(PromptArray(header=header, prompts=prompts))
            self.counts[name].published.add(header.stamp.sec * 10**9 + header.stamp.nanosec)
        self.index += 1

    def _on_masks(self, name: str, message: InstanceMaskArray) -> None:
        stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
        if stamp in self.counts[name].published:
            self.counts[name].answered.add(stamp)


@dataclass(frozen=True)
class RunResult:
    answered_per_second: dict[str, float]
    rss_steady_mib: float
    rss_max_mib: float


def run_node(args: argparse.Namespace, count: int) -> RunResult:
    """The node with `count` cameras under the simulated load for --seconds."""
    names = [f"cam{i}" for i in range(count)] if count > 1 else [""]
    command = [
        sys.executable,
        str(seg_node_executable()),
        "--ros-args",
        "-p",
        f"checkpoint:={args.checkpoint}",
        "-p",
        f"backend:={args.backend}",
        "-p",
        "sync.max_wait:=2.0",
    ]
    if count > 1:
        command += ["-p", f"cameras:=[{','.join(names)}]"]
    process = subprocess.Popen(command)
    cameras = Cameras(names, args.prompts)
    try:
        deadline = time.monotonic() + 300  # a first start exports the ONNX graphs
        while not cameras.ready():
            rclpy.spin_once(cameras, timeout_sec=0.1)
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("seg_node did not come up; see its messages above")
        time.sleep(3.0)  # the model loads after the subscriptions exist
        started = next_frame = time.monotonic()
        rss: list[float] = []
        while time.monotonic() - started < args.seconds:
            now = time.monotonic()
            if now >= next_frame:
                cameras.publish_frames()
                next_frame += 1.0 / args.rate
            if now - started >= len(rss):
                rss.append(rss_mib(process.pid))
            rclpy.spin_once(cameras, timeout_sec=max(0.0, min(next_frame - now, 0.02)))
        drain = time.monotonic() + 3.0  # answers on their way
        while time.monotonic() < drain:
            rclpy.spin_once(cameras, timeout_sec=0.05)
        steady = rss[len(rss) // 2 :]
        return RunResult(
            {name: len(c.answered) / args.seconds for name, c in cameras.counts.items()},
            float(np.median(steady)),
            max(rss),
        )
    finally:
        cameras.destroy_node()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="mobile_sam.pt (random weights do)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--cameras", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second per camera")
    parser.add_argument("--prompts", type=int, default=5, help="boxes per frame per camera")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    profile = use_dds_profile("")
    print(f"Fast DDS profile: {profile or 'none (middleware defaults)'}", flush=True)
    rclpy.init()
    try:
        print(
            f"{args.rate:g} Hz per camera, 640x480, {args.prompts} boxes per frame, "
            f"{args.seconds:g} s per run, backend {args.backend}",
            flush=True,
        )
        single = run_node(args, 1)
        rate = single.answered_per_second[""]
        print(
            f"1 camera: {rate:.2f} answers/s; node RSS steady {single.rss_steady_mib:.0f} MiB, "
            f"max {single.rss_max_mib:.0f} MiB",
            flush=True,
        )
        for count in args.cameras:
            result = run_node(args, count)
            rates = result.answered_per_second
            slowest, fastest = min(rates.values()), max(rates.values())
            balance = slowest / fastest if fastest else float("nan")
            shown = ", ".join(f"{name} {value:.2f}" for name, value in rates.items())
            print(
                f"{count} cameras: answers/s {shown} (sum {sum(rates.values()):.2f}); slowest / "
                f"fastest {balance:.2f}; node RSS steady {result.rss_steady_mib:.0f} MiB "
                f"({result.rss_steady_mib / single.rss_steady_mib:.2f}x one camera's), max "
                f"{result.rss_max_mib:.0f} MiB",
                flush=True,
            )
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
