"""process-bag on a ROS install, as users start it there: `ros2 run mobilesam_ros mobilesam-ros
process-bag ...` with the install space sourced (the package is not pip-installed there)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("rosbags")

from recordings import IMAGE_TOPIC, process_bag_arguments, write_recording
from ros_cli import ros2
from test_bag_process import output_masks, read_outputs


def test_ros2_run_processes_a_recording(
    tmp_path: Path, segmenters: dict, random_checkpoint: Path, cache_dir: Path
) -> None:
    recording = write_recording(tmp_path / "in", frames=2, compressed=True)
    result = ros2(
        "run",
        "mobilesam_ros",
        "mobilesam-ros",
        *process_bag_arguments(recording, tmp_path / "out", random_checkpoint, cache_dir),
        env=dict(os.environ),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout
    assert "2 images" in result.stdout and "(complete)" in result.stdout
    masks = read_outputs(tmp_path / "out")["/mobilesam/masks"]
    segmenter = segmenters["onnxruntime"]
    for index, (_, message) in enumerate(masks):
        expected = segmenter.segment(recording.frames[index], boxes=recording.boxes[index]).masks
        assert (output_masks(message) == expected).all()
    assert len(masks) == 2 and IMAGE_TOPIC not in read_outputs(tmp_path / "out")
