"""Latency and accuracy benchmark: this pipeline, with every CPU backend and precision installed
here (or the backends named), against the official MobileSAM pipeline, same frame, same run.

A 640x480 photo with N box prompts. Ours: pre-process, encode, batched decoder calls (as many
boxes per call as `decoder_memory_mb` allows), post-process to full-resolution masks. Official:
`SamPredictor.set_image` + one `predict` per box, as its README uses it. The pipelines take
turns: each round runs every one of them once, so that load from elsewhere falls on all alike.
Prints medians per stage, each pipeline's end-to-end ratio to the official one, its masks
against the official ones (mask IoU, relative L2 error of the low-res logits), and the
pre-processing cost of a 1920x1080 camera frame.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    FRAME_SIZE,
    add_model_arguments,
    benchmark_boxes,
    benchmark_frame,
    checkpoint_or_random_weights,
    cpu_name,
    median_ms,
    time_calls,
)
from mobilesam_ros.core import MobileSamError, Segmenter
from mobilesam_ros.core.choices import BACKENDS, DEFAULT_PRECISION, PRECISIONS
from mobilesam_ros.core.model.checkpoint import default_cache_dir

# What a CPU runs, as backend:precision, in the order printed.
CPU_VARIANTS = ("onnxruntime:fp32", "openvino:fp32", "openvino:bf16", "torch:fp32")
# The runtime module of each backend.
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch"}
STAGES = ("preprocess", "encode", "decode", "postprocess")


def _hd_preprocess_ms(iterations: int) -> dict[str, float]:
    """Pre-processing cost of a 1920x1080 camera frame (antialiased resize to 1024x576)."""
    import cv2

    from mobilesam_ros.core.processing.preprocess import (
        ImagePreprocessor,
        resize_like_sam,
        resized_shape,
    )

    frame = cv2.resize(benchmark_frame(), (1920, 1080), interpolation=cv2.INTER_LINEAR)
    size = resized_shape(*frame.shape[:2])
    preprocess = ImagePreprocessor()
    resized = np.empty((*size, 3), np.uint8)  # reused, as the node reuses its buffers
    repeats = max(iterations, 20)  # milliseconds each: more samples for a stable median
    return {
        "hd_resize_ms": median_ms(
            time_calls(lambda: resize_like_sam(frame, size, resized), repeats, warmup=3)
        ),
        "hd_preprocess_ms": median_ms(time_calls(lambda: preprocess(frame), repeats, warmup=3)),
    }


class Pipeline:
    """One pipeline under test: its samples in seconds, and its masks (full resolution) and
    low-res logits per box of the last frame it ran."""

    stage_names: tuple[str, ...] = STAGES

    def __init__(self, name: str) -> None:
        self.name = name
        self.stages: dict[str, list[float]] = {stage: [] for stage in self.stage_names}
        self.totals: list[float] = []
        self.masks = np.empty(0, bool)
        self.logits = np.empty(0, np.float32)

    def run_frame(self) -> None:
        raise NotImplementedError

    def time_frame(self, record: bool) -> None:
        started = time.perf_counter()
        self.run_frame()
        if record:
            self.totals.append(time.perf_counter() - started)

    def median(self, stage: str) -> float:
        return median_ms(self.stages[stage])


class OursPipeline(Pipeline):
    def __init__(self, segmenter: Segmenter, frame: np.ndarray, boxes: np.ndarray) -> None:
        super().__init__(segmenter.backend.describe())
        self.segmenter, self.frame, self.boxes = segmenter, frame, boxes

    def run_frame(self) -> None:
        result = self.segmenter.decode(self.segmenter.encode(self.frame), boxes=self.boxes)
        for name in STAGES:
            self.stages[name].append(getattr(self.segmenter.timings, f"{name}_ms") / 1e3)
        self.masks, self.logits = result.masks, result.low_res_logits


class OfficialPipeline(Pipeline):
    """`SamPredictor.set_image`, then one `predict` per box, as the MobileSAM README does."""

    stage_names = ("set_image", "predict per box")

    def __init__(self, checkpoint: str, device: str, frame: np.ndarray, boxes: np.ndarray):
        import torch
        from mobile_sam import SamPredictor, sam_model_registry

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        super().__init__(f"official (PyTorch on {device})")
        model = sam_model_registry["vit_t"](checkpoint=checkpoint).to(device)
        model.eval()  # as the official README does; also refreshes TinyViT's attention biases
        self.predictor = SamPredictor(model)
        self.frame, self.boxes = frame, boxes

    def run_frame(self) -> None:
        started = time.perf_counter()
        self.predictor.set_image(self.frame)
        self.stages["set_image"].append(time.perf_counter() - started)
        started = time.perf_counter()
        answers = [self.predictor.predict(box=box, multimask_output=False) for box in self.boxes]
        self.stages["predict per box"].append((time.perf_counter() - started) / len(self.boxes))
        self.masks = np.stack([masks[0] for masks, _, _ in answers])
        self.logits = np.stack([logits[0] for _, _, logits in answers])


def resolve_variants(named: list[str], device: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(backend, precision) pairs to run, and why others were left out.

    Nothing named on a CPU: every CPU backend and precision installed here."""
    if named:
        return [_parse_variant(text) for text in named], []
    if device not in ("auto", "cpu"):
        return [("auto", DEFAULT_PRECISION)], []
    chosen: list[tuple[str, str]] = []
    skipped: list[str] = []
    for text in CPU_VARIANTS:
        backend, precision = _parse_variant(text)
        if importlib.util.find_spec(RUNTIME_MODULES[backend]) is None:
            skipped.append(f"{text}: {RUNTIME_MODULES[backend]} is not installed")
        elif precision == "bf16" and not _cpu_has_bf16():
            skipped.append(f"{text}: this CPU has neither AMX nor AVX-512 BF16")
        else:
            chosen.append((backend, precision))
    return chosen, skipped


def _parse_variant(text: str) -> tuple[str, str]:
    backend, _, precision = text.partition(":")
    if backend not in BACKENDS or (precision and precision not in PRECISIONS):
        raise SystemExit(
            f"--backend {text!r}: expected BACKEND[:PRECISION], backends {', '.join(BACKENDS)}, "
            f"precisions {', '.join(PRECISIONS)}"
        )
    return backend, precision or DEFAULT_PRECISION


def _cpu_has_bf16() -> bool:
    import openvino

    from mobilesam_ros.core.backends.openvino_backend import cpu_has_bf16

    return cpu_has_bf16(openvino.Core())


def accuracy(ours: Pipeline, official: Pipeline) -> tuple[float, float, float]:
    """(least mask IoU, mean mask IoU, largest relative L2 error of the low-res logits) over
    the boxes, ours against the official pipeline."""
    ious, errors = [], []
    for mine, theirs, my_logits, their_logits in zip(
        ours.masks, official.masks, ours.logits, official.logits, strict=True
    ):
        union = np.logical_or(mine, theirs).sum()
        ious.append(1.0 if union == 0 else np.logical_and(mine, theirs).sum() / union)
        errors.append(np.linalg.norm(my_logits - their_logits) / np.linalg.norm(their_logits))
    return float(min(ious)), float(np.mean(ious)), float(max(errors))


def run_benchmark(
    checkpoint: str | None = None,
    backends: list[str] | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
    iterations: int = 10,
    num_boxes: int = 10,
    compare_official: bool = True,
) -> dict[str, dict[str, float]]:
    """Print the figures; return them by pipeline name."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    checkpoint = checkpoint_or_random_weights(checkpoint, cache)
    frame = benchmark_frame()
    boxes = benchmark_boxes(num_boxes)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    variants, skipped = resolve_variants(backends or [], device)
    pipelines: list[Pipeline] = []
    for backend, precision in variants:
        try:
            segmenter = Segmenter(checkpoint, backend, cache, device, precision=precision)
        except MobileSamError as exc:
            skipped.append(f"{backend}:{precision}: {exc}")
            continue
        pipelines.append(OursPipeline(segmenter, frame, boxes))
    official = None
    if compare_official:
        try:
            official = OfficialPipeline(checkpoint, device, frame, boxes)
        except ImportError as exc:
            print(f"official pipeline skipped: {exc} (install mobilesam-mirror)", file=sys.stderr)
    everyone = pipelines + ([official] if official else [])
    print(
        f"frame {FRAME_SIZE[1]}x{FRAME_SIZE[0]}, {num_boxes} boxes; {iterations} rounds after 1 "
        f"warm-up, each round runs every pipeline once"
    )
    for reason in skipped:
        print(f"  left out: {reason}")
    for round_index in range(iterations + 1):
        for pipeline in everyone:
            pipeline.time_frame(record=round_index > 0)
    for pipeline in everyone:  # the warm-up round's stage samples go
        for samples in pipeline.stages.values():
            del samples[0]
    return _report(pipelines, official, iterations, num_boxes)


def _report(
    pipelines: list[Pipeline], official: Pipeline | None, iterations: int, num_boxes: int
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    header = "".join(f"{name:>13}" for name in STAGES)
    print(f"\n{'ours':<34}{header}   end to end (ms)")
    for pipeline in pipelines:
        figures = {f"{name}_ms": pipeline.median(name) for name in STAGES}
        figures["total_ms"] = median_ms(pipeline.totals)
        results[pipeline.name] = figures
        row = "".join(f"{figures[f'{name}_ms']:13.1f}" for name in STAGES)
        print(f"{pipeline.name:<34}{row}{figures['total_ms']:13.1f}")
    if official is not None:
        figures = {
            "set_image_ms": official.median("set_image"),
            "predict_per_box_ms": official.median("predict per box"),
            "total_ms": median_ms(official.totals),
        }
        results[official.name] = figures
        print(
            f"{official.name}: set_image {figures['set_image_ms']:.1f} ms, predict "
            f"{figures['predict_per_box_ms']:.1f} ms per box, end to end "
            f"{figures['total_ms']:.1f} ms"
        )
        print(
            f"\n{'against the official pipeline':<34}{'speed-up':>10}  mask IoU least / mean  "
            "logits rel. L2 largest"
        )
        for pipeline in pipelines:
            figures = results[pipeline.name]
            figures["speedup"] = results[official.name]["total_ms"] / figures["total_ms"]
            least, mean, error = accuracy(pipeline, official)
            figures.update(mask_iou_least=least, mask_iou_mean=mean, logits_error=error)
            print(
                f"{pipeline.name:<34}{figures['speedup']:9.2f}x  {least:10.4f} / {mean:.4f}  "
                f"{error:21.2e}"
            )
    hd = _hd_preprocess_ms(iterations)
    results["hd camera frame"] = hd
    print(
        f"\nHD camera frame 1920x1080: resize as SAM does {hd['hd_resize_ms']:.1f} ms, whole "
        f"pre-process {hd['hd_preprocess_ms']:.1f} ms ({num_boxes} boxes above)"
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument(
        "--backend",
        action="append",
        metavar="BACKEND[:PRECISION]",
        help="a pipeline to run (repeat for more; precision: the node's default unless named); "
        "default on a "
        f"CPU: every one of {', '.join(CPU_VARIANTS)} installed here",
    )
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--no-official", action="store_true", help="skip the official pipeline")
    args = parser.parse_args(argv)
    run_benchmark(
        checkpoint=args.checkpoint,
        backends=args.backend,
        device=args.device,
        cache_dir=args.cache_dir,
        iterations=args.iterations,
        num_boxes=args.boxes,
        compare_official=not args.no_official,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
