"""The PyTorch CUDA path on a GPU, with the official pipeline in the same run on the same GPU.

Prints: the FP16 encoder alone (CUDA graph replay, CUDA events), with and without
scaled-dot-product attention; per frame end to end (numpy frame in, masks out: full-frame
masks, or the crops the node publishes) at 640x480 with 1, 10 and 50 boxes and at 1280x720
and 1920x1080 with 10, FP16 and FP32, with the device stages of the last frame from CUDA
events; the official `set_image` + `predict` per box and + one batched `predict_torch`; and
FP16 against the official FP32 pipeline (mask IoU, low-res logits' relative error).
`--compile-decoder`: only ours in FP16 with the decoder through `torch.compile`, and its
accuracy. Random weights unless `--checkpoint` names the official file. Medians of
`--iterations`.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.common import (
    FRAME_SIZE,
    add_model_arguments,
    benchmark_boxes,
    benchmark_frame,
    checkpoint_or_random_weights,
    median_ms,
    time_calls,
)
from mobilesam_ros.core import Segmenter
from mobilesam_ros.core.backends.torch_device import DevicePipeline
from mobilesam_ros.core.model.checkpoint import default_cache_dir
from mobilesam_ros.core.model.modules import load_modules

CASES = ((480, 640, 1), (480, 640, 10), (480, 640, 50), (720, 1280, 10), (1080, 1920, 10))


def frame_and_boxes(height: int, width: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark photo at height x width and `count` boxes scaled to it."""
    image = benchmark_frame()
    if (height, width) != FRAME_SIZE:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    scale = np.array([width / FRAME_SIZE[1], height / FRAME_SIZE[0]] * 2)
    return image, benchmark_boxes(count) * scale


def encoder_alone_ms(checkpoint: str, device: str, fused: bool, iterations: int) -> float:
    """Median CUDA-event time of one replay of the captured FP16 encoder."""
    pipeline = DevicePipeline(
        load_modules(checkpoint).encoder, device, fp16=True, fused_attention=fused
    )
    run = pipeline._encoder_program
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for index in range(iterations + 10):
        start.record()
        run()
        end.record()
        end.synchronize()
        if index >= 10:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def ours(
    segmenter: Segmenter, image: np.ndarray, boxes: np.ndarray, crops: bool, iterations: int
) -> tuple[float, dict[str, float]]:
    """Median wall ms per frame, and the last frame's device stages (CUDA events)."""

    def one_frame() -> None:
        segmenter.decode(segmenter.encode(image), boxes=boxes, crops=crops)

    total = median_ms(time_calls(one_frame, iterations, warmup=5))
    stages = dict(vars(segmenter.timings))
    return total, stages


def official(
    checkpoint: str, device: str, image: np.ndarray, boxes: np.ndarray, iterations: int
) -> dict[str, float]:
    from mobile_sam import SamPredictor, sam_model_registry

    model = sam_model_registry["vit_t"](checkpoint=checkpoint).to(device).eval()
    predictor = SamPredictor(model)
    boxes_on_device = torch.as_tensor(boxes, dtype=torch.float, device=device)

    def loop() -> None:
        predictor.set_image(image)
        for box in boxes:
            predictor.predict(box=box, multimask_output=False)

    def batched() -> None:
        predictor.set_image(image)
        transformed = predictor.transform.apply_boxes_torch(boxes_on_device, image.shape[:2])
        masks, _, _ = predictor.predict_torch(None, None, transformed, multimask_output=False)
        masks.cpu().numpy()  # masks out, as ours

    def set_image() -> None:
        predictor.set_image(image)
        if boxes_on_device.is_cuda:
            torch.cuda.synchronize()  # set_image returns before the encoder has run

    figures = {
        "set_image": median_ms(time_calls(set_image, iterations, warmup=3)),
        "set_image + predict per box": median_ms(time_calls(loop, max(5, iterations // 4), 2)),
        "set_image + batched predict_torch": median_ms(time_calls(batched, iterations, warmup=3)),
    }
    return figures


def accuracy(
    segmenter: Segmenter, checkpoint: str, device: str, image: np.ndarray, boxes: np.ndarray
) -> tuple[float, float]:
    """Min mask IoU and max low-res relative error of `segmenter` against the official FP32
    pipeline, box by box."""
    from mobile_sam import SamPredictor, sam_model_registry

    model = sam_model_registry["vit_t"](checkpoint=checkpoint).to(device).eval()
    predictor = SamPredictor(model)
    predictor.set_image(image)
    result = segmenter.segment(image, boxes=boxes)
    ious, errors = [], []
    for index, box in enumerate(boxes):
        masks, _, logits = predictor.predict(box=box, multimask_output=False)
        union = np.logical_or(masks[0], result.masks[index]).sum()
        overlap = np.logical_and(masks[0], result.masks[index]).sum()
        ious.append(1.0 if union == 0 else overlap / union)
        want = logits[0]
        errors.append(np.linalg.norm(result.low_res_logits[index] - want) / np.linalg.norm(want))
    return float(min(ious)), float(max(errors))


def _stages_text(stages: dict[str, float]) -> str:
    return (
        ", ".join(f"{k.removesuffix('_ms')} {v:.2f}" for k, v in stages.items())
        + f" = {sum(stages.values()):.2f} ms"
    )


def model_files(args: argparse.Namespace) -> tuple[Path, str] | None:
    """(cache folder, checkpoint) from `add_model_arguments`' options, or None (said why)
    when no CUDA GPU is visible."""
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to measure")
        return None
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    return cache, checkpoint_or_random_weights(args.checkpoint, cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, device="cuda")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--compile-decoder", action="store_true", help="see above")
    args = parser.parse_args(argv)
    files = model_files(args)
    if files is None:
        return 2
    cache, checkpoint = files
    device, iterations = args.device, args.iterations
    print(
        f"GPU {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}; medians of {iterations}"
    )
    compiled = args.compile_decoder
    for fused in () if compiled else (True, False):
        label = "scaled_dot_product_attention" if fused else "explicit attention"
        figure = encoder_alone_ms(checkpoint, device, fused, iterations)
        print(f"encoder alone, FP16 CUDA graph, {label}: {figure:.2f} ms (CUDA events)")

    for precision in ("fp16",) if compiled else ("fp16", "fp32"):
        segmenter = Segmenter(
            checkpoint, "torch", cache, device, precision=precision, compile_decoder=compiled
        )
        for height, width, count in CASES if precision == "fp16" else CASES[1:2]:
            image, boxes = frame_and_boxes(height, width, count)
            for crops in (False, True):
                total, stages = ours(segmenter, image, boxes, crops, iterations)
                print(
                    f"ours {segmenter.backend.name} {width}x{height} {count:2d} boxes, "
                    f"{'crops' if crops else 'full masks'}: end to end {total:.2f} ms; "
                    f"device stages of the last frame: {_stages_text(stages)}",
                    flush=True,
                )
        if precision == "fp16":
            for height, width in ((480, 640), (1080, 1920)):
                image, boxes = frame_and_boxes(height, width, 10)
                iou, error = accuracy(segmenter, checkpoint, device, image, boxes)
                print(
                    f"{segmenter.backend.name} vs official FP32, {width}x{height}, 10 boxes: "
                    f"mask IoU min {iou:.4f}, low-res logits relative error max {error:.2e}"
                )
        del segmenter
        torch.cuda.empty_cache()
    for height, width in () if compiled else ((480, 640), (1080, 1920)):
        image, boxes = frame_and_boxes(height, width, 10)
        for name, figure in official(checkpoint, device, image, boxes, iterations).items():
            print(f"official {width}x{height} 10 boxes, {name}: {figure:.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
