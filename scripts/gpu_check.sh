#!/usr/bin/env bash
# Checks that need a CUDA GPU (and TensorRT where installed), in one run: the tests that skip on
# machines without a GPU, then the PyTorch CUDA path's figures (encoder alone, stages from CUDA
# events, end to end, FP16 accuracy) and the benchmark against the official pipeline, same GPU,
# same run.
#
# Runs from the repository root with no network and no package index: everything must already
# be there. Needed: the repository (working tree) and a Python (PYTHON, default python3) with
# torch (CUDA build), numpy, opencv-python, Pillow, scikit-image, segment-anything, pytest and,
# for the comparison, mobilesam-mirror (`mobile_sam`); onnx/onnxruntime for the export tests.
# Nothing else is carried: the checkpoint is written with random weights (same compute as the
# official one), the photos come with scikit-image, and the package runs from the tree
# (PYTHONPATH), not from an install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
CACHE=${MOBILESAM_GPU_CHECK_CACHE:-$(mktemp -d)}
CHECKPOINT="$CACHE/random-weights-seed0.pt"  # written below; no download on this machine

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; \
print('GPU:', torch.cuda.get_device_name(0), '| devices:', torch.cuda.device_count(), \
'| torch', torch.__version__, '| CUDA', torch.version.cuda)"
"$PYTHON" -m pytest -q -rs -p no:cacheprovider test/test_core_torch_device.py \
  test/test_tensorrt_support.py test/test_tensorrt_build.py test/test_tensorrt_static.py

"$PYTHON" - "$CACHE" <<'EOF'
"""PyTorch CUDA path: encoder alone (SDPA and explicit attention), stages, end to end, accuracy."""
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from mobilesam_ros.core import Segmenter
from mobilesam_ros.core.backends.torch_device import DevicePipeline
from mobilesam_ros.core.model.modules import load_modules, write_random_checkpoint
from mobilesam_ros.tools.bench import _median_ms, _time, benchmark_boxes, benchmark_frame

cache = Path(sys.argv[1])
checkpoint = write_random_checkpoint(cache / "random-weights-seed0.pt", seed=0)
modules = load_modules(checkpoint)


def median_ms(fn, iterations=100, warmup=10):
    return _median_ms(_time(fn, iterations, warmup))


for fused in (True, False):
    pipeline = DevicePipeline(modules.encoder, "cuda", fp16=True, fused_attention=fused)
    run = pipeline._encoder_program
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(100):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    label = "scaled_dot_product_attention" if fused else "explicit attention"
    print(f"encoder alone, FP16 graph, {label}: {statistics.median(times[10:]):.2f} ms (events)")
    del pipeline

segmenter = Segmenter(checkpoint, "torch", cache, "cuda", progress=False)
frame = benchmark_frame()
for count, size in ((1, None), (10, None), (50, None), (10, (1080, 1920))):
    image = frame if size is None else cv2.resize(frame, size[::-1])
    boxes = benchmark_boxes(count)
    if size is not None:
        boxes = boxes * [size[1] / frame.shape[1], size[0] / frame.shape[0]] * 2

    def one_frame(image=image, boxes=boxes):
        segmenter.decode(segmenter.encode(image), boxes=boxes)

    total = median_ms(one_frame)
    stages = segmenter.backend.stage_timings()
    height, width = image.shape[:2]
    print(
        f"{width}x{height}, {count:2d} boxes: end to end {total:.2f} ms (wall, median of 100); "
        "last frame on the device (events): "
        + ", ".join(f"{k[:-3]} {v:.2f}" for k, v in stages.items())
        + f" = {sum(stages.values()):.2f} ms"
    )

try:
    from mobile_sam import SamPredictor, sam_model_registry
except ImportError:
    print("accuracy vs the official pipeline skipped: mobile_sam not importable")
else:
    model = sam_model_registry["vit_t"](checkpoint=str(checkpoint)).cuda().eval()
    predictor = SamPredictor(model)
    predictor.set_image(frame)
    boxes = benchmark_boxes(10)
    result = segmenter.segment(frame, boxes=boxes)
    ious, errors = [], []
    for i, box in enumerate(boxes):
        masks, _, logits = predictor.predict(box=box, multimask_output=False)
        union = np.logical_or(masks[0], result.masks[i]).sum()
        ious.append(1.0 if union == 0 else np.logical_and(masks[0], result.masks[i]).sum() / union)
        want = logits[0]
        errors.append(np.linalg.norm(result.low_res_logits[i] - want) / np.linalg.norm(want))
    print(
        f"FP16 vs official FP32 at 640x480, 10 boxes: mask IoU min {min(ious):.4f}, "
        f"low-res logits relative error max {max(errors):.2e}"
    )
EOF

for boxes in 1 10; do
  "$PYTHON" -m mobilesam_ros.cli bench --backend torch --device cuda --boxes "$boxes" \
    --iterations 50 --cache-dir "$CACHE" --checkpoint "$CHECKPOINT"
done
# TensorRT or TensorRT-RTX with cuda-python and a visible GPU (prints the reason otherwise;
# `import tensorrt` alone is not enough: tensorrt-stubs makes it import without a library).
if "$PYTHON" -c "import sys; from mobilesam_ros.core.backends.tensorrt.compat import \
tensorrt_unavailable_reason as why; r = why(); print(r or 'TensorRT usable'); sys.exit(bool(r))"
then
  for precision in fp16 fp32; do
    # Build time, FP32 level and self-check per graph; then GPU memory per engine context.
    time "$PYTHON" -m mobilesam_ros.cli build-engine --precision "$precision" \
      --cache-dir "$CACHE" --checkpoint "$CHECKPOINT"
    "$PYTHON" -m mobilesam_ros.cli verify-engine --precision "$precision" \
      --cache-dir "$CACHE" --checkpoint "$CHECKPOINT"
  done
  for boxes in 1 10; do
    "$PYTHON" -m mobilesam_ros.cli bench --backend tensorrt --device cuda --boxes "$boxes" \
      --iterations 50 --cache-dir "$CACHE" --checkpoint "$CHECKPOINT"
  done
else
  echo "TensorRT not usable here (reason above): engine checks skipped"
fi
