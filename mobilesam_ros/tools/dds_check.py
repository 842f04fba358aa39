"""Check that camera-sized images cross DDS on this machine: sent and received counts.

A publisher process sends sensor_msgs/Image bgr8 frames of each size at a fixed rate and this
process counts what arrives, with the QoS cameras use (best effort) unless told otherwise. Both
processes get this shell's environment, so the check shows what the middleware configuration in
effect does (see "Camera frames lost?" in the README); --profile sets a Fast DDS profile file for
both, --profile none clears it.

  ros2 run mobilesam_ros dds_check
  ros2 run mobilesam_ros dds_check --sizes 1920x1080 --rate 30 --frames 90 --profile none

The subscriber keeps every frame it is handed (history depth = frames), so a count below the sent
count is a loss in the middleware, not a slow callback overwriting its queue.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mobilesam_ros.ros.dds_profile import profile_in_effect, with_profile

PACKAGE = "mobilesam_ros"
TOPIC = "dds_check/image"
# Seconds the publisher waits after matching the subscriber, so that the subscriber's side of the
# match is complete too before the first frame (a best-effort reader drops unmatched writers' data).
SETTLE_S = 1.0
# Seconds the subscriber keeps listening after the publisher has sent its last frame.
DRAIN_S = 2.0


def installed_profile() -> Path:
    """config/fastdds.xml of the installed package (raises LookupError when not installed)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        share = Path(get_package_share_directory(PACKAGE))
    except PackageNotFoundError as exc:
        raise LookupError(f"package {PACKAGE} is not installed (source its setup file)") from exc
    profile = share / "config" / "fastdds.xml"
    if not profile.is_file():
        raise LookupError(f"{profile} does not exist: rebuild and install {PACKAGE}")
    return profile


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Size:
        try:
            width, height = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {text!r}: expected WIDTHxHEIGHT") from None
        if width <= 0 or height <= 0:
            raise argparse.ArgumentTypeError(f"size {text!r}: width and height must be positive")
        return cls(width, height)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def _qos(reliability: str, depth: int):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(
            ReliabilityPolicy.BEST_EFFORT
            if reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE
        ),
        durability=DurabilityPolicy.VOLATILE,
    )


def run_publisher(args: argparse.Namespace) -> int:
    """Child process: sends args.frames frames of each size, prints the sent counts as JSON."""
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_check_camera")
    publisher = node.create_publisher(Image, TOPIC, _qos(args.reliability, 1))
    sent: dict[str, int] = {}
    try:
        deadline = time.monotonic() + args.discovery_timeout
        while publisher.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                print(json.dumps({"error": "no subscriber matched"}), flush=True)
                return 1
            time.sleep(0.05)
        time.sleep(SETTLE_S)
        period = 1.0 / args.rate
        for size in args.sizes:
            image = Image(height=size.height, width=size.width, encoding="bgr8")
            image.step = size.width * 3
            # Random pixels, so that nothing on the way can compress the frames.
            pixels = np.random.default_rng(0).integers(0, 256, size.height * image.step, np.uint8)
            image.data = pixels.tobytes()
            next_send = time.monotonic()
            for index in range(args.frames):
                image.header.frame_id = f"{size} {index}"
                publisher.publish(image)
                next_send += period
                time.sleep(max(0.0, next_send - time.monotonic()))
            sent[str(size)] = args.frames
            time.sleep(DRAIN_S)  # the subscriber counts this size before the next one starts
        print(json.dumps({"sent": sent}), flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def requested_profile(args: argparse.Namespace) -> str | None:
    """The profile file the check runs with: --profile, else the one this shell names."""
    if args.profile == "none":
        return None
    if args.profile:
        return str(Path(args.profile).resolve())
    return profile_in_effect()


def run_check(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """Starts the publisher process and counts frames per size: {size: (sent, received)}."""
    import rclpy
    from sensor_msgs.msg import Image

    env = with_profile(dict(os.environ), requested_profile(args))
    # --profile-for shows which side needs it: the other side runs with no profile.
    publisher_env = env if args.profile_for != "subscriber" else with_profile(env, None)
    subscriber_env = env if args.profile_for != "publisher" else with_profile(env, None)
    os.environ.clear()
    os.environ.update(subscriber_env)  # the middleware reads it at rclpy.init()

    received: dict[str, int] = {str(size): 0 for size in args.sizes}

    def on_image(message: Image) -> None:
        key = f"{message.width}x{message.height}"
        if key in received:
            received[key] += 1

    rclpy.init()
    node = rclpy.create_node("dds_check_subscriber")
    node.create_subscription(Image, TOPIC, on_image, _qos(args.reliability, args.frames))
    command = [
        sys.executable,
        "-m",
        "mobilesam_ros.tools.dds_check",
        "--role",
        "publisher",
        *_forwarded(args),
    ]
    publisher = subprocess.Popen(command, env=publisher_env, stdout=subprocess.PIPE, text=True)
    try:
        while publisher.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.05)
        for _ in range(20):  # what is still queued here
            rclpy.spin_once(node, timeout_sec=0.05)
        report = json.loads((publisher.stdout.read() or "{}").strip().splitlines()[-1])
    finally:
        if publisher.poll() is None:
            publisher.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    if "error" in report:
        raise RuntimeError(f"publisher: {report['error']}")
    return {size: (report["sent"][size], received[size]) for size in received}


def _forwarded(args: argparse.Namespace) -> list[str]:
    return [
        "--sizes",
        *(str(size) for size in args.sizes),
        "--rate",
        str(args.rate),
        "--frames",
        str(args.frames),
        "--reliability",
        args.reliability,
        "--discovery-timeout",
        str(args.discovery_timeout),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dds_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        type=Size.parse,
        nargs="+",
        default=[Size(640, 480), Size(1280, 720), Size(1920, 1080)],
        help="frame sizes, WIDTHxHEIGHT (default: 640x480 1280x720 1920x1080)",
    )
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second (default 30)")
    parser.add_argument("--frames", type=int, default=90, help="frames per size (default 90)")
    parser.add_argument(
        "--reliability",
        choices=("best_effort", "reliable"),
        default="best_effort",
        help="QoS of both sides (default best_effort, as cameras publish)",
    )
    parser.add_argument(
        "--profile",
        default="",
        help="Fast DDS profile file for both processes; 'none' removes the one this shell "
        "names; default: this shell's environment",
    )
    parser.add_argument(
        "--profile-for",
        choices=("both", "publisher", "subscriber"),
        default="both",
        help="which process gets the profile; the other runs with none (default both)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the counts as one JSON object instead"
    )
    parser.add_argument("--discovery-timeout", type=float, default=20.0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--role", choices=("check", "publisher"), default="check", help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error(f"--rate must be positive, got {args.rate}")
    if args.frames <= 0:
        parser.error(f"--frames must be positive, got {args.frames}")
    if args.profile not in ("", "none") and not Path(args.profile).is_file():
        parser.error(f"--profile {args.profile}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "publisher":
        return run_publisher(args)
    profile = requested_profile(args)
    results = run_check(args)
    lost = any(received < sent for sent, received in results.values())
    if args.json:
        counts = {
            size: {"sent": sent, "received": received} for size, (sent, received) in results.items()
        }
        print(json.dumps({"profile": profile, "reliability": args.reliability, "counts": counts}))
        return 1 if lost else 0
    print(
        f"middleware: {os.environ.get('RMW_IMPLEMENTATION', 'default (rmw_fastrtps_cpp)')}, "
        f"profile: {profile or 'none'} ({args.profile_for}), {args.reliability}, {args.rate:g} Hz"
    )
    print(f"{'size':>10} {'sent':>6} {'received':>9}")
    for size, (sent, received) in results.items():
        print(f"{size:>10} {sent:>6} {received:>9}  {100.0 * received / sent:5.1f}%")
    if lost:
        print("frames were lost: see 'Camera frames lost?' in the README of mobilesam_ros")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
