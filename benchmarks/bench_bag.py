"""process-bag's throughput against the official pipeline, same frames, same boxes, one run.

Writes a recording (a 10 Hz camera at 640x480 over real photos, a detector with 5 boxes per
frame 60 ms after each image; the tests' recorder), then times:
- process-bag on it (read, decode, the node's stream pipeline, every output built and written
  to MCAP), with tracking on (the node's default) and off;
- the official MobileSAM pipeline on the same decoded frames and boxes: `SamPredictor.set_image`
  and one `predict` per box, as its README uses it (no recording read or written).
Prints frames/s of each, the ratio to the official one, and the masks per frame (with tracking
the live tracks are decoded too: with random weights no detection matches its track, so
each detection starts a track that lives `tracking.max_age` (1 s): a worst case).

  python -m benchmarks.bench_bag [--checkpoint F] [--frames 20] [--backend auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_model_arguments, checkpoint_or_random_weights, cpu_name
from mobilesam_ros.core import Segmenter
from mobilesam_ros.core.model.checkpoint import default_cache_dir
from mobilesam_ros.tools.bag.process import BagJob, process_bag

BOXES = 5


def official_frames_per_second(
    checkpoint: str, device: str, frames: list[np.ndarray], boxes: list[np.ndarray]
) -> float:
    import torch
    from mobile_sam import SamPredictor, sam_model_registry

    model = sam_model_registry["vit_t"](checkpoint=checkpoint).to(device).eval()
    predictor = SamPredictor(model)
    started = time.perf_counter()
    with torch.no_grad():
        for frame, frame_boxes in zip(frames, boxes, strict=True):
            predictor.set_image(frame)
            for box in frame_boxes:
                predictor.predict(box=box, multimask_output=False)
    return len(frames) / (time.perf_counter() - started)


def instances_per_frame(output: Path) -> float:
    """Mean masks per answered frame (with tracking: the detections' and the live tracks')."""
    from rosbags.highlevel import AnyReader

    with AnyReader([output]) as reader:
        masks = [c for c in reader.connections if c.topic.endswith("/masks")]
        counts = [
            len(reader.deserialize(raw, c.msgtype).instances)
            for c, _, raw in reader.messages(connections=masks)
        ]
    return sum(counts) / max(len(counts), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, device="cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
    from recordings import DETECTIONS_TOPIC, IMAGE_TOPIC, write_recording

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    checkpoint = checkpoint_or_random_weights(args.checkpoint, cache)
    segmenter = Segmenter(checkpoint, args.backend, cache, args.device, progress=False)
    device = "cpu" if args.device == "auto" else args.device
    print(f"CPU: {cpu_name()}; ours: {segmenter.backend.describe()}; official: PyTorch on {device}")
    with tempfile.TemporaryDirectory() as folder:
        recording = write_recording(Path(folder) / "in", frames=args.frames, objects=BOXES)
        print(f"{args.frames} frames 640x480, {BOXES} boxes each", flush=True)
        official = official_frames_per_second(checkpoint, device, recording.frames, recording.boxes)
        print(f"official pipeline: {official:.2f} frames/s", flush=True)
        for label, parameters in (
            ("tracking on (default)", {}),
            ("tracking off", {"tracking.enabled": False}),
        ):
            job = BagJob(IMAGE_TOPIC, DETECTIONS_TOPIC, parameters=parameters)
            output = Path(folder) / f"out-{len(parameters)}"
            report = process_bag(recording.path, output, job, segmenter)
            rate = report.frames / report.seconds
            print(
                f"process-bag, {label}: {rate:.2f} frames/s ({report.messages_written} messages "
                f"written, {instances_per_frame(output):.1f} masks per frame), "
                f"{rate / official:.2f}x the official pipeline",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
