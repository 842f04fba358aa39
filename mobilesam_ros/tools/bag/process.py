"""`mobilesam-ros process-bag`: a recording in, the node's outputs out, every frame answered.

Reads the recording with `rosbags` (no ROS install), runs the node's stream pipeline on every
image in order on the recording's clock (`offline.py`), and writes the node's outputs to an MCAP
recording under a namespace, stamped and timed as their input image (`writing.py`), with COCO
annotations on request (`coco.py`). Ctrl-C ends the run after the frame at hand with a valid
recording; `--resume` continues it.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.segmenter import Segmenter
from mobilesam_ros.core.settings import NodeSettings
from mobilesam_ros.tools.bag import offline
from mobilesam_ros.tools.bag.coco import CocoWriter
from mobilesam_ros.tools.bag.outputs import OUTPUT_TYPES, OutputChoice, frame_messages
from mobilesam_ros.tools.bag.reading import InputBag
from mobilesam_ros.tools.bag.writing import OutputBag, Progress, read_progress

_log = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
_ROLE_TYPES = {
    offline.IMAGE: IMAGE_TYPES,
    offline.PROMPTS: ("mobilesam_ros/msg/PromptArray",),
    offline.DETECTIONS: ("vision_msgs/msg/Detection2DArray", "yolo_msgs/msg/DetectionArray"),
    offline.DEPTH: ("sensor_msgs/msg/Image",),
    offline.CAMERA_INFO: ("sensor_msgs/msg/CameraInfo",),
}


@dataclass(frozen=True)
class BagJob:
    """What to read from one recording and what to write."""

    image_topic: str
    detections_topic: str | None = None
    prompts_topic: str | None = None
    depth_topic: str | None = None
    camera_info_topic: str | None = None
    outputs: OutputChoice = field(default_factory=OutputChoice)
    parameters: dict[str, Any] = field(default_factory=dict)  # node parameters changed

    def topics(self) -> dict[str, str | None]:
        """role -> topic (None: not asked for)."""
        return {
            offline.IMAGE: self.image_topic,
            offline.DETECTIONS: self.detections_topic,
            offline.PROMPTS: self.prompts_topic,
            offline.DEPTH: self.depth_topic,
            offline.CAMERA_INFO: self.camera_info_topic,
        }

    def settings(self) -> NodeSettings:
        values = NodeSettings().values()
        unknown = set(self.parameters) - set(values)
        if unknown:
            raise InvalidInputError(f"unknown node parameter(s): {', '.join(sorted(unknown))}")
        values.update(self.parameters)
        return NodeSettings.from_values(values.__getitem__)

    def check(self) -> None:
        if not (self.detections_topic or self.prompts_topic or self.outputs.everything):
            raise InvalidInputError(
                "nothing to segment: give --detections-topic, --prompts-topic or --everything"
            )
        if bool(self.depth_topic) != bool(self.camera_info_topic):
            raise InvalidInputError("--depth-topic and --camera-info-topic go together")

    def options(self) -> dict[str, Any]:
        """What a resumed run must ask the same."""
        choice = self.outputs
        return {
            "topics": self.topics(),
            "outputs": choice.names(),
            "namespace": choice.namespace,
            "parameters": dict(sorted(self.parameters.items())),
        }


@dataclass
class BagReport:
    """A finished (or stopped) run's figures."""

    input: Path
    output: Path
    frames: int = 0  # input images answered in this run
    messages_written: int = 0
    seconds: float = 0.0
    complete: bool = False
    damage: str | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        state = "complete" if self.complete else "stopped early: --resume continues it"
        lines = [
            f"{self.input}: {self.frames} images in {self.seconds:.1f} s ({rate:.2f} frames/s), "
            f"{self.messages_written} messages in {self.output} ({state})"
        ]
        if self.damage:
            lines.append(f"  the input is damaged, read up to the damage: {self.damage}")
        lines += [f"  {reason}: {count}" for reason, count in sorted(self.counters.items())]
        return lines


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the run to stop after the frame at hand; a second one
    interrupts at once. Installed only in the main thread (signals arrive there)."""

    def __init__(self) -> None:
        self.requested = threading.Event()

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(number: int, frame: Any) -> None:
            if self.requested.is_set():
                raise KeyboardInterrupt
            self.requested.set()
            print("\nstopping after this frame (again: at once)", file=sys.stderr, flush=True)

        for number in previous:
            signal.signal(number, on_signal)
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def _roles(bag: InputBag, job: BagJob) -> dict[str, str]:
    """topic -> role, with each topic's type checked."""
    wanted = {role: topic for role, topic in job.topics().items() if topic}
    bag.check_topics({f"--{role.replace('_', '-')}-topic": t for role, t in wanted.items()})
    for role, topic in wanted.items():
        if bag.topics[topic] not in _ROLE_TYPES[role]:
            raise InvalidInputError(
                f"--{role.replace('_', '-')}-topic {topic} is {bag.topics[topic]}; "
                f"expected {' or '.join(_ROLE_TYPES[role])}"
            )
    return {topic: role for role, topic in wanted.items()}


def process_bag(
    input_path: Path,
    output_path: Path,
    job: BagJob,
    segmenter: Segmenter,
    resume: bool = False,
    coco: CocoWriter | None = None,
    progress: Callable[[int | None], Any] | None = None,
    stop: StopRequest | None = None,
) -> BagReport:
    """Run `job` on one recording. progress(images to answer, None when unknown) returns a
    tqdm-like bar; `stop` ends the run early with a valid, resumable output."""
    job.check()
    settings = job.settings()
    options = job.options()
    skip_before, part, frames_before = 0, 1, 0
    if resume:
        done = read_progress(output_path)
        if done is None:
            raise InvalidInputError(f"{output_path} holds no run of this tool to resume")
        if done.complete:
            raise InvalidInputError(f"{output_path} is complete: nothing to resume")
        if done.options != options:
            raise InvalidInputError(
                f"{output_path} was made with other options: {done.options}; resume with them"
            )
        skip_before, part, frames_before = done.resume_log_time_ns, done.parts + 1, done.frames_done
    bag = InputBag(input_path)
    report = BagReport(Path(input_path), Path(output_path))
    try:
        roles = _roles(bag, job)
        choice = job.outputs
        topics = {choice.topic(name): OUTPUT_TYPES[name] for name in choice.names()}
        output = OutputBag(output_path, topics, resume=resume)
        # Tracks start afresh where a run resumes: their ids get the part's name, never
        # repeating an earlier part's.
        stream_name = f"part{part}" if part > 1 else ""
        stream = offline.OfflineStream(segmenter, settings, choice.everything, stream_name)
        total = bag.message_count([job.image_topic])
        if total is not None:
            total -= frames_before
        bar = progress(total) if progress is not None else None
        started = time.perf_counter()
        last_log_time = skip_before
        lifted: dict[str, int] = {}

        def write(answers: list[offline.Answer]) -> None:
            for answer in answers:
                result = answer.result
                for name, message in frame_messages(
                    result, choice, answer.depth, answer.camera, lifted
                ):
                    output.write(choice.topic(name), answer.log_time_ns, message)
                if coco is not None:
                    coco.add(result)

        def answer_until(now: float) -> bool:
            """Answer the images due by `now`; False when asked to stop."""
            for answers in stream.advance(now):
                write(answers)
                if bar is not None:
                    bar.update(1)
                if stop is not None and stop.requested.is_set():
                    return False
            return stop is None or not stop.requested.is_set()

        try:
            going = True
            for item in bag.messages(roles):
                role = roles[item.topic]
                if item.log_time_ns < skip_before and role != offline.CAMERA_INFO:
                    continue  # done by the run this one resumes
                going = answer_until(item.log_time_ns / 1e9)
                if not going:
                    break
                stream.add(role, item.log_time_ns, item.message, bag.topics[item.topic])
                last_log_time = item.log_time_ns
            if going and answer_until(math.inf):
                write(stream.expire())
                report.complete = True
        finally:
            next_frame = stream.next_frame_log_time_ns
            resume_at = next_frame if next_frame is not None else last_log_time + 1
            report.frames = stream.frames_done
            report.seconds = time.perf_counter() - started
            report.damage = bag.damage
            counters = stream.counters()
            counters.update(lifted)
            report.counters = {k: v for k, v in counters.items() if v}
            if bar is not None:
                bar.close()
            progress_record = Progress(
                report.complete, frames_before + stream.frames_done, resume_at, options, part
            )
            report.output = output.close(progress_record)
            report.messages_written = output.written
            if coco is not None:
                coco.save()
    finally:
        bag.close()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of one recording's job (process-bag and process-bags)."""
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    parser.add_argument(
        "--detections-topic", help="vision_msgs/Detection2DArray or yolo_msgs/DetectionArray"
    )
    parser.add_argument("--prompts-topic", help="mobilesam_ros/PromptArray")
    parser.add_argument("--depth-topic", help="registered depth (16UC1 mm or 32FC1 m)")
    parser.add_argument("--camera-info-topic", help="the color camera's sensor_msgs/CameraInfo")
    parser.add_argument(
        "--everything", action="store_true", help="also segment every frame whole (everything/)"
    )
    parser.add_argument("--overlay", action="store_true", help="also write the overlay images")
    parser.add_argument("--namespace", default="/mobilesam", help="output topics go under it")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a node parameter, e.g. tracking.enabled=false (repeat; see the README's table)",
    )


def job_from_arguments(args: argparse.Namespace) -> BagJob:
    return BagJob(
        image_topic=args.image_topic,
        detections_topic=args.detections_topic,
        prompts_topic=args.prompts_topic,
        depth_topic=args.depth_topic,
        camera_info_topic=args.camera_info_topic,
        outputs=OutputChoice(
            namespace=args.namespace,
            overlay=args.overlay,
            depth=bool(args.depth_topic),
            everything=args.everything,
        ),
        parameters=parse_parameters(args.param),
    )


def parse_parameters(items: list[str]) -> dict[str, Any]:
    """NAME=VALUE strings -> values typed as each parameter's default."""
    defaults = {s.name: s.default for s in NodeSettings.parameters()}
    values: dict[str, Any] = {}
    for item in items:
        name, separator, text = item.partition("=")
        if not separator or name not in defaults:
            raise InvalidInputError(f"--param {item!r}: give NAME=VALUE with a node parameter")
        default = defaults[name]
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise InvalidInputError(f"--param {name}: true or false, not {text!r}")
            values[name] = text.lower() == "true"
        elif isinstance(default, tuple):
            values[name] = tuple(v for v in text.split(",") if v)
        else:
            try:
                values[name] = type(default)(text)
            except ValueError:
                raise InvalidInputError(f"--param {name}: {text!r} is not a number") from None
    return values
