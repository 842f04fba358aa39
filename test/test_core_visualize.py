"""Label images and overlays."""

from __future__ import annotations

import numpy as np

from mobilesam_ros.core.visualize import draw_overlay, instance_color, label_image, mask_box


def _masks():
    a = np.zeros((60, 80), bool)
    a[10:30, 10:40] = True
    b = np.zeros((60, 80), bool)
    b[20:50, 30:70] = True
    return a, b


def test_label_image_resolves_overlaps_by_score():
    a, b = _masks()
    labels = label_image([a, b], [0.9, 0.5])
    assert labels.dtype == np.uint8
    assert labels[15, 15] == 1 and labels[45, 60] == 2 and labels[0, 0] == 0
    assert labels[25, 35] == 1  # overlap: the higher score wins
    assert label_image([a, b], [0.1, 0.5])[25, 35] == 2
    assert label_image([], [], size=(4, 5)).shape == (4, 5)
    assert label_image([a] * 300).dtype == np.uint16


def test_overlay_blends_only_masked_pixels_and_marks_boxes():
    a, b = _masks()
    image = np.full((60, 80, 3), 200, np.uint8)
    overlay = draw_overlay(image, [a, b], boxes=[(10, 10, 39, 29), None], alpha=0.5)
    assert np.array_equal(image, np.full((60, 80, 3), 200, np.uint8))  # input untouched
    assert np.array_equal(overlay[55, 5], image[55, 5])  # outside every mask and box
    inside = overlay[40, 50].astype(int)  # interior of b only
    expected = (0.5 * 200 + 0.5 * np.array(instance_color(1))).round()
    assert np.abs(inside - expected).max() <= 1
    assert mask_box(a) == (10, 10, 39, 29) and mask_box(np.zeros((3, 3), bool)) is None
