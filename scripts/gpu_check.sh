#!/usr/bin/env bash
# Checks and measures the GPU paths on a machine with an NVIDIA GPU, a Jetson included:
#
#   scripts/gpu_check.sh [RESULTS_FOLDER]      (default: ./gpu_check-YYYYMMDD-HHMMSS)
#
# Each path runs where it can and is skipped with the reason where it cannot, so a Jetson with
# TensorRT but no CUDA build of PyTorch still gets every TensorRT step:
# - platform.txt first: L4T release, board, power mode (nvpmodel -q), clocks (jetson_clocks
#   --show), nvidia-smi, library versions, CUDA runtime and driver versions, which paths run.
# - PyTorch on CUDA, where torch has CUDA: benchmarks/bench_cuda.py against the official
#   pipeline (needs mobile_sam), the same with the decoder through torch.compile (needs Triton),
#   the node's per-frame work at 30 Hz (benchmarks/bench_stream.py, also with tracking) and the
#   latency benchmark (benchmarks/bench.py).
# - The tests that skip without a GPU (those of the paths that run here), the host stages on
#   this machine's CPU (benchmarks/bench_host.py).
# - TensorRT, where TensorRT, cuda-python and a GPU are usable: per precision, a forced build
#   timed per graph and a second start (deserialization, first inference) by
#   benchmarks/engine_timings.py, and verify-engine (self-check, GPU memory per context); the
#   latency benchmark; a sustained run (SUSTAINED_SECONDS at 30 Hz, 640x480, 10 boxes, through
#   the node's pipeline). Where tegrastats exists it is logged during the builds and the
#   sustained run, and each log is summarized (RAM, GPU and EMC clocks, temperature,
#   throttling).
# The results folder gets platform.txt, one log per step, the tegrastats logs and summary.txt,
# which is printed at the end. A failing step is reported and the next one runs; the exit
# status says whether any failed.
#
# Runs from the repository root with no network and no package index: everything must already
# be there. Needed: a Python (PYTHON, default python3) with numpy, opencv-python, Pillow,
# scikit-image and onnxruntime; torch (a CPU build is enough) with onnx, torchvision and
# segment-anything for the ONNX export, unless the cache already holds the checkpoint's export;
# pytest for the tests; mobilesam-mirror (`mobile_sam`) for the comparisons with the official
# pipeline. The package and benchmarks/ run from the tree (PYTHONPATH), not from an install.
# CHECKPOINT=path/to/mobile_sam.pt uses the real weights; without it a checkpoint with random
# weights (same compute, meaningless masks; needs torch) is written into the cache.
# MOBILESAM_GPU_CHECK_CACHE names the cache folder (default: a new temporary one, so the first
# build finds no kernel timings of earlier ones); ITERATIONS (default 100) sets the timed frames
# per figure; SUSTAINED_SECONDS (default 60) the sustained run; STEP_TIMEOUT (default 300 s) and
# BUILD_TIMEOUT (default 3600 s, engine builds and tests) stop a step that hangs.
set -uo pipefail
OUT=${1:-gpu_check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
CHECKPOINT=${CHECKPOINT:-}
if [[ -n $CHECKPOINT ]]; then
  [[ -f $CHECKPOINT ]] || { echo "CHECKPOINT=$CHECKPOINT is not a file" >&2; exit 2; }
  CHECKPOINT=$(cd "$(dirname "$CHECKPOINT")" && pwd)/$(basename "$CHECKPOINT")
fi
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
CACHE=${MOBILESAM_GPU_CHECK_CACHE:-$(mktemp -d)}
ITERATIONS=${ITERATIONS:-100}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-3600}
SUSTAINED_SECONDS=${SUSTAINED_SECONDS:-60}
PLATFORM="$OUT/platform.txt"
SUMMARY="$OUT/summary.txt"
: >"$PLATFORM"
: >"$SUMMARY"
failed=()
step_count=0
last_log=

note() {  # a line on the console and in the summary
  echo "== $*"
  echo "$*" >>"$SUMMARY"
}

step() {  # step NAME TIMEOUT COMMAND...: run it, log it into the results folder, note the outcome
  local name=$1 limit=$2 started=$SECONDS status slug
  shift 2
  step_count=$((step_count + 1))
  slug=$(tr '[:upper:]' '[:lower:]' <<<"$name" | tr -cs 'a-z0-9' '-')
  last_log="$OUT/$(printf '%02d' "$step_count")-${slug%-}.log"
  echo "== $name"
  timeout "$limit" "$@" 2>&1 | tee "$last_log"
  status=${PIPESTATUS[0]}
  if ((status == 0)); then
    note "$name: done in $((SECONDS - started)) s"
  else
    ((status == 124)) && status="$status, timed out after $limit s"
    note "$name: FAILED (status $status) after $((SECONDS - started)) s, see ${last_log##*/}"
    failed+=("$name")
  fi
}

skip() {  # skip NAME REASON
  note "$1: skipped ($2)"
}

# ---------------------------------------------------------------------------------------------
# Platform record: every tool is optional; a missing one is noted.

# jetson_clocks --show and tegrastats show everything only to root: sudo where it asks no password.
as_root=()
if ((EUID != 0)) && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
fi

record() {  # record TITLE COMMAND...: its output into platform.txt, or why there is none
  local title=$1 tool=$2
  [[ $tool == sudo ]] && tool=$4  # sudo -n TOOL ...
  shift
  echo "## $title" >>"$PLATFORM"
  if command -v "$tool" >/dev/null 2>&1; then
    timeout 60 "$@" >>"$PLATFORM" 2>&1 || echo "(exit status $?)" >>"$PLATFORM"
  else
    echo "(not recorded: $tool not found)" >>"$PLATFORM"
  fi
  echo >>"$PLATFORM"
}

record_file() {  # record_file TITLE PATH
  echo "## $1" >>"$PLATFORM"
  if [[ -r $2 ]]; then
    tr -d '\0' <"$2" >>"$PLATFORM"  # the device tree's strings end in a NUL
  else
    echo "(not recorded: no $2)" >>"$PLATFORM"
  fi
  echo >>"$PLATFORM"
}

echo "== platform record: $PLATFORM"
{
  echo "gpu_check.sh, $(date -Iseconds), commit $(git rev-parse --short HEAD 2>/dev/null)"
  echo "$(uname -srm), $(nproc) CPUs"
  echo
} >>"$PLATFORM"
record_file "L4T release (/etc/nv_tegra_release)" /etc/nv_tegra_release
record_file "board (/proc/device-tree/model)" /proc/device-tree/model
record "power mode (nvpmodel -q)" nvpmodel -q
record "clocks (jetson_clocks --show)" "${as_root[@]}" jetson_clocks --show
record "nvidia-smi" nvidia-smi
record "CPU (lscpu)" lscpu
record "memory (free -m)" free -m
record "libraries, CUDA runtime and driver" "$PYTHON" -m benchmarks.platform_record versions

declare -A usable=()
echo "## which paths run here" >>"$PLATFORM"
for path in torch-cuda triton tensorrt official pytest; do
  # Only the verdict: importing mobile_sam, for one, warns on stderr.
  if verdict=$("$PYTHON" -m benchmarks.platform_record probe "$path" 2>/dev/null); then
    usable[$path]=1
  fi
  echo "$path: ${verdict:-the probe failed (does $PYTHON import numpy and the package?)}" \
    | tee -a "$PLATFORM"
done

# The platform's main facts at the head of the summary.
{
  if [[ -r /etc/nv_tegra_release ]]; then head -n 1 /etc/nv_tegra_release; fi
  grep -m 1 '^NV Power Mode' "$PLATFORM"
  sed -n '/^## libraries/,/^$/p' "$PLATFORM" \
    | grep -E '^(GPU 0|CUDA[a-z ]*|tensorrt|cuda-python|torch):'
} >>"$SUMMARY"

tegrastats_cmd=()
if command -v tegrastats >/dev/null 2>&1; then
  tegrastats_cmd=("${as_root[@]}" tegrastats)
  if ((EUID != 0 && ${#as_root[@]} == 0)); then
    echo "tegrastats: not root and no password-less sudo, so it may leave out the GPU clock" \
      | tee -a "$PLATFORM"
  fi
fi
tegrastats_pid=

tegrastats_start() {  # tegrastats_start LABEL: log every 500 ms into tegrastats-LABEL.log
  ((${#tegrastats_cmd[@]})) || return 0
  "${tegrastats_cmd[@]}" --interval 500 --logfile "$OUT/tegrastats-$1.log" &
  tegrastats_pid=$!
}

tegrastats_stop() {  # tegrastats_stop LABEL: stop the log and put its summary in summary.txt
  [[ -n $tegrastats_pid ]] || return 0
  kill "$tegrastats_pid" 2>/dev/null
  wait "$tegrastats_pid" 2>/dev/null
  tegrastats_pid=
  step "tegrastats summary, $1" 60 "$PYTHON" -m benchmarks.platform_record tegrastats \
    "$OUT/tegrastats-$1.log" --label "$1" --record "$SUMMARY"
}
trap '[[ -n $tegrastats_pid ]] && kill "$tegrastats_pid" 2>/dev/null' EXIT

if ((${#tegrastats_cmd[@]} == 0)); then
  note "tegrastats: not found here (not a Jetson?); no RAM, clock and temperature logs"
fi

# ---------------------------------------------------------------------------------------------
# The checkpoint: the real one when given, else random weights written once into the cache.

mkdir -p "$CACHE"
echo "cache folder: $CACHE" | tee -a "$PLATFORM"
if [[ -n $CHECKPOINT ]]; then
  note "checkpoint: $CHECKPOINT (given)"
else
  CHECKPOINT="$CACHE/random-weights-seed0.pt"
  step "checkpoint with random weights" "$STEP_TIMEOUT" "$PYTHON" -c "import sys, pathlib; \
from benchmarks.common import checkpoint_or_random_weights as write; \
write(None, pathlib.Path(sys.argv[1]))" "$CACHE"
  if [[ -f $CHECKPOINT ]]; then
    note "checkpoint: random weights (same compute, meaningless masks), $CHECKPOINT"
  else
    CHECKPOINT=
    note "checkpoint: none (writing random weights needs torch; set CHECKPOINT=path)"
  fi
fi
model=(--cache-dir "$CACHE" --checkpoint "$CHECKPOINT")

# ---------------------------------------------------------------------------------------------
# PyTorch on CUDA

if [[ -z ${usable[torch-cuda]:-} ]]; then
  skip "PyTorch CUDA benchmarks" "no CUDA build of PyTorch with a GPU, see platform.txt"
elif [[ -z $CHECKPOINT ]]; then
  skip "PyTorch CUDA benchmarks" "no checkpoint"
else
  if [[ -n ${usable[official]:-} ]]; then
    step "CUDA path against the official pipeline" "$STEP_TIMEOUT" \
      "$PYTHON" -m benchmarks.bench_cuda "${model[@]}" --iterations "$ITERATIONS"
  else
    skip "CUDA path against the official pipeline" "mobile_sam is not installed"
  fi
  if [[ -z ${usable[triton]:-} ]]; then
    skip "decoder through torch.compile" "Triton is not importable; torch.compile needs it"
  elif [[ -z ${usable[official]:-} ]]; then
    skip "decoder through torch.compile" "mobile_sam is not installed (its accuracy check)"
  else
    step "the same with the decoder through torch.compile" "$STEP_TIMEOUT" \
      "$PYTHON" -m benchmarks.bench_cuda "${model[@]}" --iterations "$ITERATIONS" \
      --compile-decoder
  fi
  step "the node's per-frame work at 30 Hz, every output, torch" "$STEP_TIMEOUT" \
    "$PYTHON" -m benchmarks.bench_stream --backend torch --device cuda "${model[@]}"
  step "the same with tracking on" "$STEP_TIMEOUT" \
    "$PYTHON" -m benchmarks.bench_stream --backend torch --device cuda --tracking \
    --sizes 640x480 --seconds 5 "${model[@]}"
  step "latency benchmark, torch on CUDA, 10 boxes" "$STEP_TIMEOUT" \
    "$PYTHON" -m benchmarks.bench --backend torch --device cuda --boxes 10 --iterations 30 \
    "${model[@]}"
fi

# ---------------------------------------------------------------------------------------------
# Tests and host stages

tests=()
[[ -n ${usable[torch-cuda]:-} ]] && tests+=(test/test_core_torch_device.py)
[[ -n ${usable[tensorrt]:-} ]] && tests+=(test/test_tensorrt_support.py
  test/test_tensorrt_build.py test/test_tensorrt_static.py)
if [[ -z ${usable[pytest]:-} ]]; then
  skip "tests that need a GPU" "pytest is not installed"
elif ((${#tests[@]} == 0)); then
  skip "tests that need a GPU" "neither PyTorch CUDA nor TensorRT runs here"
else
  step "tests that need a GPU" "$BUILD_TIMEOUT" \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider "${tests[@]}"
fi
step "host stages on this machine's CPU" "$STEP_TIMEOUT" \
  "$PYTHON" -m benchmarks.bench_host --counts 10 --sizes 640x480,1920x1080

# ---------------------------------------------------------------------------------------------
# TensorRT: no PyTorch CUDA needed

if [[ -z ${usable[tensorrt]:-} ]]; then
  skip "TensorRT steps" "TensorRT not usable here, see platform.txt"
elif [[ -z $CHECKPOINT ]]; then
  skip "TensorRT steps" "no checkpoint"
else
  for precision in fp16 fp32; do
    tegrastats_start "build-$precision"
    step "engine build $precision, timed per graph" "$BUILD_TIMEOUT" \
      "$PYTHON" -m benchmarks.engine_timings build --precision "$precision" "${model[@]}" \
      --record "$SUMMARY"
    tegrastats_stop "build-$precision"
    step "second start $precision: deserialize, first inference" "$STEP_TIMEOUT" \
      "$PYTHON" -m benchmarks.engine_timings start --precision "$precision" "${model[@]}" \
      --record "$SUMMARY"
    step "verify-engine $precision" "$STEP_TIMEOUT" \
      "$PYTHON" -m mobilesam_ros.cli verify-engine --precision "$precision" "${model[@]}"
  done
  # The official pipeline runs on the same device, so only where torch has CUDA.
  official=()
  [[ -z ${usable[torch-cuda]:-} ]] && official=(--no-official)
  for boxes in 1 10; do
    step "latency benchmark, tensorrt, $boxes boxes" "$STEP_TIMEOUT" \
      "$PYTHON" -m benchmarks.bench --backend tensorrt --device cuda --boxes "$boxes" \
      --iterations 50 "${official[@]}" "${model[@]}"
  done
  tegrastats_start sustained
  step "sustained ${SUSTAINED_SECONDS} s at 30 Hz, tensorrt, 640x480, 10 boxes" \
    "$((SUSTAINED_SECONDS + STEP_TIMEOUT))" \
    "$PYTHON" -m benchmarks.bench_stream --backend tensorrt --device cuda --sizes 640x480 \
    --rate 30 --seconds "$SUSTAINED_SECONDS" --boxes 10 "${model[@]}"
  grep -h '^640x480, ' "$last_log" >>"$SUMMARY"
  tegrastats_stop sustained
fi

echo
echo "== summary ($SUMMARY)"
cat "$SUMMARY"
echo "results: $OUT"
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "all steps that ran passed"
