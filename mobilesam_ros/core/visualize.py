"""Label images and translucent overlays of instance masks (for PNGs and rviz)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def instance_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable color for instance `index` (golden-ratio hue steps), as BGR."""
    hue = int((index * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 200, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def label_image(
    masks: Sequence[np.ndarray] | np.ndarray,
    scores: Sequence[float] | np.ndarray | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """N bool (H, W) masks -> (H, W) labels: 0 background, i + 1 for masks[i].

    Where masks overlap, the instance with the higher score (predicted IoU) wins; without
    scores, the later instance wins. uint8 up to 255 instances, else uint16. `size` (H, W) is
    needed only when there are no masks.
    """
    num = len(masks)
    height, width = size if size is not None else masks[0].shape
    labels = np.zeros((height, width), dtype=np.uint8 if num <= 255 else np.uint16)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(num)
    for index in order:
        labels[masks[index]] = index + 1
    return labels


def draw_overlay(
    bgr: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    boxes: Sequence[Sequence[float] | None] | np.ndarray | None = None,
    captions: Sequence[str] | None = None,
    alpha: float = 0.5,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Blend each mask's color into `bgr`'s copy (or `out`); outline it, add box and caption.

    All masks are blended in one pass (a later instance's color wins where masks overlap), and
    outlines are traced inside each mask's bounding box only.
    """
    if out is None:
        out = bgr.copy()
    elif out is not bgr:
        np.copyto(out, bgr)
    colors = np.zeros_like(out)
    covered = np.zeros(out.shape[:2], dtype=bool)
    bounds = []
    for index, mask in enumerate(masks):
        colors[mask] = instance_color(index)
        covered |= mask
        bounds.append(mask_box(mask))
    if any(b is not None for b in bounds):
        blended = cv2.addWeighted(out, 1.0 - alpha, colors, alpha, 0.0)
        np.copyto(out, blended, where=covered[..., None])
    for index, (mask, bound) in enumerate(zip(masks, bounds, strict=True)):
        color = instance_color(index)
        anchor = None
        if bound is not None:
            x0, y0, x1, y1 = bound
            crop = np.ascontiguousarray(mask[y0 : y1 + 1, x0 : x1 + 1], dtype=np.uint8)
            contours, _ = cv2.findContours(
                crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
            )
            cv2.drawContours(out, contours, -1, color, 2)
            anchor = (x0, max(y0 - 6, 12))
        box = boxes[index] if boxes is not None and index < len(boxes) else None
        if box is not None:
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
            anchor = (x0, max(y0 - 6, 12))
        if captions is not None and index < len(captions) and anchor is not None:
            cv2.putText(out, captions[index], anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3)
            cv2.putText(out, captions[index], anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)
    return out


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight (x_min, y_min, x_max, y_max) pixel box of a bool mask, inclusive; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])
