"""Sparse optical flow: how the object inside a mask moved between two camera frames.

Corners inside each mask are followed with pyramidal Lucas-Kanade and checked by tracking
them back; a zoom-and-shift fit with RANSAC turns them into one `BoxMotion` per mask. The
tracker moves its tracks' boxes and low-res logits with it (`move_logits`), and a slow
detector's prompts are moved to a newer frame the same way (`prompt_motion`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.model.constants import LOW_RES_SIZE
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.processing.preprocess import CHANNEL_ORDERS, FrameGeometry
from mobilesam_ros.core.stream.boxes import Box

# Pyramidal Lucas-Kanade settings: a 21 px window on levels 0 to 3 follows motions of a few
# tens of pixels per frame at 640x480.
FLOW_WINDOW = (21, 21)
FLOW_LEVELS = 3
FLOW_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
# A point is kept when tracking it back lands within this many pixels of where it started.
FORWARD_BACKWARD_MAX_PX = 1.0
RANSAC_THRESHOLD_PX = 1.0
MIN_FLOW_POINTS = 4  # fewer inliers than this: the motion estimate is not reliable
MAX_SCALE_STEP = 1.25  # a larger zoom between two frames is taken as a failed estimate


@dataclass(frozen=True)
class FlowFrame:
    """The grayscale image that optical flow needs, converted once per camera frame.

    OpenCV builds the LK pyramids inside each flow call: its Python binding cannot take the
    pyramids of `buildOpticalFlowPyramid` (OpenCV issue 4777). `estimate_motions` therefore
    follows the points of all masks in one forward and one backward call per frame.
    """

    gray: np.ndarray  # (H, W) uint8

    @classmethod
    def from_image(cls, image: np.ndarray, channel_order: str = "rgb") -> FlowFrame:
        """From an (H, W) uint8 grayscale image or an (H, W, C) one in `channel_order`."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise InvalidInputError("image for tracking must be a uint8 numpy array")
        if image.ndim == 2:
            gray = image
        else:
            if channel_order not in CHANNEL_ORDERS:
                raise InvalidInputError(
                    f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, "
                    f"got {channel_order!r}"
                )
            if image.ndim != 3 or image.shape[2] != len(channel_order):
                raise InvalidInputError(
                    f"image must have shape (H, W) or (H, W, {len(channel_order)}) in "
                    f"{channel_order} order, got {image.shape}"
                )
            codes = {
                "rgb": cv2.COLOR_RGB2GRAY,
                "bgr": cv2.COLOR_BGR2GRAY,
                "rgba": cv2.COLOR_RGBA2GRAY,
                "bgra": cv2.COLOR_BGRA2GRAY,
            }
            gray = cv2.cvtColor(image, codes[channel_order])
        if gray.shape[0] == 0 or gray.shape[1] == 0:
            raise InvalidInputError(f"image is empty: shape {image.shape}")
        return cls(np.ascontiguousarray(gray))

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.gray.shape[0], self.gray.shape[1]


@dataclass(frozen=True)
class BoxMotion:
    """A zoom and shift without rotation, p' = scale * p + shift, estimated from point flow."""

    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    points: int = 0  # points that agreed with the estimate
    reliable: bool = False  # False: too few points; the box is kept where it was

    def apply(self, box: Box) -> Box:
        dx, dy = self.shift
        x0, y0, x1, y1 = box
        s = self.scale
        return (s * x0 + dx, s * y0 + dy, s * x1 + dx, s * y1 + dy)


def _feature_points(
    gray: np.ndarray, mask: np.ndarray | MaskCrop, box: Box, max_points: int
) -> np.ndarray:
    """Up to `max_points` (x, y) points to track inside `mask`: corners, else a grid of pixels."""
    height, width = gray.shape
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width - 1), min(int(np.ceil(box[3])), height - 1)
    if x1 < x0 or y1 < y0:
        return np.empty((0, 2), np.float32)
    region = _mask_window(mask, x0, y0, x1, y1)
    # Points on the outline see the background too: keep away from it where the mask allows.
    eroded = cv2.erode(region, np.ones((5, 5), np.uint8))
    if np.count_nonzero(eroded) >= 4 * MIN_FLOW_POINTS:
        region = eroded
    points = np.empty((0, 2), np.float32)
    if min(region.shape) >= 7:
        side = min(region.shape)
        corners = cv2.goodFeaturesToTrack(
            gray[y0 : y1 + 1, x0 : x1 + 1],
            maxCorners=max_points,
            qualityLevel=0.01,
            minDistance=max(3.0, side / 20.0),
            mask=region,
            blockSize=5,
        )
        if corners is not None:
            points = corners.reshape(-1, 2)
    if len(points) < 2 * MIN_FLOW_POINTS:  # little texture: a grid over the mask instead
        ys, xs = np.nonzero(region)
        if len(xs):
            picks = np.linspace(0, len(xs) - 1, min(len(xs), max_points)).astype(int)
            grid = np.stack([xs[picks], ys[picks]], axis=1).astype(np.float32)
            points = np.concatenate([points, grid])
    return (points + np.array([x0, y0], np.float32)).astype(np.float32)


def _mask_window(mask: np.ndarray | MaskCrop, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """uint8 0/1 window [y0..y1] x [x0..x1] of a full-frame mask or of a crop placed in one."""
    if not isinstance(mask, MaskCrop):
        return mask[y0 : y1 + 1, x0 : x1 + 1].astype(np.uint8)
    window = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    height, width = mask.mask.shape
    top, left = max(y0, mask.y0), max(x0, mask.x0)
    bottom, right = min(y1, mask.y0 + height - 1), min(x1, mask.x0 + width - 1)
    if top <= bottom and left <= right:
        window[top - y0 : bottom - y0 + 1, left - x0 : right - x0 + 1] = mask.mask[
            top - mask.y0 : bottom - mask.y0 + 1, left - mask.x0 : right - mask.x0 + 1
        ]
    return window


def _fit_motion(start: np.ndarray, end: np.ndarray) -> BoxMotion:
    """Zoom and shift that carry `start` points to `end` points, robust to outliers."""
    if len(start) >= MIN_FLOW_POINTS:
        matrix, inliers = cv2.estimateAffinePartial2D(
            start, end, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD_PX
        )
        if matrix is not None and inliers is not None:
            keep = inliers.ravel().astype(bool)
            scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
            if keep.sum() >= MIN_FLOW_POINTS and 1 / MAX_SCALE_STEP <= scale <= MAX_SCALE_STEP:
                # The fit may include a small rotation; the box keeps its axes, so the shift is
                # refitted for the zoom alone.
                shift = np.median(end[keep] - scale * start[keep], axis=0)
                return BoxMotion(scale, (float(shift[0]), float(shift[1])), int(keep.sum()), True)
    if len(start):
        shift = np.median(end - start, axis=0)
        return BoxMotion(1.0, (float(shift[0]), float(shift[1])), len(start), False)
    return BoxMotion()


def estimate_motions(
    previous: FlowFrame,
    current: FlowFrame,
    masks: Sequence[np.ndarray | MaskCrop],
    boxes: Sequence[Box],
    max_points: int = 50,
) -> list[BoxMotion]:
    """How each mask's object moved from `previous` to `current`, one `BoxMotion` per mask.

    Corners inside each mask (eroded a little) are tracked with pyramidal Lucas-Kanade, all
    masks' points in one forward and one backward call; points that do not come back to where
    they started, or leave the image, are dropped; a zoom-and-shift fit with RANSAC follows.
    """
    if previous.size != current.size:
        raise InvalidInputError(
            f"frames for optical flow differ in size: {previous.size} and {current.size}"
        )
    per_track = [
        _feature_points(previous.gray, mask, box, max_points)
        for mask, box in zip(masks, boxes, strict=True)
    ]
    counts = [len(p) for p in per_track]
    if sum(counts) == 0:
        return [BoxMotion() for _ in per_track]
    start = np.concatenate(per_track).reshape(-1, 1, 2)
    lk = {"winSize": FLOW_WINDOW, "maxLevel": FLOW_LEVELS, "criteria": FLOW_CRITERIA}
    end, found, _ = cv2.calcOpticalFlowPyrLK(previous.gray, current.gray, start, None, **lk)
    back, found_back, _ = cv2.calcOpticalFlowPyrLK(current.gray, previous.gray, end, None, **lk)
    start, end, back = start.reshape(-1, 2), end.reshape(-1, 2), back.reshape(-1, 2)
    good = (
        found.ravel().astype(bool)
        & found_back.ravel().astype(bool)
        & (np.linalg.norm(back - start, axis=1) <= FORWARD_BACKWARD_MAX_PX)
    )
    motions = []
    offset = 0
    for count in counts:
        chunk = slice(offset, offset + count)
        keep = good[chunk]
        motions.append(_fit_motion(start[chunk][keep], end[chunk][keep]))
        offset += count
    return motions


def move_logits(logits: np.ndarray, motion: BoxMotion, size: tuple[int, int]) -> np.ndarray:
    """Low-res (256, 256) logits of a frame of `size` (H, W) moved by `motion`, as a mask hint."""
    kx, ky = FrameGeometry.for_image(*size).scale_xy / (1024 / LOW_RES_SIZE)
    s = motion.scale
    # Image pixel p maps to low-res pixel u = k (p + 1/2) - 1/2; p' = s p + shift becomes
    # u' = s u + k shift + (s - 1)(1 - k) / 2.
    matrix = np.array(
        [
            [s, 0.0, kx * motion.shift[0] + (s - 1) * (1 - kx) / 2],
            [0.0, s, ky * motion.shift[1] + (s - 1) * (1 - ky) / 2],
        ]
    )
    logits = np.asarray(logits, dtype=np.float32)
    return cv2.warpAffine(
        logits,
        matrix,
        (LOW_RES_SIZE, LOW_RES_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=float(logits.min()),
    )
