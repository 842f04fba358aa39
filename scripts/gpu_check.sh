#!/usr/bin/env bash
# Checks that need a CUDA GPU (and TensorRT where installed), in one run: the tests that skip on
# machines without them, then the GPU benchmarks against the official pipeline on the same GPU.
# Run from the repository root in an environment with the package installed (make setup, or
# pip install -e . plus torch, torchvision, segment-anything, mobilesam-mirror, scikit-image).
set -euo pipefail
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; \
print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
python -m pytest -q -rs test/test_core_torch_device.py test/test_tensorrt_support.py \
  test/test_tensorrt_build.py test/test_tensorrt_static.py
for boxes in 1 10; do
  mobilesam-ros bench --backend torch --device cuda --boxes "$boxes" --iterations 50
done
# TensorRT or TensorRT-RTX with cuda-python and a visible GPU (prints the reason otherwise;
# `import tensorrt` alone is not enough: tensorrt-stubs makes it import without a library).
if python -c "import sys; from mobilesam_ros.core.backends.tensorrt.compat import \
tensorrt_unavailable_reason as why; r = why(); print(r or 'TensorRT usable'); sys.exit(bool(r))"
then
  for precision in fp16 fp32; do
    # Build time, FP32 level and self-check per graph; then GPU memory per engine context.
    time mobilesam-ros build-engine --precision "$precision"
    mobilesam-ros verify-engine --precision "$precision"
  done
  for boxes in 1 10; do
    mobilesam-ros bench --backend tensorrt --device cuda --boxes "$boxes" --iterations 50
  done
else
  echo "TensorRT not usable here (reason above): engine checks skipped"
fi
