"""A simulated camera: a moving, slightly zooming view over a real photo, with known object boxes.

Used by the demo and the benchmarks (and usable in tests): frame k and its boxes are a pure
function of k, so every run sees the same sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Objects of scikit-image's astronaut photo (512x512): name -> box in photo pixels.
ASTRONAUT_OBJECTS: dict[str, tuple[float, float, float, float]] = {
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
    boxes: dict[str, tuple[float, float, float, float]]  # visible objects, frame pixels
    transform: np.ndarray  # 2x3 affine map from photo pixels to frame pixels


class MovingViewCamera:
    """Frames of `size` (W, H) looking at `photo` through a view that pans in a slow ellipse and
    breathes in and out by `zoom_amplitude` around a scale that fills the frame."""

    def __init__(
        self,
        photo_rgb: np.ndarray,
        objects: dict[str, tuple[float, float, float, float]],
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


def astronaut_camera(size: tuple[int, int] = (640, 480)) -> MovingViewCamera:
    from skimage import data

    return MovingViewCamera(data.astronaut(), ASTRONAUT_OBJECTS, size)
