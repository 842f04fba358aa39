"""Segment everything against the official `SamAutomaticMaskGenerator`, same weights, same
photo, in one run: wall time of each, the speed-up, and how many masks each side has that the
other matches (IoU >= 0.9).

Two settings: SAM's defaults (32x32 grid), and the filters off (predicted IoU and stability
thresholds 0, NMS as default) on a 16x16 grid. With random weights every predicted IoU is near
0 and no logit exceeds +1, so the defaults drop every mask: our generator, which filters by
predicted IoU before it upscales, then only decodes, while the official one upscales every mask
first. The second setting makes both upscale and score every mask, as trained weights make
them do for many.

  python -m benchmarks.bench_everything --checkpoint F [--backend onnxruntime]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import add_model_arguments, checkpoint_or_random_weights
from mobilesam_ros.core import Segmenter
from mobilesam_ros.core.everything import segment_everything
from mobilesam_ros.core.model.checkpoint import default_cache_dir
from mobilesam_ros.core.settings import EverythingSettings

SETTINGS = {
    "defaults, 32x32": {"points_per_side": 32},
    "filters off, 16x16": {
        "points_per_side": 16,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
    },
}


def camera_photo(width: int, height: int) -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)


def matched(masks: list[np.ndarray], others: list[np.ndarray]) -> int:
    def iou(a: np.ndarray, b: np.ndarray) -> float:
        union = np.logical_or(a, b).sum()
        return float(np.logical_and(a, b).sum() / union) if union else 1.0

    return sum(any(iou(m, o) >= 0.9 for o in others) for m in masks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, device="cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--size", default="640x480", help="photo size WxH")
    args = parser.parse_args(argv)
    import mobile_sam
    import torch

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    checkpoint = checkpoint_or_random_weights(args.checkpoint, cache)
    width, height = (int(v) for v in args.size.split("x"))
    image = camera_photo(width, height)
    segmenter = Segmenter(checkpoint, args.backend, cache, args.device, progress=False)
    model = mobile_sam.sam_model_registry["vit_t"](checkpoint=str(checkpoint)).eval()
    print(f"{args.size}; ours: {segmenter.backend.describe()}; official: PyTorch on cpu")
    for label, settings in SETTINGS.items():
        started = time.perf_counter()
        ours = segment_everything(segmenter, image, EverythingSettings(**settings))
        ours_s = time.perf_counter() - started
        generator = mobile_sam.SamAutomaticMaskGenerator(
            model, output_mode="binary_mask", **settings
        )
        started = time.perf_counter()
        with torch.no_grad():
            official = generator.generate(image)
        official_s = time.perf_counter() - started
        ours_full = [mask.crop.to_full() for mask in ours]
        official_full = [record["segmentation"] for record in official]
        print(
            f"{label}: ours {ours_s:.1f} s ({len(ours)} masks), official {official_s:.1f} s "
            f"({len(official)} masks): {official_s / ours_s:.2f}x; official masks matched "
            f"{matched(official_full, ours_full)}/{len(official)}, ours matched "
            f"{matched(ours_full, official_full)}/{len(ours)}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
