#!/usr/bin/env bash
# Checks that need a CUDA GPU (and TensorRT where installed), in one run: the tests that skip on
# machines without them, then the GPU benchmarks against the official pipeline on the same GPU.
# Run from the repository root in an environment with the package installed (make setup, or
# pip install -e . plus torch, torchvision, segment-anything, mobilesam-mirror, scikit-image).
set -euo pipefail
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; \
print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
python -m pytest -q -rs test/test_core_torch_device.py test/test_tensorrt_support.py
for boxes in 1 10; do
  mobilesam-ros bench --backend torch --device cuda --boxes "$boxes" --iterations 50
done
if python -c "import tensorrt" 2>/dev/null; then
  mobilesam-ros build-engine --precision fp16
  mobilesam-ros verify-engine --precision fp16
  for boxes in 1 10; do
    mobilesam-ros bench --backend tensorrt --device cuda --boxes "$boxes" --iterations 50
  done
else
  echo "TensorRT not importable: engine checks skipped"
fi
