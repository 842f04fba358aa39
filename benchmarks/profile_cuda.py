"""Where a GPU frame's time goes: the CUDA path's kernels by device time (PyTorch profiler,
eager so that each kernel is named) for the encoder and for the decoder with `--boxes` boxes
at 640x480; the host functions (cProfile) of the stream pipeline with tracking; and the decoder
eager against `torch.compile`d, both replayed from CUDA graphs.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench_cuda import frame_and_boxes, model_files
from benchmarks.bench_stream import RawImage, decode_payload, detections
from benchmarks.common import add_model_arguments
from mobilesam_ros.core import Segmenter
from mobilesam_ros.core.backends.base import DecoderInputs
from mobilesam_ros.core.backends.torch_device import DevicePipeline
from mobilesam_ros.core.model.modules import load_modules
from mobilesam_ros.core.processing.preprocess import encode_prompts
from mobilesam_ros.core.settings import DecodeSettings, NodeSettings
from mobilesam_ros.core.stream.frame_sync import Frame, PromptRequest
from mobilesam_ros.core.stream.pipeline import StreamPipeline


def kernel_tables(checkpoint: str, device: str, boxes: int, rows: int) -> None:
    modules = load_modules(checkpoint)
    decoders = {m: modules.decoder(m) for m in (False, True)}
    pipeline = DevicePipeline(modules.encoder, device, decoders, fp16=True, cuda_graph=False)
    image, box_array = frame_and_boxes(480, 640, boxes)
    embedding, geometry = pipeline.encode(image)
    inputs = DecoderInputs(*encode_prompts(geometry, box_array, None, None))

    def encode() -> None:
        pipeline.encode(image)

    def decode() -> None:
        pipeline.decode(embedding, inputs, False, geometry, 0.0, low_res=False, crops=True)

    for name, fn in (
        ("encoder (with pre-processing)", encode),
        (f"decoder, {boxes} boxes", decode),
    ):
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                fn()
            torch.cuda.synchronize()
        print(f"-- {name}, eager, 10 calls: kernels by device time")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows))


def tracking_profile(checkpoint: str, cache: Path, device: str, boxes: int, rows: int) -> None:
    """The stream pipeline with tracking, driven frame by frame in this thread (so that
    cProfile sees the worker's calls): `boxes` detections per frame, 30 frames."""
    segmenter = Segmenter(checkpoint, "torch", cache, device, progress=False)
    settings = NodeSettings(decode=DecodeSettings(max_prompts=boxes))  # tracking on
    pipeline = StreamPipeline(decode_payload, settings, segmenter=segmenter)
    image, _ = frame_and_boxes(480, 640, boxes)
    bgr = np.ascontiguousarray(image[..., ::-1])
    prompts = detections(boxes, 480, 640)
    profiler = cProfile.Profile()
    walls, instances = [], []
    for index in range(30):
        stamp_ns = 1_000_000_000 + index * 33_333_333
        raw = RawImage(bgr.tobytes(), 480, 640, 640 * 3)
        pipeline.add_frame(Frame(stamp_ns, "camera", raw, time.monotonic()))
        pipeline.add_request(PromptRequest(stamp_ns, "camera", prompts, time.monotonic(), "det"))
        started = time.perf_counter()
        if index >= 5:
            profiler.enable()
        result = pipeline.process_next(timeout=1.0)
        profiler.disable()
        walls.append((time.perf_counter() - started) * 1e3)
        instances.append(len(result.instances) if result is not None else -1)
    print(
        f"-- tracking, 640x480, {boxes} detections per frame: instances per frame {instances}; "
        f"worker ms per frame after 5: median {np.median(walls[5:]):.1f}, max {max(walls[5:]):.1f}"
        f"; counters {dict(pipeline.counters())}"
    )
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(rows)
    print(text.getvalue())


def compiled_decoder(checkpoint: str, device: str, iterations: int) -> None:
    """The decoder replayed from CUDA graphs, eager against `torch.compile`d (fused), on the
    same embedding: device time per call (CUDA events), the first call's time (capture, and
    compile), and how far their masks agree."""
    modules = load_modules(checkpoint)
    image, _ = frame_and_boxes(480, 640, 1)
    masks_by_variant: dict[tuple[bool, int], np.ndarray] = {}
    for compiled in (False, True):
        pipeline = DevicePipeline(
            modules.encoder, device, {False: modules.decoder(False)}, compile_decoder=compiled
        )
        embedding, geometry = pipeline.encode(image)
        for count in (1, 10):
            _, boxes = frame_and_boxes(480, 640, count)
            inputs = DecoderInputs(*encode_prompts(geometry, boxes, None, None))
            started = time.perf_counter()
            masks, _, _ = pipeline.decode(embedding, inputs, False, geometry, 0.0, low_res=False)
            first_s = time.perf_counter() - started
            times = []
            for _ in range(iterations):
                pipeline.decode(embedding, inputs, False, geometry, 0.0, low_res=False)
                times.append(pipeline.stage_timings()["decode_ms"])
            masks_by_variant[compiled, count] = masks
            print(
                f"decoder {'torch.compile' if compiled else 'eager'}, CUDA graph, {count:2d} "
                f"boxes: {np.median(times):.3f} ms (CUDA events, median of {iterations}); "
                f"first call {first_s:.1f} s",
                flush=True,
            )
    for count in (1, 10):
        pairs = zip(masks_by_variant[False, count], masks_by_variant[True, count], strict=True)
        ious = [np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1) for a, b in pairs]
        print(f"compiled vs eager masks, {count} boxes: IoU min {min(ious):.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, device="cuda")
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument(
        "--parts", default="kernels,tracking,compile", help="any of kernels, tracking, compile"
    )
    args = parser.parse_args(argv)
    files = model_files(args)
    if files is None:
        return 2
    cache, checkpoint = files
    parts = args.parts.split(",")
    if "kernels" in parts:
        kernel_tables(checkpoint, args.device, args.boxes, args.rows)
    if "tracking" in parts:
        tracking_profile(checkpoint, cache, args.device, args.boxes, args.rows)
    if "compile" in parts:
        compiled_decoder(checkpoint, args.device, args.iterations)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
