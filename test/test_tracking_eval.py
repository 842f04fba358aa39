"""eval-tracking's scoring, with the box-filling stand-in for the model (doubles.py): it makes
the expected answer known (the simulated camera's true boxes)."""

from __future__ import annotations

import pytest
from doubles import BoxSegmenterDouble

from mobilesam_ros.core import InvalidInputError
from mobilesam_ros.core.settings import TrackingSettings
from mobilesam_ros.core.stream.tracking import Tracker
from mobilesam_ros.tools.tracking_eval import evaluate_tracking, simulated_sequence


def test_propagated_boxes_follow_the_simulated_camera():
    # No margin: the stand-in fills the prompt box as it is, so the tracked mask is the
    # propagated box, to be compared with the camera's true box.
    tracker = Tracker(TrackingSettings(margin=0.0, min_margin_px=0.0, max_age=1.0))
    report = evaluate_tracking(
        BoxSegmenterDouble(), simulated_sequence(12, objects=4), 6, tracker=tracker
    )
    assert report.frames == 12 and report.objects >= 3
    assert report.iou_between_detections > 0.85, report
    assert report.share_frames_all_tracked == 1.0
    assert report.id_switches == 0
    assert report.share_prompt_ids_kept == 1.0


def test_bad_settings_are_refused():
    with pytest.raises(InvalidInputError, match="detector_every"):
        evaluate_tracking(BoxSegmenterDouble(), simulated_sequence(1), 0)
    with pytest.raises(InvalidInputError, match="no frames"):
        evaluate_tracking(BoxSegmenterDouble(), [], 1)
