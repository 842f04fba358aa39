"""Box geometry: one convention, inclusive pixel boxes, as the tight boxes of masks."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.stream.boxes import (
    area,
    box_iou,
    holds_points,
    prompt_box,
    visible_fraction,
)


def test_boxes_are_inclusive_like_the_boxes_of_masks():
    assert area((3.0, 4.0, 3.0, 4.0)) == 1.0  # one pixel
    assert area((0.0, 0.0, 9.0, 4.0)) == 50.0  # 10 columns, 5 rows
    assert area((5.0, 5.0, 4.0, 9.0)) == 0.0  # no column
    mask = np.zeros((20, 30), bool)
    mask[4:9, 7:17] = True
    box = MaskCrop.from_mask(mask).box
    assert box == (7, 4, 16, 8) and area(box) == mask.sum()


def test_iou_of_identical_adjacent_and_overlapping_boxes():
    box = (0.0, 0.0, 9.0, 9.0)
    assert box_iou(box, box) == 1.0
    assert box_iou((2.0, 2.0, 2.0, 2.0), (2.0, 2.0, 2.0, 2.0)) == 1.0  # one pixel each
    assert box_iou(box, (10.0, 0.0, 19.0, 9.0)) == 0.0  # side by side, no shared pixel
    assert box_iou(box, (9.0, 0.0, 18.0, 9.0)) == pytest.approx(10 / 190)  # one shared column


def test_visible_fraction_counts_pixels_inside_the_image():
    size = (10, 20)  # (H, W)
    assert visible_fraction((0.0, 0.0, 19.0, 9.0), size) == 1.0  # the whole image
    assert visible_fraction((-5.0, 0.0, 4.0, 9.0), size) == 0.5  # 5 of its 10 columns
    assert visible_fraction((20.0, 0.0, 29.0, 9.0), size) == 0.0  # right of the last column
    assert visible_fraction((5.0, 5.0, 3.0, 5.0), size) == 0.0  # inverted


def test_prompt_box_grows_by_the_inclusive_width_and_stays_in_the_image():
    size = (100, 200)
    assert prompt_box((50.0, 50.0, 59.0, 54.0), 0.5, 0.0, size) == (45.0, 47.5, 64.0, 56.5)
    assert prompt_box((50.0, 50.0, 50.0, 50.0), 0.0, 3.0, size) == (47.0, 47.0, 53.0, 53.0)
    assert prompt_box((2.0, 5.0, 190.0, 98.0), 0.1, 0.0, size) == (0.0, 0.0, 199.0, 99.0)


def test_points_on_the_edge_pixels_are_held():
    box = (10.0, 20.0, 19.0, 29.0)
    assert holds_points(box, [(10.0, 20.0), (19.0, 29.0)])
    assert not holds_points(box, [(15.0, 25.0), (20.0, 25.0)])
    assert not holds_points(box, [])
