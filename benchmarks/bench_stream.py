"""The node's per-frame work at camera rate, in one process without ROS: every frame of a
simulated camera with its detections, through the node's own pipeline, to every output.

A camera thread hands a new bgr8 buffer to the stream pipeline every 1/rate s, as the node's
image callback does, and with it the frame's boxes (a detector with no delay). The inference
thread runs `StreamPipeline.process_next` (stamp matching, image decode, encode, all prompts
decoded in one call) and passes each result through a one-slot hand-off to a publishing
thread, as the node does; that thread builds what the outputs carry when all are subscribed:
the masks' mono8 crops (`masks`), the label image (`mask_image`), the overlay with boxes and
captions (`overlay`) and the refined boxes (`detections_refined`). Left out: DDS transport
and the ROS message objects (`make bench-host` times the latter).

Prints per frame size: frames sent, answered and missed, the latency from a frame's arrival
to its outputs built (median, p99, max), stage medians (on a GPU the device stages come from
CUDA events) and the process's CPU time per second (cores busy).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import queue
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import (
    FRAME_SIZE,
    add_model_arguments,
    benchmark_boxes,
    benchmark_frame,
    checkpoint_or_random_weights,
    cpu_name,
)
from mobilesam_ros.core import Segmenter
from mobilesam_ros.core.model.checkpoint import default_cache_dir
from mobilesam_ros.core.processing.image_codec import DecodedImage, decode_raw_image
from mobilesam_ros.core.prompts import Prompt, captions
from mobilesam_ros.core.settings import DecodeSettings, NodeSettings, TrackingSettings
from mobilesam_ros.core.stream.frame_sync import Frame, PromptRequest
from mobilesam_ros.core.stream.pipeline import StreamPipeline
from mobilesam_ros.core.stream.stream import FrameResult
from mobilesam_ros.core.visualize import draw_label_overlay, label_image_from_crops

_POLL_S = 0.05


@dataclass(frozen=True)
class RawImage:
    """The sensor_msgs/Image fields that the node decodes."""

    data: bytes
    height: int
    width: int
    step: int
    encoding: str = "bgr8"


def decode_payload(image: RawImage) -> DecodedImage:
    return decode_raw_image(image.data, image.height, image.width, image.step, image.encoding)


def detections(count: int, height: int, width: int) -> list[Prompt]:
    """`count` detector boxes spread over a height x width frame (`benchmark_boxes`, scaled)."""
    scale = np.array([width / FRAME_SIZE[1], height / FRAME_SIZE[0]] * 2)
    return [
        Prompt(
            id=f"d{i}",
            box=tuple(float(v) for v in box * scale),
            class_id="object",
            detection_score=0.9,
            from_detector=True,
        )
        for i, box in enumerate(benchmark_boxes(count))
    ]


@dataclass
class Outputs:
    """The pixels and boxes that the node's outputs carry for one frame."""

    mask_payloads: list[np.ndarray]  # `masks`: each instance's crop as mono8, 255 = object
    labels: np.ndarray  # `mask_image`
    overlay: np.ndarray  # `overlay`, bgr8
    refined_boxes: list[tuple[int, int, int, int] | None]  # `detections_refined`


def build_outputs(result: FrameResult) -> Outputs:
    """What `ros/outputs.OutputPublishers.publish` computes when every output is subscribed,
    up to the message objects."""
    instances = result.instances
    crops = [r.crop for r in instances]
    labels = label_image_from_crops(
        crops, [r.predicted_iou for r in instances], result.frame.embedding.original_size
    )
    boxes = [c.box for c in crops]
    overlay = draw_label_overlay(
        result.decoded.to_bgr(),
        labels,
        [r.prompt.box for r in instances],
        captions(instances),
        mask_boxes=boxes,
    )
    payloads = [c.mask.view(np.uint8) * np.uint8(255) for c in crops if not c.empty]
    return Outputs(payloads, labels, overlay, boxes)


@dataclass
class StreamRun:
    sent: int = 0
    answered: int = 0
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    stages_ms: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def record(self, stage: str, milliseconds: float) -> None:
        self.stages_ms.setdefault(stage, []).append(milliseconds)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_stream(
    segmenter: Segmenter,
    size: tuple[int, int],
    count: int,
    rate: float,
    seconds: float,
    tracking: bool = False,
) -> StreamRun:
    """Stream `seconds` of a `rate` Hz camera at `size` (H, W) with `count` boxes per frame."""
    height, width = size
    bgr = np.ascontiguousarray(cv2.resize(benchmark_frame(), (width, height))[..., ::-1])
    prompts = detections(count, height, width)
    # Warm-up: programs of this frame size (and CUDA graphs on a GPU) are made on first use.
    boxes = np.array([p.box for p in prompts])
    for _ in range(3):
        segmenter.decode(segmenter.encode(bgr, "bgr"), boxes=boxes, crops=True)

    pipeline = StreamPipeline(
        decode_payload,
        NodeSettings(
            decode=DecodeSettings(max_prompts=max(count, 1)),
            tracking=TrackingSettings(enabled=tracking),
        ),
        segmenter=segmenter,
    )
    run = StreamRun()
    arrivals: dict[int, float] = {}
    handoff: queue.Queue[FrameResult] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def infer() -> None:
        while not stop.is_set():
            result = pipeline.process_next(timeout=_POLL_S)
            if result is None:
                continue
            for stage, milliseconds in vars(segmenter.timings).items():
                run.record(stage.removesuffix("_ms"), milliseconds)
            while not stop.is_set():
                try:
                    handoff.put(result, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue

    def publish() -> None:
        while not stop.is_set():
            try:
                result = handoff.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            started = time.perf_counter()
            build_outputs(result)
            done = time.perf_counter()
            run.record("outputs", (done - started) * 1e3)
            run.latencies_ms.append((done - arrivals[result.frame.stamp_ns]) * 1e3)
            run.answered += 1

    threads = [threading.Thread(target=f, daemon=True) for f in (infer, publish)]
    for thread in threads:
        thread.start()
    frames = round(seconds * rate)
    cpu_started, started = _cpu_seconds(), time.perf_counter()
    for index in range(frames):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        stamp_ns = 1_000_000_000 + round(index * 1e9 / rate)
        image = RawImage(bgr.tobytes(), height, width, width * 3)  # a new buffer, as from DDS
        arrivals[stamp_ns] = time.perf_counter()
        pipeline.add_frame(Frame(stamp_ns, "camera", image, time.monotonic()))
        pipeline.add_request(PromptRequest(stamp_ns, "camera", prompts, time.monotonic(), "det"))
        run.sent += 1
    deadline = time.perf_counter() + 2.0
    while run.answered < run.sent and time.perf_counter() < deadline:
        time.sleep(0.01)
    run.seconds = time.perf_counter() - started
    run.cpu_seconds = _cpu_seconds() - cpu_started
    stop.set()
    pipeline.wake()
    for thread in threads:
        thread.join()
    run.dropped = {k: v for k, v in pipeline.counters().items() if v}
    return run


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(size: tuple[int, int], count: int, rate: float, run: StreamRun) -> str:
    height, width = size
    latency = run.latencies_ms
    stages = ", ".join(
        f"{name} {np.median(values):.2f}" for name, values in run.stages_ms.items() if values
    )
    return (
        f"{width}x{height}, {count} boxes at {rate:g} Hz: sent {run.sent}, answered "
        f"{run.answered}, missed {run.sent - run.answered}"
        + (f" (counters: {run.dropped})" if run.dropped else "")
        + f"; arrival -> outputs built: median {_percentile(latency, 50):.2f} ms, "
        f"p99 {_percentile(latency, 99):.2f} ms, max {max(latency, default=float('nan')):.2f} ms"
        f"; stage medians (ms): {stages}; process CPU {run.cpu_seconds / run.seconds:.2f} cores"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="640x480,1280x720,1920x1080", help="WxH list")
    parser.add_argument("--boxes", type=int, default=10, help="detections per frame")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    parser.add_argument("--seconds", type=float, default=10.0, help="camera time per size")
    add_model_arguments(parser)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--tracking", action="store_true", help="tracking on (default off)")
    parser.add_argument("--compile-decoder", action="store_true", help="torch on CUDA only")
    args = parser.parse_args(argv)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    checkpoint = checkpoint_or_random_weights(args.checkpoint, cache)
    segmenter = Segmenter(
        checkpoint,
        args.backend,
        cache,
        args.device,
        precision=args.precision,
        progress=False,
        compile_decoder=args.compile_decoder,
    )
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{segmenter.backend.describe()}; tracking {'on' if args.tracking else 'off'}"
    )
    for text in args.sizes.split(","):
        width, height = (int(v) for v in text.lower().split("x"))
        run = run_stream(
            segmenter, (height, width), args.boxes, args.rate, args.seconds, args.tracking
        )
        print(report((height, width), args.boxes, args.rate, run), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
