"""benchmarks/bench: its pipelines take turns on the same frame, and its accuracy columns compare
each of ours with the official pipeline's masks."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench
from mobilesam_ros.core.choices import DEFAULT_PRECISION


def test_accuracy_of_masks_and_logits():
    official = bench.Pipeline("official")
    ours = bench.Pipeline("ours")
    official.masks = np.zeros((2, 4, 4), bool)
    official.masks[0, :2] = True  # 8 pixels
    official.masks[1, :, :1] = True  # 4 pixels
    ours.masks = official.masks.copy()
    ours.masks[0, 2] = True  # 4 more: IoU 8 / 12
    official.logits = np.ones((2, 8, 8), np.float32)
    ours.logits = official.logits.copy()
    ours.logits[1] *= 1.5
    least, mean, error = bench.accuracy(ours, official)
    assert least == pytest.approx(8 / 12)
    assert mean == pytest.approx((8 / 12 + 1) / 2)
    assert error == pytest.approx(0.5)


def test_named_backends_with_and_without_precision():
    named = ["openvino:bf16", "onnxruntime"]
    assert bench.resolve_variants(named, "cpu") == (
        [("openvino", "bf16"), ("onnxruntime", DEFAULT_PRECISION)],
        [],
    )


@pytest.mark.parametrize("text", ["tflite", "openvino:int4"])
def test_unknown_backend_or_precision_stops_with_the_accepted_ones(text):
    with pytest.raises(SystemExit, match="expected BACKEND"):
        bench.resolve_variants([text], "cpu")


@pytest.mark.slow
def test_one_round_against_the_official_pipeline(random_checkpoint, cache_dir, capsys):
    pytest.importorskip("mobile_sam")
    results = bench.run_benchmark(
        str(random_checkpoint),
        ["onnxruntime:fp32"],
        device="cpu",
        cache_dir=str(cache_dir),
        iterations=1,
        num_boxes=3,
    )
    printed = capsys.readouterr().out
    ours = results["onnxruntime on cpu"]
    assert ours["mask_iou_least"] >= 0.99 and ours["logits_error"] <= 1e-3
    assert ours["speedup"] > 0 and "official (PyTorch on cpu)" in results
    assert "against the official pipeline" in printed
