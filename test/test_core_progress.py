"""Progress reaches the log (and so a ROS node's logger) in steps, not only a terminal bar."""

from __future__ import annotations

import logging

from mobilesam_ros.core.progress import Progress


def test_progress_logs_every_step_once(caplog):
    logger = logging.getLogger("test.progress")
    with (
        caplog.at_level(logging.INFO, logger="test.progress"),
        Progress(1000, "downloading x", logger, enabled=False, step_percent=25) as progress,
    ):
        for _ in range(10):
            progress.update(100)
    assert [r.getMessage() for r in caplog.records] == [
        "downloading x: started",
        "downloading x: 30 %",
        "downloading x: 50 %",
        "downloading x: 80 %",
        "downloading x: 100 %",
    ]
