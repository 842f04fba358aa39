"""Detector boxes into camera pixels, and the detections kept (core/stream/detections.py).

The pixel spaces are those of the detectors' own sources: Isaac ROS Grounding DINO scales the
camera image into 960x544 keeping its aspect ratio and pads right and below; Isaac ROS YOLOv8
into 640x640, padded on both sides; a plain resize stretches it.
"""

from __future__ import annotations

from collections import Counter

import pytest

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.settings import DetectionSettings
from mobilesam_ros.core.stream.detections import (
    BELOW_MIN_SCORE,
    OTHER_CLASSES,
    SUPPRESSED,
    camera_box,
    detection_prompts,
)

HD = (1080, 1920)  # (height, width)
OBJECT = (600.0, 300.0, 1000.0, 700.0)  # in 1920x1080 camera pixels


def network_box(box, scale, pad_x=0.0, pad_y=0.0):
    return tuple(v * scale + (pad_x if i % 2 == 0 else pad_y) for i, v in enumerate(box))


@pytest.mark.parametrize(
    ("settings", "in_network"),
    [
        # Grounding DINO: 1920x1080 -> 960x540 (factor 1/2), padded below to 544.
        (
            DetectionSettings(input_size="960x544", letterbox="bottom_right"),
            network_box(OBJECT, 0.5),
        ),
        # YOLOv8: 1920x1080 -> 640x360 (factor 1/3), 140 rows of padding above and below.
        (
            DetectionSettings(input_size="640x640", letterbox="center"),
            network_box(OBJECT, 1 / 3, 0.0, 140.0),
        ),
        # A stretch to 640x640: x by 1/3, y by 640/1080.
        (
            DetectionSettings(input_size="640x640", letterbox="none"),
            (200.0, 300.0 * 640 / 1080, 1000.0 / 3, 700.0 * 640 / 1080),
        ),
        (DetectionSettings(), OBJECT),  # camera pixels already
    ],
)
def test_boxes_come_back_to_camera_pixels(settings, in_network):
    assert camera_box(in_network, HD, settings) == pytest.approx(OBJECT)


def detection(box, class_id="cup", score=0.9, id_=""):
    return Prompt(
        id=id_ or "d0", box=box, class_id=class_id, detection_score=score, from_detector=True
    )


def test_low_scores_other_classes_and_duplicates_are_left_out_and_counted():
    settings = DetectionSettings(min_score=0.3, class_filter="cup, person", nms_iou=0.7)
    near = (602.0, 301.0, 1001.0, 702.0)  # the same object, boxed again
    other_class = (605.0, 300.0, 1000.0, 700.0)
    prompts = [
        detection(OBJECT, score=0.8, id_="a"),
        detection(near, score=0.9, id_="b"),  # kept: the higher score
        detection(other_class, class_id="person", score=0.5, id_="c"),  # another class: kept
        detection((0.0, 0.0, 50.0, 50.0), score=0.1, id_="d"),
        detection((10.0, 10.0, 90.0, 90.0), class_id="car", id_="e"),
    ]
    left_out = Counter()
    kept = detection_prompts(prompts, HD, settings, left_out)
    assert [p.id for p in kept] == ["b", "c"]  # message order
    assert left_out == Counter({SUPPRESSED: 1, BELOW_MIN_SCORE: 1, OTHER_CLASSES: 1})
    everything = detection_prompts(prompts, HD, DetectionSettings(nms_iou=1.0), Counter())
    assert len(everything) == 5  # suppression off, no filter


def test_boxes_are_mapped_before_duplicates_are_compared():
    settings = DetectionSettings(input_size="960x544", letterbox="bottom_right")
    prompts = [detection(network_box(OBJECT, 0.5), id_="a")]
    (kept,) = detection_prompts(prompts, HD, settings, Counter())
    assert kept.box == pytest.approx(OBJECT) and kept.id == "a"
    yolo = detection_prompts(prompts, HD, settings, Counter(), network_space=False)
    assert yolo[0].box == pytest.approx(network_box(OBJECT, 0.5))  # camera pixels as they are


@pytest.mark.parametrize("value", ["960", "960x", "x544", "0x544", "big"])
def test_a_network_size_must_be_width_x_height(value):
    with pytest.raises(InvalidInputError, match=r"detections\.input_size"):
        DetectionSettings(input_size=value)
