"""Label images and translucent overlays of instance masks (for PNGs and rviz).

Drawn from the masks' crops (`label_image_from_crops`) and the label image
(`draw_label_overlay`): the cost follows the masks' boxes and the frame size, not the number
of mask pixels drawn.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import cv2
import numpy as np

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.bands import map_row_bands
from mobilesam_ros.core.processing.postprocess import MaskCrop, mask_box

__all__ = [
    "MaskCrop",
    "draw_label_overlay",
    "instance_color",
    "instance_palette",
    "label_image_from_crops",
    "mask_box",
]


def instance_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable color for instance `index` (golden-ratio hue steps), as BGR."""
    hue = int((index * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 200, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


_NEIGHBOURHOOD = np.ones((3, 3), np.uint8)
# One instance box drawn on its own costs about a dozen OpenCV/numpy calls, which take as long
# as blending this many pixels more in one pass over the union (measured on an x86 CPU).
_BOX_OVERHEAD_PIXELS = 40_000
_palette_lock = threading.Lock()
_palette = np.zeros((1, 3), dtype=np.uint8)


def instance_palette(count: int) -> np.ndarray:
    """(count + 1, 3) uint8 BGR: row 0 black (background), row i + 1 = instance_color(i).

    A read-only view of a shared table that grows as needed (no per-frame work).
    """
    global _palette
    if len(_palette) <= count:
        with _palette_lock:
            if len(_palette) <= count:
                size = max(256, 2 * (count + 1))
                hues = ((np.arange(size - 1) * 0.618033988749895 % 1.0) * 180).astype(np.uint8)
                hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 255)], axis=1)
                bgr = cv2.cvtColor(hsv[:, None], cv2.COLOR_HSV2BGR)[:, 0]
                table = np.concatenate([np.zeros((1, 3), np.uint8), bgr])
                table.flags.writeable = False
                _palette = table
    return _palette[: count + 1]


def label_image_from_crops(
    crops: Sequence[MaskCrop],
    scores: Sequence[float] | np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W) labels of the full masks that `crops` stand for: 0 background, i + 1 for crops[i].

    Where masks overlap, the instance with the higher score (predicted IoU) wins; without
    scores, the later instance wins. uint8 up to 255 instances, else uint16.
    Each crop is painted into its box only (a masked copy, no full-frame mask), in row bands on
    two threads. `size` (H, W) defaults to the crops' image size; `out` is an optional (H, W)
    uint8/uint16 buffer to reuse.
    """
    num = len(crops)
    if size is None:
        if num == 0:
            raise InvalidInputError("label_image_from_crops needs `size` when there are no crops")
        size = crops[0].image_size
    dtype = np.uint8 if num <= 255 else np.uint16
    if out is None:
        labels = np.zeros(size, dtype=dtype)
    else:
        if out.shape != tuple(size) or out.dtype != dtype:
            raise InvalidInputError(
                f"out must be a {size} {np.dtype(dtype).name} array, got {out.shape} {out.dtype}"
            )
        labels = out
        labels.fill(0)
    if scores is not None and len(scores) != num:
        raise InvalidInputError(f"{len(scores)} scores for {num} crops")
    order = np.argsort(scores, kind="stable") if scores is not None else range(num)
    painted = []
    for index in order:
        crop = crops[index]
        if crop.empty:
            continue
        if crop.image_size != tuple(size):
            raise InvalidInputError(
                f"crop {index} belongs to a {crop.image_size} image, not {tuple(size)}"
            )
        painted.append((index + 1, crop))

    def paint_rows(y0: int, y1: int) -> None:
        fill = np.empty(0, dtype=dtype)
        for label, crop in painted:
            height, width = crop.mask.shape
            first, last = max(crop.y0, y0), min(crop.y0 + height, y1)
            if first >= last:
                continue
            if fill.size < (last - first) * width:
                fill = np.empty((y1 - y0) * size[1], dtype=dtype)
            value = fill[: (last - first) * width].reshape(last - first, width)
            value.fill(label)
            # OpenCV's masked copy is several times faster than numpy's boolean assignment.
            mask = crop.mask[first - crop.y0 : last - crop.y0].view(np.uint8)
            cv2.copyTo(value, mask, labels[first:last, crop.x0 : crop.x0 + width])

    map_row_bands(paint_rows, size[0], size[1])
    return labels


def draw_label_overlay(
    bgr: np.ndarray,
    labels: np.ndarray,
    boxes: Sequence[Sequence[float] | None] | np.ndarray | None = None,
    captions: Sequence[str] | None = None,
    alpha: float = 0.5,
    scale: float = 1.0,
    mask_boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
    outlines: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Overlay from a label image: one color look-up and one blend of the frame.

    `labels` is a label image (`label_image_from_crops`: instance i has label i + 1 and
    `instance_color(i)`); each instance's color is blended into the frame with weight `alpha`
    where it has the pixel. Outlines follow the label image's edges (2 pixels, the color of
    the higher label beside the edge). Boxes and captions are drawn only at the boxes.
    `mask_boxes` (e.g. `MaskCrop.box`, in full-frame pixels) place the captions of instances
    without a box and, when small, confine the drawing to them: each must hold all the pixels
    of its instance.
    `scale` < 1 draws a smaller image (width and height times `scale`): the frame is resized
    with INTER_AREA, the labels with nearest neighbour, boxes are scaled.
    Returns the overlay: a new image, or `out` (an image of the output size to reuse, which
    may be `bgr` itself at scale 1 to draw in place and save the frame copy).
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise InvalidInputError(
            f"bgr must be an (H, W, 3) uint8 image, got {bgr.shape} {bgr.dtype}"
        )
    if labels.shape != bgr.shape[:2]:
        raise InvalidInputError(f"labels {labels.shape} do not match the image {bgr.shape[:2]}")
    if not 0.0 < scale <= 1.0:
        raise InvalidInputError(f"overlay scale must be in (0, 1], got {scale}")
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"overlay alpha must be in [0, 1], got {alpha}")
    if scale != 1.0:
        height, width = labels.shape
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    if out is None:
        out = np.empty_like(bgr)
    elif out.shape != bgr.shape or out.dtype != np.uint8:
        raise InvalidInputError(
            f"out must be a {bgr.shape} uint8 image, got {out.shape} {out.dtype}"
        )
    regions = _overlay_regions(labels, mask_boxes, scale)
    count = 0
    if len(regions) == 1 and regions[0][1] is None and labels.dtype == np.uint8:
        (y0, y1, x0, x1), _ = regions[0]
        count = int(labels[y0:y1, x0:x1].max())
    if count:
        # The union of the masks, in row bands: color, blend and outline in one look-up.
        region = regions[0][0]
        map_row_bands(
            lambda r0, r1: _draw_union_rows(out, bgr, labels, region, r0, r1, alpha, outlines),
            *labels.shape,
        )
        regions = []
    elif out is not bgr:
        map_row_bands(lambda y0, y1: np.copyto(out[y0:y1], bgr[y0:y1]), *labels.shape)
    for (y0, y1, x0, x1), label in regions:
        region_labels = labels[y0:y1, x0:x1]
        if label is None:  # every instance in this region: one color look-up
            count = max(count, int(region_labels.max()))
            colors = _colorize(region_labels, count)
            drawn = np.not_equal(region_labels, 0)
        else:  # one instance's box: its color is a constant
            count = max(count, label)
            colors = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
            colors[...] = instance_palette(label)[label]
            drawn = np.equal(region_labels, label)
        # The same per-pixel blend as the union's, written only where the instance is.
        blended = cv2.addWeighted(bgr[y0:y1, x0:x1], 1.0 - alpha, colors, alpha, 0.0)
        cv2.copyTo(blended, drawn.view(np.uint8), out[y0:y1, x0:x1])
    if outlines:  # after every blend: boxes of instances overlap
        for (y0, y1, x0, x1), _ in regions:
            _draw_label_edges(out[y0:y1, x0:x1], labels[y0:y1, x0:x1], count)
    num = max(count, len(boxes) if boxes is not None else 0, len(captions or ()))
    palette = instance_palette(num)
    for index in range(num):
        color = tuple(int(c) for c in palette[index + 1])
        anchor = None
        bound = mask_boxes[index] if mask_boxes is not None and index < len(mask_boxes) else None
        if bound is not None:
            anchor = (round(bound[0] * scale), max(round(bound[1] * scale) - 6, 12))
        box = boxes[index] if boxes is not None and index < len(boxes) else None
        if box is not None:
            x0, y0, x1, y1 = (round(float(v) * scale) for v in box)
            # Two 1-pixel rectangles: a third of the cost of one 2-pixel (thick-line) one.
            cv2.rectangle(out, (x0, y0), (x1, y1), color, 1)
            cv2.rectangle(out, (x0 + 1, y0 + 1), (x1 - 1, y1 - 1), color, 1)
            anchor = (x0, max(y0 - 6, 12))
        if captions is not None and index < len(captions) and anchor is not None:
            _draw_caption(out, captions[index], anchor, color)
    return out


def _draw_caption(out: np.ndarray, text: str, anchor: tuple[int, int], color: tuple) -> None:
    """`text` in `color` on a black plate, its baseline at `anchor` (half the cost of text
    outlined by a second, thick stroke)."""
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    x, y = anchor
    cv2.rectangle(out, (x - 1, y - height - 2), (x + width, y + baseline - 1), (0, 0, 0), -1)
    cv2.putText(out, text, anchor, cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1)


def _overlay_regions(
    labels: np.ndarray,
    mask_boxes: Sequence[tuple[int, int, int, int] | None] | None,
    scale: float,
) -> list[tuple[tuple[int, int, int, int], int | None]]:
    """Where to draw: ((y0, y1, x0, x1), label) per instance box when drawing the boxes (one
    pixel wider, for the outlines) costs less than drawing their union, else the union with
    label None.
    """
    height, width = labels.shape
    boxes = []
    if mask_boxes is not None:
        for index, box in enumerate(mask_boxes):
            if box is not None:
                x0, y0, x1, y1 = box
                # Nearest-neighbour scaling moves a pixel by at most one: two of margin.
                boxes.append(
                    (
                        (
                            max(int(y0 * scale) - 2, 0),
                            min(int(np.ceil((y1 + 1) * scale)) + 2, height),
                            max(int(x0 * scale) - 2, 0),
                            min(int(np.ceil((x1 + 1) * scale)) + 2, width),
                        ),
                        index + 1,
                    )
                )
        if not boxes:
            return []
        y0 = min(b[0] for b, _ in boxes)
        y1 = max(b[1] for b, _ in boxes)
        x0 = min(b[2] for b, _ in boxes)
        x1 = max(b[3] for b, _ in boxes)
    else:
        covered = labels if labels.dtype == np.uint8 else (labels > 0).view(np.uint8)
        x, y, w, h = cv2.boundingRect(covered)
        if not w:
            return []
        y0, y1, x0, x1 = max(y - 1, 0), min(y + h + 1, height), max(x - 1, 0), min(x + w + 1, width)
    union = (y1 - y0) * (x1 - x0)
    per_box = sum((b[1] - b[0]) * (b[3] - b[2]) + _BOX_OVERHEAD_PIXELS for b, _ in boxes)
    if boxes and per_box < union:
        return boxes
    return [((y0, y1, x0, x1), None)]


def _colorize(labels: np.ndarray, count: int) -> np.ndarray:
    """(h, w) labels -> (h, w, 3) instance colors (black for 0)."""
    if labels.dtype == np.uint8:
        # A 256-entry color map applied by OpenCV: a table look-up, no numpy gather.
        return cv2.applyColorMap(labels, instance_palette(255)[:, None])
    return np.take(instance_palette(count), labels, axis=0)


def _draw_union_rows(
    out: np.ndarray,
    bgr: np.ndarray,
    labels: np.ndarray,
    region: tuple[int, int, int, int],
    r0: int,
    r1: int,
    alpha: float,
    outlines: bool,
) -> None:
    """Frame rows [r0, r1) of the overlay whose instances all lie in `region` (y0, y1, x0, x1):
    the frame outside it, each label's color blended inside it and, with `outlines`, the
    pixels whose 3x3 neighbourhood (within the region) holds two labels in the higher one's
    color. `labels` must be uint8.
    """
    y0, y1, x0, x1 = region
    in_place = out is bgr
    if not in_place:  # the frame around the region
        for first, last in ((r0, min(r1, y0)), (max(r0, y1), r1)):
            if first < last:
                np.copyto(out[first:last], bgr[first:last])
        np.copyto(out[max(r0, y0) : min(r1, y1), :x0], bgr[max(r0, y0) : min(r1, y1), :x0])
        np.copyto(out[max(r0, y0) : min(r1, y1), x1:], bgr[max(r0, y0) : min(r1, y1), x1:])
    r0, r1 = max(r0, y0), min(r1, y1)
    if r0 >= r1:
        return
    band_labels = labels[r0:r1, x0:x1]
    codes = band_labels
    edges = None
    if outlines:
        # One row either side (inside the region) so the 3x3 tests match the whole region's.
        halo_top, halo_bottom = max(r0 - 1, y0), min(r1 + 1, y1)
        halo = labels[halo_top:halo_bottom, x0:x1]
        inner = slice(r0 - halo_top, r1 - halo_top)
        highest = cv2.dilate(halo, _NEIGHBOURHOOD)[inner]
        edges = cv2.compare(highest, cv2.erode(halo, _NEIGHBOURHOOD)[inner], cv2.CMP_NE)
        # Off the edges a pixel's 3x3 neighbourhood holds its own label only, so the highest
        # label is the pixel's: one look-up colors the masks and the outlines alike.
        codes = highest
    colors = _colorize(codes, 255)
    target, frame = out[r0:r1, x0:x1], bgr[r0:r1, x0:x1]
    if in_place:
        blended = cv2.addWeighted(frame, 1.0 - alpha, colors, alpha, 0.0)
        cv2.copyTo(blended, np.not_equal(band_labels, 0).view(np.uint8), target)
    else:  # blend everything straight into the overlay, then put the background back
        cv2.addWeighted(frame, 1.0 - alpha, colors, alpha, 0.0, dst=target)
        cv2.copyTo(frame, np.equal(band_labels, 0).view(np.uint8), target)
    if edges is not None:
        cv2.copyTo(colors, edges, target)


def _draw_label_edges(region: np.ndarray, labels: np.ndarray, count: int) -> None:
    """Color the pixels whose 3x3 neighbourhood holds two labels (edges 2 pixels wide)."""
    highest = cv2.dilate(labels, _NEIGHBOURHOOD)
    # flatnonzero + divmod: numpy's 2-D nonzero is many times slower on large frames.
    edges = np.flatnonzero(highest != cv2.erode(labels, _NEIGHBOURHOOD))
    if edges.size:
        rows, cols = np.divmod(edges, labels.shape[1])
        region[rows, cols] = instance_palette(count)[highest[rows, cols]]
