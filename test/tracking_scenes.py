"""Image sequences with known motion, made from real photos, for the tracking tests."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from helpers import photo

from mobilesam_ros.core.prompts import PromptMask
from mobilesam_ros.core.stream.boxes import box_iou
from mobilesam_ros.core.stream.tracking import TrackPrompt
from mobilesam_ros.core.visualize import mask_box

HEIGHT, WIDTH = 480, 640
TOLERANCE_PX = 3.0  # how far a propagated box edge may lie from the true one


def edge_error(box: tuple[float, ...], expected: tuple[float, ...]) -> float:
    """The largest distance between corresponding box coordinates."""
    return float(np.max(np.abs(np.subtract(box, expected))))


@cache
def gray_photo(name: str, height: int) -> np.ndarray:
    """A scikit-image photo in grayscale, scaled to `height` rows (read-only)."""
    rgb = photo(name)
    scale = height / rgb.shape[0]
    size = (round(rgb.shape[1] * scale), height)
    gray = cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    gray.setflags(write=False)
    return gray


def centered_patch(name: str, width: int, height: int) -> tuple[int, int, int, int]:
    """The `MovingObject.patch` of size `width` x `height` at the center of a photo."""
    photo_width = gray_photo(name, HEIGHT).shape[1]
    return (photo_width - width) // 2, (HEIGHT - height) // 2, width, height


def zoom_shift(zoom: float, shift: tuple[float, float], center: tuple[float, float]) -> np.ndarray:
    """3x3 matrix of p' = zoom * (p - center) + center + shift."""
    cx, cy = center
    return np.array(
        [
            [zoom, 0.0, (1 - zoom) * cx + shift[0]],
            [0.0, zoom, (1 - zoom) * cy + shift[1]],
            [0.0, 0.0, 1.0],
        ]
    )


def move_box(matrix: np.ndarray, box: tuple[float, ...]) -> tuple[float, float, float, float]:
    """An axis-aligned box through a zoom-and-shift matrix."""
    x0, y0 = matrix[:2, :2] @ box[:2] + matrix[:2, 2]
    x1, y1 = matrix[:2, :2] @ box[2:] + matrix[:2, 2]
    return float(x0), float(y0), float(x1), float(y1)


def camera_sequence(
    name: str, shift: tuple[float, float], zoom: float, frames: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """640x480 views of a photo, each moved by the same zoom (about the image center) and shift.

    Returns the grayscale frames and the 3x3 matrix that carries frame k's pixels to frame k+1.
    """
    source = gray_photo(name, 720)
    view = np.array(
        [
            [1.0, 0.0, -(source.shape[1] - WIDTH) / 2],
            [0.0, 1.0, -(source.shape[0] - HEIGHT) / 2],
            [0.0, 0.0, 1.0],
        ]
    )
    step = zoom_shift(zoom, shift, ((WIDTH - 1) / 2, (HEIGHT - 1) / 2))
    images = []
    for _ in range(frames):
        images.append(cv2.warpAffine(source, view[:2], (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR))
        view = step @ view
    return images, step


@dataclass
class MovingObject:
    """A rectangular patch of a photo that moves over the background by a fixed step per frame."""

    photo: str
    patch: tuple[int, int, int, int]  # x, y, width, height in the photo (scaled to 480 rows)
    start: tuple[float, float]  # top-left corner in frame 0
    shift: tuple[float, float] = (0.0, 0.0)  # pixels per frame
    zoom: float = 1.0  # per frame, about the object's center
    ellipse: bool = False  # the ellipse inscribed in the patch instead of the whole patch

    def placement(self, frame: int) -> np.ndarray:
        """3x3 matrix from patch pixels to frame pixels at `frame`."""
        _, _, width, height = self.patch
        matrix = np.array([[1.0, 0.0, self.start[0]], [0.0, 1.0, self.start[1]], [0.0, 0.0, 1.0]])
        for _ in range(frame):
            center = move_box(matrix, (0, 0, width - 1, height - 1))
            cx, cy = (center[0] + center[2]) / 2, (center[1] + center[3]) / 2
            matrix = zoom_shift(self.zoom, self.shift, (cx, cy)) @ matrix
        return matrix

    def box(self, frame: int) -> tuple[float, float, float, float]:
        _, _, width, height = self.patch
        return move_box(self.placement(frame), (0, 0, width - 1, height - 1))


class Scene:
    """Moving photo patches over a still photo: grayscale frames and ground-truth masks."""

    def __init__(self, background: str, objects: list[MovingObject]) -> None:
        self.background = cv2.resize(gray_photo(background, HEIGHT), (WIDTH, HEIGHT))
        self.objects = objects

    def render(self, frame: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """The frame and one bool mask per object (later objects cover earlier ones)."""
        image = self.background.astype(np.float32)
        masks = []
        for obj in self.objects:
            x, y, width, height = obj.patch
            patch = gray_photo(obj.photo, HEIGHT)[y : y + height, x : x + width]
            matrix = obj.placement(frame)[:2]
            warped = cv2.warpAffine(patch, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
            shape = np.ones((height, width), np.float32)
            if obj.ellipse:
                ys, xs = np.mgrid[0:height, 0:width]
                rx, ry = (width - 1) / 2, (height - 1) / 2
                shape = ((xs - rx) / (rx + 0.5)) ** 2 + ((ys - ry) / (ry + 0.5)) ** 2 <= 1
                shape = shape.astype(np.float32)
            alpha = cv2.warpAffine(shape, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
            image = image * (1 - alpha) + warped.astype(np.float32) * alpha
            mask = alpha > 0.5
            masks = [m & ~mask for m in masks]
            masks.append(mask)
        return np.clip(image + 0.5, 0, 255).astype(np.uint8), masks


class SceneDecoderDouble:
    """A deterministic stand-in for the mask decoder, for tests of the tracker logic only.

    For each prompt box it returns the ground-truth mask of the scene object whose box overlaps
    it most (empty when none overlaps by IoU 0.2), for a click the object under its point; its
    "predicted IoU" comes from `iou_of`.
    These masks and scores are test fixtures, never model output.
    """

    def __init__(self, masks: list[np.ndarray], iou_of=None) -> None:
        self.masks = masks
        self.iou_of = iou_of or (lambda index: 0.9)
        self.calls: list[list[TrackPrompt]] = []

    def __call__(self, prompts: list[TrackPrompt]) -> list[PromptMask]:
        self.calls.append(list(prompts))
        results = []
        for planned in prompts:
            best, best_overlap = None, 0.2
            if planned.prompt.box is None:  # a click: the object under its first point
                x, y = (int(v) for v in planned.prompt.points[0])
                hits = [i for i, mask in enumerate(self.masks) if mask[y, x]]
                best = hits[-1] if hits else None
            for index, mask in enumerate(self.masks):
                box = mask_box(mask)
                if box is None or planned.prompt.box is None:
                    continue
                overlap = box_iou(box, planned.prompt.box)
                if overlap > best_overlap:
                    best, best_overlap = index, overlap
            if best is None:
                mask, iou = np.zeros((HEIGHT, WIDTH), bool), 0.0
            else:
                mask, iou = self.masks[best], self.iou_of(best)
            logits = np.where(cv2.resize(mask.view(np.uint8), (256, 192)) > 0, 8.0, -8.0)
            low_res = np.full((256, 256), -8.0, np.float32)
            low_res[:192] = logits
            results.append(PromptMask.from_mask(planned.prompt, mask, iou, low_res))
        return results
