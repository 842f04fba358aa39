"""The OpenVINO backend: what `auto` picks on a CPU, precision and device errors, the model
cache, and BF16's accuracy against FP32 on CPUs that compute BF16.

FP32 parity with the official pipeline is in test_core_parity.py, with the other backends.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
from helpers import photo

from mobilesam_ros.core import BackendUnavailableError, Segmenter
from mobilesam_ros.core.backends import create_backend, openvino_backend

openvino = pytest.importorskip("openvino")
pytestmark = pytest.mark.slow

ON_X86 = platform.machine().lower() in ("x86_64", "amd64")
CPU_HAS_BF16 = openvino_backend.cpu_has_bf16(openvino.Core())
# Prompts on the astronaut photo (512x512): boxes around the face, the suit, the flag side.
BOXES = np.array([[160, 20, 330, 250], [100, 180, 450, 500], [0, 0, 200, 300]], np.float64)


@pytest.mark.skipif(not ON_X86, reason="auto takes OpenVINO on x86 CPUs only")
def test_auto_on_a_cpu_takes_openvino_in_fp32(random_checkpoint, cache_dir):
    backend = create_backend("auto", random_checkpoint, cache_dir, "cpu", progress=False)
    assert backend.name == "openvino"
    assert backend.describe() == "openvino on CPU (fp32)"  # never BF16 unless asked for


@pytest.mark.parametrize("reason", ["not installed", "not x86"])
def test_auto_on_a_cpu_falls_back_to_onnxruntime(random_checkpoint, cache_dir, monkeypatch, reason):
    if reason == "not installed":
        monkeypatch.setattr(openvino_backend, "openvino_available", lambda: False)
    else:
        monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    backend = create_backend("auto", random_checkpoint, cache_dir, "cpu", progress=False)
    assert backend.name == "onnxruntime"


def test_compiled_models_are_cached(random_checkpoint, cache_dir):
    """The first start compiles into cache_dir/openvino; the next one reads those blobs."""
    create_backend("openvino", random_checkpoint, cache_dir, "cpu", progress=False)
    folder = cache_dir / "openvino"
    blobs = {path: path.stat().st_mtime_ns for path in folder.iterdir()}
    assert blobs, "OpenVINO wrote no compiled model into its cache"
    create_backend("openvino", random_checkpoint, cache_dir, "cpu", progress=False)
    assert {path: path.stat().st_mtime_ns for path in folder.iterdir()} == blobs


@pytest.mark.parametrize(
    ("backend", "device", "precision", "message"),
    [
        ("onnxruntime", "cpu", "bf16", "precision 'bf16' is computed by backend 'openvino'"),
        ("torch", "gpu", "fp32", "device 'gpu' is an Intel GPU, run by backend 'openvino'"),
        ("openvino", "cuda", "fp32", "runs on device 'cpu' or 'gpu'"),
    ],
)
def test_choices_of_another_backend_are_refused_clearly(
    random_checkpoint, cache_dir, backend, device, precision, message
):
    with pytest.raises(BackendUnavailableError, match=message):
        create_backend(
            backend, random_checkpoint, cache_dir, device, False, {"precision": precision}
        )


@pytest.mark.skipif("GPU" in openvino.Core().available_devices, reason="an Intel GPU is here")
def test_intel_gpu_asked_for_where_there_is_none(random_checkpoint, cache_dir):
    with pytest.raises(BackendUnavailableError, match="OpenVINO sees no GPU here"):
        create_backend("openvino", random_checkpoint, cache_dir, "gpu", progress=False)


@pytest.mark.skipif(CPU_HAS_BF16, reason="this CPU computes BF16")
@pytest.mark.parametrize("backend", ["openvino", "auto"])
def test_bf16_without_cpu_support_is_an_error(random_checkpoint, cache_dir, backend):
    with pytest.raises(BackendUnavailableError, match="needs a CPU with AMX or AVX-512 BF16"):
        create_backend(backend, random_checkpoint, cache_dir, "cpu", False, {"precision": "bf16"})


def mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    union = np.logical_or(first, second).sum()
    return 1.0 if union == 0 else float(np.logical_and(first, second).sum() / union)


@pytest.mark.skipif(not CPU_HAS_BF16, reason="this CPU has neither AMX nor AVX-512 BF16")
def test_bf16_masks_against_fp32(segmenters, random_checkpoint, cache_dir):
    """BF16 masks against the FP32 ones of the same graphs, on random weights: mask IoU >= 0.97
    on average and >= 0.95 each, logits within 5 % (relative L2). PyTorch's emulated BF16 gives
    0.987 / 0.969 / 2.2 % (docs/BENCHMARKS.md)."""
    fp32 = segmenters["openvino"]
    bf16 = Segmenter(
        random_checkpoint, "openvino", cache_dir, "cpu", progress=False, precision="bf16"
    )
    assert bf16.backend.describe() == "openvino on CPU (bf16)"
    image = photo("astronaut")
    expected = fp32.segment(image, boxes=BOXES)
    result = bf16.segment(image, boxes=BOXES)
    ious = [mask_iou(expected.masks[i], result.masks[i]) for i in range(len(BOXES))]
    assert np.mean(ious) >= 0.97 and min(ious) >= 0.95, ious
    for reference, logits in zip(expected.low_res_logits, result.low_res_logits, strict=True):
        error = np.linalg.norm(logits - reference) / np.linalg.norm(reference)
        assert error <= 0.05, f"relative L2 of BF16 logits {error:.3f}"
