"""process-bags on a local Ray instance with 2 workers: each recording's output as process-bag
writes it, and a broken recording reported while the others go on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("ray")

from recordings import DETECTIONS_TOPIC, write_recording
from test_bag_process import output_masks, read_outputs

from mobilesam_ros.tools.bag.fleet import plan, process_bags
from mobilesam_ros.tools.bag.process import BagJob, BagReport, process_bag

pytestmark = pytest.mark.slow


def test_two_workers_process_a_folder_and_report_the_broken_recording(
    tmp_path: Path, random_checkpoint: Path, cache_dir: Path, segmenters: dict
) -> None:
    fleet = tmp_path / "fleet"
    for name, frames in (("morning", 2), ("noon", 1), ("evening", 2)):
        write_recording(
            fleet / name, frames=frames, storage="sqlite3" if name == "noon" else "mcap"
        )
    broken = fleet / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}\n")

    job = BagJob("/camera/image_raw", DETECTIONS_TOPIC, parameters={"tracking.enabled": False})
    model = {
        "checkpoint": str(random_checkpoint),
        "backend": "onnxruntime",
        "cache_dir": str(cache_dir),
        "device": "cpu",
        "precision": "fp32",
    }
    items = plan(fleet, tmp_path / "out", coco=True)
    outcomes = dict(
        (item.input.name, outcome) for item, outcome in process_bags(items, job, model, workers=2)
    )

    assert set(outcomes) == {"morning", "noon", "evening", "broken"}
    assert isinstance(outcomes["broken"], str) and "holds no" in outcomes["broken"]
    for name, frames in (("morning", 2), ("noon", 1), ("evening", 2)):
        report = outcomes[name]
        assert isinstance(report, BagReport) and report.complete and report.frames == frames
        assert (tmp_path / "out" / f"{name}.coco.json").is_file()
    # A worker's output is what process-bag writes for the same recording.
    process_bag(fleet / "evening", tmp_path / "alone", job, segmenters["onnxruntime"])
    together = read_outputs(tmp_path / "out" / "evening")["/mobilesam/masks"]
    alone = read_outputs(tmp_path / "alone")["/mobilesam/masks"]
    assert [t for t, _ in together] == [t for t, _ in alone]
    for (_, a), (_, b) in zip(together, alone, strict=True):
        np.testing.assert_array_equal(output_masks(a), output_masks(b))
