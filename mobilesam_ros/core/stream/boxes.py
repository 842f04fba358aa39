"""Axis-aligned boxes in image pixels, one convention throughout: both ends inclusive.

A box (x_min, y_min, x_max, y_max) holds the pixel columns x_min..x_max and rows y_min..y_max,
as the tight box of a mask does (`MaskCrop.box`, `mask_box`): a one-pixel mask at (x, y) has
the box (x, y, x, y), width 1 and area 1. Propagated boxes have fractional corners; their
extent along an axis is still x_max - x_min + 1.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels, inclusive


def area(box: Box) -> float:
    """Pixels covered by `box`; 0 for a box inverted by more than one pixel."""
    x0, y0, x1, y1 = box
    return max(x1 - x0 + 1, 0.0) * max(y1 - y0 + 1, 0.0)


def clip_to_image(box: Box, size: tuple[int, int]) -> Box:
    """`box` cut to an image of `size` (H, W); inverted when the two do not overlap."""
    x0, y0, x1, y1 = box
    height, width = size
    return (
        float(max(x0, 0.0)),
        float(max(y0, 0.0)),
        float(min(x1, width - 1.0)),
        float(min(y1, height - 1.0)),
    )


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0 when they share no pixel."""
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    if inter <= 0:
        return 0.0
    return float(inter / (area(a) + area(b) - inter))


def visible_fraction(box: Box, size: tuple[int, int]) -> float:
    """Share of `box`'s area that lies inside an image of `size` (H, W)."""
    total = area(box)
    if total <= 0:
        return 0.0
    return float(area(clip_to_image(box, size)) / total)


def prompt_box(box: Box, margin: float, min_margin_px: float, size: tuple[int, int]) -> Box:
    """`box` grown by `margin` of its width/height (at least `min_margin_px`), clipped to size."""
    x0, y0, x1, y1 = box
    grow_x = max(margin * (x1 - x0 + 1), min_margin_px)
    grow_y = max(margin * (y1 - y0 + 1), min_margin_px)
    return clip_to_image((x0 - grow_x, y0 - grow_y, x1 + grow_x, y1 + grow_y), size)


def holds_points(box: Box, points: Sequence[tuple[float, float]]) -> bool:
    """Whether there are `points` and all of them lie in `box` (edges included)."""
    return bool(points) and all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in points)
