"""Demo and node benchmark: a simulated 30 Hz camera with box prompts, fed to a real seg_node.

Starts the installed `seg_node` as a process, publishes a moving view over a real photo with the
objects' boxes as prompts (one PromptArray per frame, stamped like the frame), collects masks and
overlays over real DDS, writes overlay frames and prints a latency summary. The camera sees 6 to 8
objects; --prompts beyond those adds sub-boxes of them (`<name>#k`), so every frame carries N boxes,
and the summary's "answers with every object" then counts every box sent as an object.

The camera publishes as camera drivers do (best effort, depth 1). When this shell names no Fast
DDS profile, the demo names the installed config/fastdds.xml the way the README's "Camera frames
lost?" tells users to, for its camera and for the node it starts (--dds-profile none: neither).
The summary gives the frames the camera sent and, from the node's diagnostics, the images the
node received; --summary-json writes the same figures to a file.

  ros2 run mobilesam_ros seg_demo [--checkpoint F] [--seconds S] [--prompts N] [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from mobilesam_ros.core import MobileSamError
from mobilesam_ros.core.model.checkpoint import resolve_checkpoint
from mobilesam_ros.msg import InstanceMaskArray, Prompt, PromptArray
from mobilesam_ros.ros.dds_profile import profile_in_effect, with_profile
from mobilesam_ros.ros.parameters import parameter
from mobilesam_ros.tools.camera_sim import astronaut_camera, prompt_boxes
from mobilesam_ros.tools.dds_check import installed_profile
from mobilesam_ros.tools.process_memory import rss_mib

# Counters of the node's diagnostics that the summary reports (reported by releases that have them).
NODE_IMAGE_COUNTERS = (
    "images received (total)",
    "images encoded (total)",
    "images skipped (total)",
)


def seg_node_executable() -> Path:
    from ament_index_python.packages import get_package_prefix

    return Path(get_package_prefix("mobilesam_ros")) / "lib" / "mobilesam_ros" / "seg_node"


class DemoClient(Node):
    def __init__(
        self,
        rate_hz: float,
        num_prompts: int,
        frames: int,
        detector_rate: float = 0.0,
        fixed_prompts: bool = False,
    ) -> None:
        super().__init__("mobilesam_demo_camera")
        self.camera = astronaut_camera()
        self.num_prompts = num_prompts
        # The first frame's prompts, sent again and again with the same ids (a program that
        # names its objects), instead of the boxes of what is in view.
        self.fixed_prompts = fixed_prompts
        self.first_prompts: dict[str, tuple[float, float, float, float]] | None = None
        self.frames_total = frames
        # Prompts on every frame (0), or as a detector running at this rate would send them.
        self.detector_every = max(1, round(rate_hz / detector_rate)) if detector_rate else 1
        self.frame_boxes: dict[int, dict[str, tuple[float, float, float, float]]] = {}
        self.detected: set[str] = set()
        self.complete_answers = 0  # answers with a mask for every object detected so far
        self.followed_by: dict[str, str] = {}
        self.id_switches = 0
        self.published: dict[int, float] = {}  # stamp ns -> wall time published
        self.latencies_ms: list[float] = []
        self.answered: list[int] = []
        self.most_instances = 0  # in one answer
        self.answers_repeating_an_id = 0  # an object answered twice (a duplicated track)
        self.overlays: list[Image] = []
        self.diagnostics: dict[str, str] = {}
        qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        # As camera drivers publish: best effort, newest frame only.
        self.image_pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.prompts_pub = self.create_publisher(PromptArray, "prompts", qos)
        self.create_subscription(InstanceMaskArray, "masks", self._on_masks, qos)
        self.create_subscription(Image, "overlay", self.overlays.append, qos)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.index = 0
        self.timer = None
        self.rate_hz = rate_hz

    def start(self) -> None:
        self.timer = self.create_timer(1.0 / self.rate_hz, self._publish_frame)

    def _publish_frame(self) -> None:
        if self.index >= self.frames_total:
            return
        frame = self.camera.frame(self.index)
        self.index += 1
        header = Header(frame_id="demo_camera", stamp=self.get_clock().now().to_msg())
        image = Image(
            header=header,
            height=frame.bgr.shape[0],
            width=frame.bgr.shape[1],
            encoding="bgr8",
            step=frame.bgr.shape[1] * 3,
        )
        image.data = frame.bgr.tobytes()
        # The visible objects' boxes, completed with sub-boxes of them up to num_prompts; the
        # scoring below treats each sub-box as an object of its own, matched by its own box.
        objects = prompt_boxes(frame.boxes, self.num_prompts)
        if self.fixed_prompts:
            self.first_prompts = self.first_prompts or objects
            objects = self.first_prompts
        stamp = header.stamp.sec * 10**9 + header.stamp.nanosec
        self.frame_boxes[stamp] = objects
        self.image_pub.publish(image)
        if (self.index - 1) % self.detector_every == 0:
            prompts = [
                Prompt(id=name, has_box=True, box=[float(v) for v in box])
                for name, box in objects.items()
            ]
            self.prompts_pub.publish(PromptArray(header=header, prompts=prompts))
            self.detected.update(objects)
        self.published[stamp] = time.monotonic()

    def _on_masks(self, message: InstanceMaskArray) -> None:
        stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
        if stamp in self.published:
            self.latencies_ms.append((self.get_clock().now().nanoseconds - stamp) / 1e6)
            self.answered.append(stamp)
            self.most_instances = max(self.most_instances, len(message.instances))
            ids = [instance.id for instance in message.instances]
            self.answers_repeating_an_id += len(set(ids)) < len(ids)
            self._score_instances(message, self.frame_boxes.get(stamp, {}))

    def _score_instances(self, message: InstanceMaskArray, boxes: dict) -> None:
        """Match instances to the camera's known objects by box IoU: completeness, id switches."""
        visible = [name for name in boxes if name in self.detected]
        matched = set()
        for instance in message.instances:
            roi = instance.roi
            roi_box = (
                roi.x_offset,
                roi.y_offset,
                roi.x_offset + roi.width,
                roi.y_offset + roi.height,
            )
            best = max(visible, key=lambda n: _box_iou(roi_box, boxes[n]), default=None)
            if best is None or _box_iou(roi_box, boxes[best]) < 0.3 or best in matched:
                continue
            matched.add(best)
            identity = instance.track_id or instance.id  # track ids with tracking on
            if best in self.followed_by and self.followed_by[best] != identity:
                self.id_switches += 1
            self.followed_by[best] = identity
        self.complete_answers += matched == set(visible)

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.endswith("segmentation"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}


def _box_iou(a: tuple, b: tuple) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(args: argparse.Namespace) -> int:
    try:
        checkpoint = resolve_checkpoint(args.checkpoint or None, args.cache_dir or None)
    except MobileSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(
            "To check the pipeline without the official weights: make demo CHECKPOINT=random",
            file=sys.stderr,
        )
        return 2
    try:
        profile = use_dds_profile(args.dds_profile)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Fast DDS profile: {profile or 'none (middleware defaults)'}", flush=True)
    node_args = [
        sys.executable,
        str(seg_node_executable()),
        "--ros-args",
        "-p",
        f"checkpoint:={checkpoint}",
        "-p",
        f"backend:={args.backend}",
        "-p",
        "sync.max_wait:=2.0",
    ]
    if args.cache_dir:
        node_args += ["-p", f"cache_dir:={args.cache_dir}"]
    print(f"starting seg_node ({checkpoint.name}, backend {args.backend}) ...", flush=True)
    process = subprocess.Popen(node_args)
    rclpy.init()
    client = DemoClient(
        args.rate,
        args.prompts,
        int(args.seconds * args.rate),
        args.detector_rate,
        args.fixed_prompts,
    )
    try:
        deadline = time.monotonic() + 300  # first start may export the ONNX graphs
        while client.prompts_pub.get_subscription_count() == 0 or not client.diagnostics:
            rclpy.spin_once(client, timeout_sec=0.1)
            if process.poll() is not None:
                print("seg_node exited; see its messages above", file=sys.stderr)
                return 2
            if time.monotonic() > deadline:
                print("seg_node did not come up within 300 s", file=sys.stderr)
                return 2
        print(
            f"camera: {args.rate:.0f} Hz, 640x480, {args.prompts} boxes "
            f"{f'at {args.detector_rate:g} Hz' if args.detector_rate else 'with every frame'}, "
            f"{args.seconds:.0f} s",
            flush=True,
        )
        started = time.monotonic()
        client.start()
        node_rss: list[float] = []  # MiB, sampled once a second with --sample-rss

        def spin_once() -> None:
            rclpy.spin_once(client, timeout_sec=0.05)
            if args.sample_rss and time.monotonic() - started >= len(node_rss):
                node_rss.append(rss_mib(process.pid))

        while client.index < client.frames_total:
            spin_once()
        # Let the last answers and a diagnostics message arrive: until the last frame is answered
        # (a busy CPU may need several inference times), at least 3 s, at most --drain-seconds.
        sent_all = time.monotonic()
        last_stamp = max(client.published, default=None)
        while time.monotonic() < sent_all + args.drain_seconds and (
            time.monotonic() < sent_all + 3.0 or last_stamp not in client.answered
        ):
            spin_once()
        elapsed = sent_all - started  # longer than --seconds when the camera fell behind
        drops = {
            k: v
            for k, v in client.diagnostics.items()
            if k.startswith(("prompts_", "images_")) and "rate" not in k
        }
        summary = {
            "frames sent by the camera": client.index,
            "frames answered": len(client.answered),
            "answered per second": len(client.answered) / elapsed,
            "latency p50 (ms)": _percentile(client.latencies_ms, 50),
            "latency p99 (ms)": _percentile(client.latencies_ms, 99),
            "answers with every object": client.complete_answers,
            "id switches": client.id_switches,
            "most instances in an answer": client.most_instances,
            "answers repeating an id": client.answers_repeating_an_id,
        }
        print("summary (latency: image stamp to masks received here):")
        for key, value in summary.items():
            print(
                f"  {key:<26} {value:.1f}" if isinstance(value, float) else f"  {key:<26} {value}"
            )
        for key, value in sorted(drops.items()):
            print(f"  node: {key:<40} {value}")
        if node_rss:
            second_half = node_rss[len(node_rss) // 2 :]  # steady state, after warm-up
            print(
                f"  node RSS (MiB, {len(node_rss)} samples): first {node_rss[0]:.0f}, "
                f"steady median {_percentile(second_half, 50):.0f}, max {max(node_rss):.0f}"
            )
        node_counts = {
            key: int(client.diagnostics[key])
            for key in NODE_IMAGE_COUNTERS
            if client.diagnostics.get(key, "").isdigit()
        }
        for key, value in node_counts.items():
            print(f"  node: {key:<40} {value}")
        if args.summary_json:
            record = {
                "frames_sent": client.index,
                "frames_answered": len(client.answered),
                "dds_profile": profile,
                "node": node_counts,
            }
            Path(args.summary_json).write_text(json.dumps(record, indent=2) + "\n")
        if args.output:
            out = Path(args.output)
            out.mkdir(parents=True, exist_ok=True)
            for i, overlay in enumerate(client.overlays[: args.max_images]):
                pixels = np.frombuffer(bytes(overlay.data), np.uint8).reshape(
                    overlay.height, overlay.width, 3
                )
                cv2.imwrite(str(out / f"overlay_{i:03d}.jpg"), pixels)
            written = min(len(client.overlays), args.max_images)
            print(
                f"wrote {written} overlay frames to {out}/overlay_*.jpg: each shows the "
                "camera frame with one colored mask per box, its id and predicted IoU"
            )
        return 0 if client.answered else 1
    finally:
        client.destroy_node()
        rclpy.try_shutdown()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def use_dds_profile(choice: str) -> str | None:
    """Names the Fast DDS profile for this process and the node it starts; returns its path.

    choice: '' keeps the shell's profile, else the installed one; 'none' removes any; a path.
    The middleware reads the variable at rclpy.init(), so this runs before it.
    """
    if choice == "none":
        profile = None
    elif choice:
        if not Path(choice).is_file():
            raise LookupError(f"--dds-profile {choice}: no such file")
        profile = str(Path(choice).resolve())
    else:
        profile = profile_in_effect() or str(installed_profile())
    environment = with_profile(dict(os.environ), profile)
    os.environ.clear()
    os.environ.update(environment)
    return profile


# --prompts: at most as many as the node answers per message by default.
MAX_PROMPTS = int(parameter("max_prompts").default)


def _prompt_count(text: str) -> int:
    """--prompts: 1 to MAX_PROMPTS."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= MAX_PROMPTS:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_PROMPTS}, got {count}")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seg_demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="", help="mobile_sam.pt (default: official)")
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument(
        "--prompts",
        type=_prompt_count,
        default=4,
        help=f"box prompts per frame, 1 to {MAX_PROMPTS} (the node's max_prompts; default 4): the "
        "visible objects' boxes (6 to 8), then sub-boxes of them named <name>#k up to this many",
    )
    parser.add_argument(
        "--detector-rate",
        type=float,
        default=0.0,
        help="send the boxes as a detector at this rate would (Hz); 0: with every frame",
    )
    parser.add_argument(
        "--fixed-prompts",
        action="store_true",
        help="send the first frame's prompts (same ids, same boxes) every time instead of the "
        "boxes in view: a program that names its objects",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=20.0,
        help="after the last frame, wait at most this long for its answer (default 20)",
    )
    parser.add_argument("--output", default="", help="folder for overlay frames")
    parser.add_argument("--max-images", type=int, default=30)
    parser.add_argument(
        "--sample-rss", action="store_true", help="print the node's RSS (sampled once a second)"
    )
    parser.add_argument(
        "--dds-profile",
        default="",
        help="Fast DDS profile file for the camera and the node; 'none': middleware defaults; "
        "default: the one this shell names, else the installed config/fastdds.xml",
    )
    parser.add_argument("--summary-json", default="", help="also write the summary to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
