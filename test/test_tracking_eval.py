"""eval-tracking's scoring, with a box-filling stand-in for the model (a test double)."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam_ros.core import InvalidInputError, SegmentationResult
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.processing.preprocess import FrameGeometry
from mobilesam_ros.core.settings import TrackingSettings
from mobilesam_ros.core.stream.tracking import Tracker
from mobilesam_ros.tools.tracking_eval import evaluate_tracking, simulated_sequence


class BoxFillingSegmenter:
    """Test double for Segmenter: each box prompt's mask is the box itself, IoU 0.9.

    It makes the expected answer known (the simulated camera's true boxes), so the tracker's
    propagation and the report's bookkeeping can be checked without model weights."""

    def encode(self, image, channel_order="rgb"):
        return FrameGeometry.for_image(*image.shape[:2])

    def decode(
        self,
        geometry,
        boxes=None,
        points=None,
        point_labels=None,
        multimask=False,
        mask_input=None,
        crops=False,
        low_res_logits=True,
    ):
        height, width = geometry.original_size
        boxes = np.asarray(boxes, float).reshape(-1, 4)
        masks = np.zeros((len(boxes), height, width), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
            mask[
                max(round(y0), 0) : round(y1) + 1,
                max(round(x0), 0) : round(x1) + 1,
            ] = True
        scores = np.full(len(boxes), 0.9, np.float32)
        low_res = np.zeros((len(boxes), 256, 256), np.float32)
        return SegmentationResult(masks, scores, low_res, [MaskCrop.from_mask(m) for m in masks])


def test_propagated_boxes_follow_the_simulated_camera():
    # No margin: the stand-in fills the prompt box as it is, so the tracked mask is the
    # propagated box, to be compared with the camera's true box.
    tracker = Tracker(TrackingSettings(margin=0.0, min_margin_px=0.0, max_age=1.0))
    report = evaluate_tracking(
        BoxFillingSegmenter(), simulated_sequence(12, objects=4), 6, tracker=tracker
    )
    assert report.frames == 12 and report.objects >= 3
    assert report.iou_between_detections > 0.85, report
    assert report.share_frames_all_tracked == 1.0
    assert report.id_switches == 0
    assert report.share_prompt_ids_kept == 1.0


def test_bad_settings_are_refused():
    with pytest.raises(InvalidInputError, match="detector_every"):
        evaluate_tracking(BoxFillingSegmenter(), simulated_sequence(1), 0)
    with pytest.raises(InvalidInputError, match="no frames"):
        evaluate_tracking(BoxFillingSegmenter(), [], 1)
