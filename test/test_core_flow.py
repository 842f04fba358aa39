"""Optical flow: box motion on real photos with known motion, mask hints, flow frames."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from tracking_scenes import (
    HEIGHT,
    TOLERANCE_PX,
    WIDTH,
    MovingObject,
    Scene,
    camera_sequence,
    centered_patch,
    edge_error,
    move_box,
)

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.stream import flow
from mobilesam_ros.core.visualize import mask_box


def box_mask(box: tuple[float, ...]) -> np.ndarray:
    x0, y0, x1, y1 = (round(v) for v in box)
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return mask


# --- box propagation on real photos -------------------------------------------------------------

CAMERA_MOTIONS = [
    ("astronaut", (3.0, -5.0), 1.0),
    ("coffee", (15.0, 8.0), 1.02),
    ("chelsea", (-7.0, 12.0), 0.98),
    ("rocket", (10.0, -3.0), 1.03),
    ("astronaut", (-12.5, -9.0), 1.01),
    ("coffee", (4.5, -13.5), 0.99),
    ("chelsea", (15.0, 15.0), 1.03),
    ("rocket", (-15.0, 6.0), 0.97),
]


@pytest.mark.parametrize(("name", "shift", "zoom"), CAMERA_MOTIONS)
def test_propagated_box_follows_camera_shift_and_zoom(name, shift, zoom):
    frames, step = camera_sequence(name, shift, zoom, frames=8)
    truth = (220.0, 160.0, 419.0, 319.0)
    chained = truth  # propagated from its own last estimate, as the tracker does
    for previous, current in itertools.pairwise(frames):
        before, after = flow.FlowFrame(previous), flow.FlowFrame(current)
        expected = move_box(step, truth)
        single, from_chain = flow.estimate_motions(
            before, after, [box_mask(truth), box_mask(chained)], [truth, chained]
        )
        assert single.reliable and from_chain.reliable
        assert edge_error(single.apply(truth), expected) <= TOLERANCE_PX
        chained = from_chain.apply(chained)
        assert edge_error(chained, expected) <= TOLERANCE_PX
        truth = expected


OBJECT_MOTIONS = [
    ("astronaut", "coffee", (6.0, -4.0), 1.02),
    ("coffee", "rocket", (-9.0, 7.0), 0.98),
    ("chelsea", "astronaut", (12.0, 10.0), 1.03),
    ("rocket", "chelsea", (-14.0, -3.0), 1.01),
]


@pytest.mark.parametrize(("name", "background", "shift", "zoom"), OBJECT_MOTIONS)
def test_propagated_box_follows_an_object_over_a_still_background(name, background, shift, zoom):
    # An elliptic cut-out moves over a still photo: the points must come from the mask, not
    # from the still background that fills the box's corners.
    obj = MovingObject(name, centered_patch(name, 200, 160), (200.0, 150.0), shift, zoom, True)
    scene = Scene(background, [obj])
    previous, (mask,) = scene.render(0)
    for frame in range(1, 7):
        current, (next_mask,) = scene.render(frame)
        box = mask_box(mask)
        (motion,) = flow.estimate_motions(
            flow.FlowFrame(previous), flow.FlowFrame(current), [mask], [box]
        )
        assert motion.reliable
        assert edge_error(motion.apply(box), mask_box(next_mask)) <= TOLERANCE_PX
        assert edge_error(motion.apply(obj.box(frame - 1)), obj.box(frame)) <= TOLERANCE_PX
        previous, mask = current, next_mask


def test_textureless_object_gives_an_unreliable_motion_that_keeps_the_box():
    flat = np.full((HEIGHT, WIDTH), 128, np.uint8)
    box = (100.0, 100.0, 199.0, 179.0)
    (motion,) = flow.estimate_motions(
        flow.FlowFrame(flat), flow.FlowFrame(flat), [box_mask(box)], [box]
    )
    assert not motion.reliable
    assert motion.apply(box) == box


def test_mask_hint_moves_with_the_object():
    size = (HEIGHT, WIDTH)
    logits = np.full((256, 256), -10.0, np.float32)
    logits[40:60, 80:100] = 10.0  # 2.5 image pixels per low-res pixel at 640x480
    moved = flow.move_logits(logits, flow.BoxMotion(1.0, (40.0, -20.0), 10, True), size)
    rows, cols = np.nonzero(moved > 0)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (32, 51, 96, 115)
    zoomed = flow.move_logits(logits, flow.BoxMotion(1.1, (-22.45, -12.45), 10, True), size)
    rows, cols = np.nonzero(zoomed > 0)  # 10 % larger about the blob center, image (224.5, 124.5)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (39, 60, 79, 100)
    assert moved.dtype == np.float32 and moved.shape == (256, 256)
    assert moved.min() == pytest.approx(-10.0)  # uncovered border: the map's lowest logit


def test_frame_from_color_images_and_bad_input():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255
    assert flow.FlowFrame.from_image(rgb).gray[0, 0] == 76  # red in RGB
    assert flow.FlowFrame.from_image(rgb, "bgr").gray[0, 0] == 29  # blue in BGR
    assert flow.FlowFrame.from_image(np.zeros((4, 6), np.uint8)).size == (4, 6)
    with pytest.raises(InvalidInputError, match="channel_order"):
        flow.FlowFrame.from_image(rgb, "yuv")
    with pytest.raises(InvalidInputError, match="uint8"):
        flow.FlowFrame.from_image(rgb.astype(np.float32))
