"""What BF16 arithmetic does to the masks, on a CPU without BF16: the official pipeline with its
encoder and decoder under PyTorch's CPU autocast to BF16 (matrix products and convolutions in
BF16, the rest FP32), against the same pipeline in FP32, on the benchmark frame and boxes.

An estimate of OpenVINO's `precision: bf16`, which cannot run where the CPU lacks AMX and
AVX-512 BF16 (OpenVINO then computes FP32 whatever it is asked); PyTorch emulates BF16 there,
slowly. Prints mask IoU and the relative L2 error of the low-res logits per box.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench import OfficialPipeline, accuracy
from benchmarks.common import (
    add_model_arguments,
    benchmark_boxes,
    benchmark_frame,
    checkpoint_or_random_weights,
)
from mobilesam_ros.core.model.checkpoint import default_cache_dir


def in_bf16(module: torch.nn.Module) -> None:
    """Run `module` under CPU autocast to BF16, its outputs returned as FP32."""
    forward = module.forward

    def forward_in_bf16(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = forward(*args, **kwargs)
        if isinstance(outputs, tuple):
            return tuple(output.float() for output in outputs)
        return outputs.float()

    module.forward = forward_in_bf16  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, device="cpu")
    parser.add_argument("--boxes", type=int, default=10)
    args = parser.parse_args(argv)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    checkpoint = checkpoint_or_random_weights(args.checkpoint, cache)
    frame, boxes = benchmark_frame(), benchmark_boxes(args.boxes)
    fp32 = OfficialPipeline(checkpoint, "cpu", frame, boxes)
    bf16 = OfficialPipeline(checkpoint, "cpu", frame, boxes)
    in_bf16(bf16.predictor.model.image_encoder)
    in_bf16(bf16.predictor.model.mask_decoder)
    fp32.run_frame()
    bf16.run_frame()
    least, mean, error = accuracy(bf16, fp32)
    print(
        f"BF16 (PyTorch autocast, emulated) against FP32, {args.boxes} boxes on 640x480: mask "
        f"IoU least {least:.4f}, mean {mean:.4f}; logits relative L2 largest {error:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
