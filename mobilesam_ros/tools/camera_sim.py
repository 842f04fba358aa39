"""A simulated camera: a moving, slightly zooming view over a real photo, with known object boxes.

Used by the demo and the tracking evaluation (and usable in tests): frame k and its boxes are a pure
function of k, so every run sees the same sequence. `prompt_boxes` turns a frame's boxes into any
number of box prompts (sub-boxes of the objects when more are asked than objects are visible).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels

# Objects of scikit-image's astronaut photo (512x512): name -> box in photo pixels.
ASTRONAUT_OBJECTS: dict[str, Box] = {
    "person": (15, 15, 365, 512),
    "shuttle": (355, 0, 470, 290),
    "helmet": (275, 340, 512, 512),
    "flag": (0, 0, 100, 512),
    "face": (175, 40, 300, 190),
    "hair": (150, 10, 300, 110),
    "collar": (110, 150, 310, 300),
    "patch": (130, 345, 210, 425),
    "name_tag": (278, 338, 330, 372),
    "glove": (150, 455, 225, 512),
}


@dataclass(frozen=True)
class SimulatedFrame:
    index: int
    bgr: np.ndarray  # HxWx3 uint8
    boxes: dict[str, Box]  # visible objects, frame pixels
    transform: np.ndarray  # 2x3 affine map from photo pixels to frame pixels


class MovingViewCamera:
    """Frames of `size` (W, H) looking at `photo` through a view that pans in a slow ellipse and
    breathes in and out by `zoom_amplitude` around a scale that fills the frame."""

    def __init__(
        self,
        photo_rgb: np.ndarray,
        objects: dict[str, Box],
        size: tuple[int, int] = (640, 480),
        period_frames: int = 150,
        pan_pixels: float = 40.0,
        zoom_amplitude: float = 0.05,
    ) -> None:
        self._photo_bgr = np.ascontiguousarray(photo_rgb[..., ::-1])
        self.objects = dict(objects)
        self.size = size
        self.period = period_frames
        self.pan = pan_pixels
        self.zoom = zoom_amplitude
        height, width = photo_rgb.shape[:2]
        # Base scale: the photo covers the frame with room to pan.
        self._base_scale = max(size[0] / width, size[1] / height) * 1.25
        self._photo_center = (width / 2, height / 2)

    def transform(self, index: int) -> np.ndarray:
        phase = 2 * math.pi * index / self.period
        scale = self._base_scale * (1 + self.zoom * math.sin(2 * phase))
        cx, cy = self._photo_center
        out_w, out_h = self.size
        dx = self.pan * math.cos(phase)
        dy = self.pan * 0.6 * math.sin(phase)
        # frame = scale * (photo - center) + frame_center + pan
        return np.array(
            [[scale, 0.0, out_w / 2 + dx - scale * cx], [0.0, scale, out_h / 2 + dy - scale * cy]]
        )

    def frame(self, index: int) -> SimulatedFrame:
        matrix = self.transform(index)
        bgr = cv2.warpAffine(
            self._photo_bgr,
            matrix,
            self.size,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        boxes = {}
        out_w, out_h = self.size
        for name, (x0, y0, x1, y1) in self.objects.items():
            (fx0, fy0), (fx1, fy1) = (matrix @ np.array([[x0, x1], [y0, y1], [1, 1]])).T
            clipped = (max(fx0, 0.0), max(fy0, 0.0), min(fx1, out_w - 1.0), min(fy1, out_h - 1.0))
            visible = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
            if (
                clipped[2] > clipped[0]
                and clipped[3] > clipped[1]
                and visible > 0.3 * ((fx1 - fx0) * (fy1 - fy0))
            ):
                boxes[name] = clipped
        return SimulatedFrame(index, bgr, boxes, matrix)


# Where the sub-boxes of an object sit in its box: (x, y) as fractions of the room left beside
# the sub-box, a 3x3 grid with the centre first.
_SUB_BOX_ANCHORS = (
    (0.5, 0.5),
    (0.0, 0.0),
    (0.5, 0.0),
    (1.0, 0.0),
    (0.0, 0.5),
    (1.0, 0.5),
    (0.0, 1.0),
    (0.5, 1.0),
    (1.0, 1.0),
)


def sub_box(box: Box, k: int) -> Box:
    """The k-th sub-box (k >= 1) of `box`: 9 anchors per size, each size 0.8 times the last
    (0.8, 0.64, ... of the box's width and height), so that every k gives another box."""
    if k < 1:
        raise ValueError(f"sub-box index must be at least 1, got {k}")
    level, anchor = divmod(k - 1, len(_SUB_BOX_ANCHORS))
    fraction = 0.8 ** (level + 1)
    ax, ay = _SUB_BOX_ANCHORS[anchor]
    x0, y0, x1, y1 = box
    width, height = (x1 - x0) * fraction, (y1 - y0) * fraction
    left = x0 + ax * (x1 - x0 - width)
    top = y0 + ay * (y1 - y0 - height)
    return (left, top, left + width, top + height)


def prompt_boxes(boxes: dict[str, Box], count: int) -> dict[str, Box]:
    """`count` box prompts for a frame whose visible objects have `boxes` (name -> box).

    The first `count` objects' own boxes when that many are visible. Otherwise every object's box,
    then sub-boxes of the objects in turn, named `<name>#k` (`sub_box(box, k)`): all objects'
    first sub-box, then all second ones, and so on. A name always means the same part of its
    object, so prompts keep their ids from frame to frame while the object stays in view.
    """
    if count < 0:
        raise ValueError(f"prompt count must be at least 0, got {count}")
    prompts = dict(list(boxes.items())[:count])
    k = 1
    while boxes and len(prompts) < count:
        for name, box in boxes.items():
            if len(prompts) == count:
                break
            prompts[f"{name}#{k}"] = sub_box(box, k)
        k += 1
    return prompts


def astronaut_camera(size: tuple[int, int] = (640, 480)) -> MovingViewCamera:
    from skimage import data

    return MovingViewCamera(data.astronaut(), ASTRONAUT_OBJECTS, size)
