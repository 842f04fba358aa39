"""The `mobilesam-ros` command line: segment writes mask and overlay PNGs; errors exit 2."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from helpers import photo

from mobilesam_ros.cli import main


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_segment_writes_mask_and_overlay(
    segmenters, random_checkpoint, cache_dir, tmp_path, capsys, backend
):
    expected_segmenter = segmenters[backend]  # skips a backend not installed here
    boxes = [[30, 40, 300, 380], [250, 60, 590, 390]]
    args = ["segment", "skimage:coffee", "--checkpoint", str(random_checkpoint)]
    args += ["--cache-dir", str(cache_dir), "--backend", backend, "--device", "cpu"]
    args += ["--precision", "fp32"]
    for box in boxes:
        args += ["--box", *map(str, box)]
    assert main([*args, "--output-dir", str(tmp_path)]) == 0
    mask = cv2.imread(str(tmp_path / "coffee_mask.png"), cv2.IMREAD_UNCHANGED)
    overlay = cv2.imread(str(tmp_path / "coffee_overlay.png"))
    image = photo("coffee")
    assert mask.shape == image.shape[:2] and overlay.shape == image.shape

    expected = expected_segmenter.segment(image, boxes=np.array(boxes, float))
    step = 255 // len(boxes)
    for i, instance in enumerate(expected.masks):
        # Each instance's pixels carry its label, except where a higher-scored one overlaps.
        others = np.delete(expected.masks, i, axis=0).any(axis=0)
        alone = instance & ~others
        assert np.all(mask[alone] == (i + 1) * step)
    assert np.all(mask[~expected.masks.any(axis=0)] == 0)
    assert not np.array_equal(overlay, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    printed = capsys.readouterr()
    assert "predicted IoU" in printed.out
    assert f"segmenting with {backend} on" in printed.err


def test_export_prints_graph_paths(segmenters, random_checkpoint, cache_dir, capsys):
    assert (
        main(["export", "--checkpoint", str(random_checkpoint), "--cache-dir", str(cache_dir)]) == 0
    )
    printed = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in printed] == [
        "encoder.onnx",
        "decoder_single.onnx",
        "decoder_multi.onnx",
    ]


def test_errors_exit_with_a_message(tmp_path, capsys):
    pytest.importorskip("torch")  # telling a web page from a checkpoint reads it with PyTorch
    not_a_checkpoint = tmp_path / "mobile_sam.pt"
    not_a_checkpoint.write_text("<!DOCTYPE html><html>404</html>")
    code = main(
        [
            "segment",
            "skimage:coffee",
            "--box",
            "1",
            "1",
            "9",
            "9",
            "--checkpoint",
            str(not_a_checkpoint),
            "--cache-dir",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "HTML page" in capsys.readouterr().err
    assert main(["segment", "skimage:coffee", "--checkpoint", str(not_a_checkpoint)]) == 2
    assert "at least one --box or --point" in capsys.readouterr().err


def test_export_without_pytorch_says_what_to_install(tmp_path, capsys, monkeypatch):
    # Machines that run only cached graphs (ONNX Runtime) have no PyTorch to export new ones.
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    checkpoint = tmp_path / "mobile_sam.pt"
    checkpoint.write_bytes(b"weights whose graphs are not cached")
    args = ["segment", "skimage:coffee", "--box", "1", "1", "9", "9"]
    args += ["--checkpoint", str(checkpoint), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--backend", "onnxruntime"]) == 2
    error = capsys.readouterr().err
    assert "needs torch" in error and "pip install torch" in error


def test_eval_tracking_needs_images_and_boxes_together(random_checkpoint, capsys):
    code = main(["eval-tracking", "--checkpoint", str(random_checkpoint), "--images", "frames/"])
    assert code == 2
    assert "--images and --boxes go together" in capsys.readouterr().err
