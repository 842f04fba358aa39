"""What differs on a Jetson: its GPU shares the board's memory (8 GB on an Orin Nano) with the
CPU, the ROS nodes and the camera driver, so GPU buffers are sized smaller by default."""

from __future__ import annotations

from pathlib import Path

TEGRA_RELEASE = Path("/etc/nv_tegra_release")  # written by every L4T (JetPack) release
# Prompts per decoder call on a GPU: the TensorRT decoders' optimization profile, their
# activation memory and the backends' buffers are sized for it; more prompts are decoded in
# several calls. 64 answers a typical frame in one call.
DECODER_BATCH = 64
# On a Jetson 16: an FP16 decoder call needs roughly 20 MB of activations per prompt (an
# estimate: half the 40 MB per prompt measured in FP32 on the CPU, docs/BENCHMARKS.md), about
# 0.3 GB at 16 against 1.3 GB at 64, on a board whose 8 GB hold everything else too.
JETSON_DECODER_BATCH = 16


def is_jetson(tegra_release: Path = TEGRA_RELEASE) -> bool:
    return tegra_release.exists()


def default_decoder_batch(tegra_release: Path = TEGRA_RELEASE) -> int:
    """Prompts per decoder call unless asked otherwise: smaller on a Jetson."""
    return JETSON_DECODER_BATCH if is_jetson(tegra_release) else DECODER_BATCH
