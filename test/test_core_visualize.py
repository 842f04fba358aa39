"""Label images and overlays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import photo

from mobilesam_ros.core import visualize
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.visualize import (
    MaskCrop,
    draw_label_overlay,
    instance_color,
    instance_palette,
    label_image_from_crops,
    mask_box,
)


def _masks():
    a = np.zeros((60, 80), bool)
    a[10:30, 10:40] = True
    b = np.zeros((60, 80), bool)
    b[20:50, 30:70] = True
    return a, b


def _reference_labels(masks, scores=None) -> np.ndarray:
    """Label i + 1 where masks[i] is the top instance there: the highest score (the later one
    on equal scores), or without scores the later mask."""
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(masks))
    rank = np.empty(len(masks), np.int64)
    rank[order] = np.arange(len(masks))
    priority = np.where(np.stack(masks), rank[:, None, None] + 1, 0)
    labels = np.where(priority.max(axis=0) > 0, priority.argmax(axis=0) + 1, 0)
    return labels.astype(np.uint8 if len(masks) <= 255 else np.uint16)


def test_label_image_from_crops_resolves_overlaps_by_score():
    a, b = _masks()
    crops = [MaskCrop.from_mask(a), MaskCrop.from_mask(b)]
    labels = label_image_from_crops(crops, [0.9, 0.5])
    assert labels.dtype == np.uint8
    assert labels[15, 15] == 1 and labels[45, 60] == 2 and labels[0, 0] == 0
    assert labels[25, 35] == 1  # overlap: the higher score wins
    assert label_image_from_crops(crops, [0.1, 0.5])[25, 35] == 2
    assert label_image_from_crops(crops)[25, 35] == 2  # no scores: the later instance wins
    assert label_image_from_crops(crops[:1] * 300).dtype == np.uint16


def test_label_overlay_blends_only_masked_pixels_and_marks_boxes():
    a, b = _masks()
    image = np.full((60, 80, 3), 200, np.uint8)
    labels = label_image_from_crops([MaskCrop.from_mask(a), MaskCrop.from_mask(b)])
    overlay = draw_label_overlay(image, labels, boxes=[(10, 10, 39, 29), None], alpha=0.5)
    assert np.array_equal(image, np.full((60, 80, 3), 200, np.uint8))  # input untouched
    assert np.array_equal(overlay[55, 5], image[55, 5])  # outside every mask and box
    inside = overlay[40, 50].astype(int)  # interior of b only
    expected = (0.5 * 200 + 0.5 * np.array(instance_color(1))).round()
    assert np.abs(inside - expected).max() <= 1
    assert mask_box(a) == (10, 10, 39, 29) and mask_box(np.zeros((3, 3), bool)) is None


# -- fast path: label image from crops, overlay from the label image ---------------------------


def _reference_blend(bgr: np.ndarray, masks, alpha: float) -> np.ndarray:
    """The masks' colors alone (no outlines, boxes or captions) blended in one pass: later
    masks win."""
    out = bgr.copy()
    colors = np.zeros_like(out)
    covered = np.zeros(out.shape[:2], dtype=bool)
    for index, mask in enumerate(masks):
        colors[mask] = instance_color(index)
        covered |= mask
    blended = cv2.addWeighted(out, 1.0 - alpha, colors, alpha, 0.0)
    np.copyto(out, blended, where=covered[..., None])
    return out


def _random_masks(rng, count, size):
    """Blobs of every size, overlapping, incl. an empty mask and ones touching the borders."""
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    masks = []
    for _ in range(count):
        cy, cx = rng.uniform(-0.1, 1.1) * height, rng.uniform(-0.1, 1.1) * width
        radius = rng.uniform(0.02, 0.8) * max(size)
        masks.append(np.hypot(rows - cy, cols - cx) < radius)
    masks[0] = np.zeros(size, bool)
    masks[1] = np.ones(size, bool)
    return masks


def test_palette_matches_instance_colors():
    palette = instance_palette(300)
    assert palette.shape == (301, 3) and tuple(palette[0]) == (0, 0, 0)
    assert all(tuple(int(c) for c in palette[i + 1]) == instance_color(i) for i in range(300))


@pytest.mark.parametrize("count", [1, 10, 300])
def test_label_image_from_crops_equals_the_reference(count):
    rng = np.random.default_rng(count)
    masks = _random_masks(rng, max(count, 2), (48, 64))[:count]
    crops = [MaskCrop.from_mask(m) for m in masks]
    scores = rng.uniform(size=len(masks))
    for given in (scores, None):
        expected = _reference_labels(masks, given)
        labels = label_image_from_crops(crops, given)
        assert labels.dtype == expected.dtype and np.array_equal(labels, expected)
    buffer = np.full((48, 64), 7, expected.dtype)
    assert label_image_from_crops(crops, None, out=buffer) is buffer
    assert np.array_equal(buffer, _reference_labels(masks))
    assert not label_image_from_crops([], size=(4, 5)).any()


def test_label_image_from_crops_refuses_bad_input():
    crop = MaskCrop.from_mask(np.ones((4, 5), bool))
    with pytest.raises(InvalidInputError, match="needs `size`"):
        label_image_from_crops([])
    with pytest.raises(InvalidInputError, match="2 scores for 1 crops"):
        label_image_from_crops([crop], [0.1, 0.2])
    with pytest.raises(InvalidInputError, match="belongs to a"):
        label_image_from_crops([crop], size=(8, 8))


@pytest.mark.parametrize("size", [(60, 80), (1, 1), (33, 7)])
@pytest.mark.parametrize("box_overhead", [0, 40_000], ids=["per-box", "union"])
def test_label_overlay_colors_equal_the_reference_blend(size, box_overhead, monkeypatch):
    monkeypatch.setattr(visualize, "_BOX_OVERHEAD_PIXELS", box_overhead)
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    masks = _random_masks(rng, 6, size)
    for alpha in (0.5, 0.3):
        expected = _reference_blend(image, masks, alpha)
        labels = label_image_from_crops([MaskCrop.from_mask(m) for m in masks])  # later wins
        overlay = draw_label_overlay(image, labels, alpha=alpha, outlines=False)
        assert np.array_equal(overlay, expected)
        boxes = [mask_box(m) for m in masks]
        overlay = draw_label_overlay(image, labels, alpha=alpha, mask_boxes=boxes, outlines=False)
        assert np.array_equal(overlay, expected)
    small = [np.zeros(size, bool) for _ in range(3)]  # boxes far smaller than their union
    small[0][:2, :2] = small[1][-3:, -1:] = small[2][size[0] // 2, size[1] // 2] = True
    labels = _reference_labels(small)
    for boxes in (None, [mask_box(m) for m in small]):
        overlay = draw_label_overlay(image, labels, mask_boxes=boxes, outlines=False)
        assert np.array_equal(overlay, _reference_blend(image, small, 0.5))
    untouched = image.copy()
    labels = _reference_labels(masks)
    overlay = draw_label_overlay(image, labels)
    assert np.array_equal(image, untouched)
    buffer = np.zeros_like(image)
    assert draw_label_overlay(image, labels, out=buffer) is buffer
    assert np.array_equal(buffer, overlay)
    assert draw_label_overlay(image, labels, out=image) is image  # in place
    assert np.array_equal(image, overlay)


def test_label_overlay_outlines_follow_label_edges():
    a, b = _masks()
    image = np.full((60, 80, 3), 200, np.uint8)
    labels = _reference_labels([a, b])
    plain = draw_label_overlay(image, labels, outlines=False)
    outlined = draw_label_overlay(image, labels)
    changed = np.any(plain != outlined, axis=2)
    assert changed[10, 20] and changed[9, 20]  # both sides of a's top edge
    assert not changed[15, 20] and not changed[40, 50] and not changed[55, 5]  # away from edges
    assert tuple(outlined[9, 20]) == instance_color(0)
    assert tuple(outlined[25, 29]) == instance_color(1)  # a | b edge: the higher label's color


def test_label_overlay_boxes_captions_and_scale():
    a, b = _masks()
    image = np.full((60, 80, 3), 200, np.uint8)
    labels = _reference_labels([a, b])
    overlay = draw_label_overlay(
        image,
        labels,
        boxes=[(10, 10, 39, 29), None],
        captions=["a", "b"],
        mask_boxes=[mask_box(a), mask_box(b)],
        outlines=False,
    )
    assert tuple(overlay[10, 25]) == instance_color(0)  # box edge
    assert np.array_equal(overlay[55, 5], image[55, 5])
    half = draw_label_overlay(image, labels, scale=0.5)
    small_image = cv2.resize(image, (40, 30), interpolation=cv2.INTER_AREA)
    small_labels = cv2.resize(labels, (40, 30), interpolation=cv2.INTER_NEAREST)
    assert half.shape == (30, 40, 3)
    assert np.array_equal(half, draw_label_overlay(small_image, small_labels))
    assert np.array_equal(draw_label_overlay(image, np.zeros((60, 80), np.uint8)), image)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0.0}, "scale must be in"),
        ({"scale": 1.5}, "scale must be in"),
        ({"alpha": 2.0}, "alpha must be in"),
    ],
)
def test_label_overlay_refuses_bad_settings(kwargs, message):
    image = np.zeros((6, 8, 3), np.uint8)
    with pytest.raises(InvalidInputError, match=message):
        draw_label_overlay(image, np.zeros((6, 8), np.uint8), **kwargs)
    with pytest.raises(InvalidInputError, match="do not match"):
        draw_label_overlay(image, np.zeros((6, 9), np.uint8))


def test_fast_path_equals_full_frame_path_on_a_photo(segmenters):
    """Random-weight masks on a real photo: label image and overlay colors from the crops equal
    the references drawn from the full-frame masks."""
    segmenter = segmenters["onnxruntime"]
    image = photo("astronaut")
    height, width = image.shape[:2]
    embedding = segmenter.encode(image)
    boxes = [
        [15, 15, 365, 512],
        [355, 0, 470, 290],
        [275, 340, 512, 512],
        [0, 0, 100, 512],
        [0, 0, width, height],
        [200, 200, 210, 210],
    ]
    full = segmenter.decode(embedding, boxes=boxes)
    cropped = segmenter.decode(embedding, boxes=boxes, crops=True)
    labels = label_image_from_crops(cropped.mask_crops, cropped.scores)
    assert np.array_equal(labels, _reference_labels(full.masks, full.scores))
    bgr = np.ascontiguousarray(image[..., ::-1])
    index_order = label_image_from_crops(cropped.mask_crops)
    overlay = draw_label_overlay(bgr, index_order, outlines=False)
    assert np.array_equal(overlay, _reference_blend(bgr, full.masks, 0.5))


def _reference_outlines(overlay, labels):
    """Pixels whose in-frame 3x3 neighbourhood holds two labels take the higher label's color."""
    padded = np.pad(labels, 1, mode="edge")  # repeated border values change no max or min
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    highest, lowest = windows.max(axis=(2, 3)), windows.min(axis=(2, 3))
    out = overlay.copy()
    edges = highest != lowest
    out[edges] = instance_palette(int(labels.max()))[highest[edges]]
    return out


@pytest.mark.parametrize("size", [(480, 640), (721, 1283)])
def test_overlay_and_label_image_in_row_bands_equal_one_pass(size):
    """Frames large enough to be drawn in row bands on two threads: the label image equals
    the reference, the overlay the full-frame blend plus label-edge outlines."""
    rng = np.random.default_rng(size[0])
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    masks = _random_masks(rng, 12, size)
    for first, last in ((0, size[0] // 2), (size[0] // 2 + 1, size[0])):  # edges at the bands'
        masks.append(np.zeros(size, bool))
        masks[-1][first:last, size[1] // 3 :] = True
    scores = rng.uniform(size=len(masks))
    crops = [MaskCrop.from_mask(m) for m in masks]
    assert np.array_equal(label_image_from_crops(crops, scores), _reference_labels(masks, scores))
    labels = label_image_from_crops(crops)  # later wins, as the reference blend paints
    plain = draw_label_overlay(image, labels, outlines=False)
    assert np.array_equal(plain, _reference_blend(image, masks, 0.5))
    outlined = draw_label_overlay(image, labels, mask_boxes=[c.box for c in crops])
    assert np.array_equal(outlined, _reference_outlines(plain, labels))
