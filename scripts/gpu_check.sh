#!/usr/bin/env bash
# Checks that need a CUDA GPU (and TensorRT where installed), in one run: the PyTorch CUDA
# path's figures with the official pipeline on the same GPU (benchmarks/bench_cuda.py, also
# with the decoder through torch.compile), the node's per-frame work at 30 Hz with every output
# (benchmarks/bench_stream.py), the tests that skip on machines without a GPU, the latency
# benchmark (benchmarks/bench.py), the host stages on this machine's CPU and, where TensorRT and
# cuda-python are usable, engine builds and their benchmark.
#
# Runs from the repository root with no network and no package index: everything must already
# be there. Needed: the repository (working tree) and a Python (PYTHON, default python3) with
# torch (CUDA build), numpy, opencv-python, Pillow, scikit-image, pytest, onnx, onnxruntime and,
# for the comparison, segment-anything and mobilesam-mirror (`mobile_sam`). The checkpoint is
# written with random weights (same compute as the official one), the photos come with
# scikit-image, and the package and benchmarks/ run from the tree (PYTHONPATH), not from an
# install.
# A failing step is reported and the next one runs; the exit status says whether any failed.
# ITERATIONS (default 100) sets the timed frames per figure; STEP_TIMEOUT (default 300 s) stops a
# step that hangs.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
CACHE=${MOBILESAM_GPU_CHECK_CACHE:-$(mktemp -d)}
CHECKPOINT="$CACHE/random-weights-seed0.pt"  # written by the first step; no download here
ITERATIONS=${ITERATIONS:-100}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
failed=()

step() {
  local name=$1 started=$SECONDS
  shift
  echo "== $name"
  if timeout "$STEP_TIMEOUT" "$@"; then
    echo "== $name: done in $((SECONDS - started)) s"
  else
    echo "== $name: FAILED (status $?) after $((SECONDS - started)) s"
    failed+=("$name")
  fi
}

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; \
print('GPU:', torch.cuda.get_device_name(0), '| devices:', torch.cuda.device_count(), \
'| torch', torch.__version__, '| CUDA', torch.version.cuda)" || exit 2
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv || true
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores"

step "CUDA path against the official pipeline" \
  "$PYTHON" -m benchmarks.bench_cuda --cache-dir "$CACHE" --iterations "$ITERATIONS"
step "the same with the decoder through torch.compile" \
  "$PYTHON" -m benchmarks.bench_cuda --cache-dir "$CACHE" --iterations "$ITERATIONS" \
  --compile-decoder
step "the node's per-frame work at 30 Hz, every output" \
  "$PYTHON" -m benchmarks.bench_stream --backend torch --device cuda \
  --cache-dir "$CACHE" --checkpoint "$CHECKPOINT"
step "the same with tracking on" \
  "$PYTHON" -m benchmarks.bench_stream --backend torch --device cuda --tracking \
  --sizes 640x480 --seconds 5 --cache-dir "$CACHE" --checkpoint "$CHECKPOINT"
step "tests that need a GPU" \
  "$PYTHON" -m pytest -q -rs -p no:cacheprovider test/test_core_torch_device.py \
  test/test_tensorrt_support.py test/test_tensorrt_build.py test/test_tensorrt_static.py
step "latency benchmark, torch on CUDA, 10 boxes" \
  "$PYTHON" -m benchmarks.bench --backend torch --device cuda --boxes 10 \
  --iterations 30 --cache-dir "$CACHE" --checkpoint "$CHECKPOINT"
step "host stages on this machine's CPU" \
  "$PYTHON" -m benchmarks.bench_host --counts 10 --sizes 640x480,1920x1080

# TensorRT or TensorRT-RTX with cuda-python and a visible GPU (prints the reason otherwise;
# `import tensorrt` alone is not enough: tensorrt-stubs makes it import without a library).
if "$PYTHON" -c "import sys; from mobilesam_ros.core.backends.tensorrt.compat import \
tensorrt_unavailable_reason as why; r = why(); print(r or 'TensorRT usable'); sys.exit(bool(r))"
then
  for precision in fp16 fp32; do
    # Build time, FP32 level and self-check per graph; then GPU memory per engine context.
    step "build-engine $precision" "$PYTHON" -m mobilesam_ros.cli build-engine \
      --precision "$precision" --cache-dir "$CACHE" --checkpoint "$CHECKPOINT"
    step "verify-engine $precision" "$PYTHON" -m mobilesam_ros.cli verify-engine \
      --precision "$precision" --cache-dir "$CACHE" --checkpoint "$CHECKPOINT"
  done
  for boxes in 1 10; do
    step "bench tensorrt, $boxes boxes" "$PYTHON" -m benchmarks.bench \
      --backend tensorrt --device cuda --boxes "$boxes" --iterations 50 --cache-dir "$CACHE" \
      --checkpoint "$CHECKPOINT"
  done
else
  echo "TensorRT not usable here (reason above): engine checks skipped"
fi
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "all steps passed"
