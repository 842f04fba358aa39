"""Latency benchmark: this pipeline against the official MobileSAM pipeline, same frame, same run.

A 640x480 photo with N box prompts. Ours: pre-process, encode, batched decoder calls (as many
boxes per call as `decoder_memory_mb` allows), post-process to full-resolution masks. Official:
`SamPredictor.set_image` + one `predict` per box, as its README uses it. Prints medians per stage
and the end-to-end ratio, and the pre-processing cost of a 1920x1080 camera frame.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
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
from mobilesam_ros.core import Segmenter
from mobilesam_ros.core.choices import BACKENDS
from mobilesam_ros.core.model.checkpoint import default_cache_dir


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


def run_benchmark(
    checkpoint: str | None = None,
    backend: str = "auto",
    device: str = "auto",
    cache_dir: str | None = None,
    iterations: int = 10,
    num_boxes: int = 10,
    compare_official: bool = True,
) -> dict[str, float]:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    checkpoint = checkpoint_or_random_weights(checkpoint, cache)
    frame = benchmark_frame()
    boxes = benchmark_boxes(num_boxes)
    segmenter = Segmenter(checkpoint, backend, cache, device)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"ours: {segmenter.backend.describe()}; frame {FRAME_SIZE[1]}x{FRAME_SIZE[0]}, "
        f"{num_boxes} boxes decoded in calls of up to {segmenter.decode_chunk_size}; "
        f"{iterations} iterations after 1 warm-up"
    )

    stages: dict[str, list[float]] = {
        k: [] for k in ("preprocess", "encode", "decode", "postprocess")
    }

    def ours() -> None:
        segmenter.decode(segmenter.encode(frame), boxes=boxes)
        t = segmenter.timings
        for name in stages:
            stages[name].append(getattr(t, f"{name}_ms") / 1e3)

    end_to_end = time_calls(ours, iterations)
    results = {f"ours_{k}_ms": median_ms(v[-iterations:]) for k, v in stages.items()}
    results["ours_total_ms"] = median_ms(end_to_end)
    for name in stages:
        print(f"  ours {name:<12} {results[f'ours_{name}_ms']:9.1f} ms")
    print(f"  ours {'end to end':<12} {results['ours_total_ms']:9.1f} ms")
    results.update(_hd_preprocess_ms(iterations))
    print(
        f"  HD camera frame 1920x1080: resize as SAM does {results['hd_resize_ms']:.1f} ms, "
        f"whole pre-process {results['hd_preprocess_ms']:.1f} ms"
    )

    if compare_official:
        try:
            official = _official_pipeline(checkpoint, device)
        except ImportError as exc:
            print(f"official pipeline skipped: {exc} (install mobilesam-mirror)", file=sys.stderr)
            return results
        set_image, predict = official
        official_iterations = max(3, iterations // 2)
        set_samples: list[float] = []
        predict_samples: list[float] = []

        def official_frame() -> None:
            started = time.perf_counter()
            set_image(frame)
            set_samples.append(time.perf_counter() - started)
            started = time.perf_counter()
            for box in boxes:
                predict(box)
            predict_samples.append(time.perf_counter() - started)

        total = time_calls(official_frame, official_iterations)
        results["official_set_image_ms"] = median_ms(set_samples[-official_iterations:])
        results["official_predict_per_box_ms"] = (
            median_ms(predict_samples[-official_iterations:]) / num_boxes
        )
        results["official_total_ms"] = median_ms(total)
        results["speedup"] = results["official_total_ms"] / results["ours_total_ms"]
        print(f"official ({official_iterations} iterations after 1 warm-up):")
        print(f"  official set_image      {results['official_set_image_ms']:9.1f} ms")
        print(f"  official predict / box  {results['official_predict_per_box_ms']:9.1f} ms")
        print(f"  official end to end     {results['official_total_ms']:9.1f} ms")
        print(f"speed-up end to end: {results['speedup']:.2f}x")
    return results


def _official_pipeline(
    checkpoint: str, device: str
) -> tuple[Callable[[np.ndarray], None], Callable[[np.ndarray], object]]:
    import torch
    from mobile_sam import SamPredictor, sam_model_registry

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = sam_model_registry["vit_t"](checkpoint=checkpoint).to(device)
    model.eval()  # as the official README does; also refreshes TinyViT's attention-bias cache
    predictor = SamPredictor(model)

    def predict(box: np.ndarray) -> object:
        return predictor.predict(box=box, multimask_output=False)

    return predictor.set_image, predict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--no-official", action="store_true", help="skip the official pipeline")
    args = parser.parse_args(argv)
    run_benchmark(
        checkpoint=args.checkpoint,
        backend=args.backend,
        device=args.device,
        cache_dir=args.cache_dir,
        iterations=args.iterations,
        num_boxes=args.boxes,
        compare_official=not args.no_official,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
