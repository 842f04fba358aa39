"""What the benchmarks share: the photo and boxes they time, timing helpers, the machine's
description and the model options."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FRAME_SIZE = (480, 640)  # (H, W)


def benchmark_frame() -> np.ndarray:
    """scikit-image's astronaut photo resized to 640x480 RGB."""
    import cv2
    from skimage import data

    height, width = FRAME_SIZE
    return cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)


def benchmark_boxes(count: int) -> np.ndarray:
    """`count` boxes of varied size spread over the frame, deterministic."""
    rng = np.random.default_rng(0)
    height, width = FRAME_SIZE
    x0 = rng.uniform(0, width * 0.7, count)
    y0 = rng.uniform(0, height * 0.7, count)
    w = rng.uniform(40, width * 0.3, count)
    h = rng.uniform(40, height * 0.3, count)
    return np.stack([x0, y0, np.minimum(x0 + w, width - 1), np.minimum(y0 + h, height - 1)], 1)


def time_calls(fn: Callable[[], object], iterations: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `iterations` calls of `fn`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def median_ms(samples: list[float]) -> float:
    """Median of samples in seconds, in milliseconds."""
    return statistics.median(samples) * 1e3


def cpu_name() -> str:
    """The CPU's model name, for the figures' header."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def checkpoint_or_random_weights(checkpoint: str | None, cache: Path) -> str:
    """`checkpoint`, or (None) a random-weight one in the official layout written to `cache`:
    the same compute as the real weights, for timing where the official file is absent."""
    if checkpoint is not None:
        return checkpoint
    from mobilesam_ros.core.model.modules import write_random_checkpoint

    path = str(cache / "random-weights-seed0.pt")
    if not os.path.isfile(path):
        write_random_checkpoint(path, seed=0)
    print("checkpoint: random weights in the official layout (same compute as the real ones)")
    return path


def add_model_arguments(parser: argparse.ArgumentParser, device: str = "auto") -> None:
    """--checkpoint, --cache-dir and --device (default `device`)."""
    parser.add_argument("--checkpoint", help="mobile_sam.pt (default: random weights)")
    parser.add_argument("--cache-dir", help="exported graphs and the random-weight checkpoint")
    parser.add_argument("--device", default=device)
