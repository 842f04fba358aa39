"""Low-resolution mask logits -> full-resolution boolean masks (or their crops), numpy/OpenCV."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.model.constants import IMAGE_SIZE, LOW_RES_SIZE
from mobilesam_ros.core.processing.preprocess import FrameGeometry

_UPSCALE = IMAGE_SIZE // LOW_RES_SIZE  # 4


def masks_from_logits(
    low_res_logits: np.ndarray,
    geometry: FrameGeometry,
    threshold: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Upscale (..., 256, 256) logits to the original image and threshold them.

    The same two bilinear steps as SAM's `postprocess_masks` (256 -> 1024 model frame, crop the
    padding, resize to the original size), except that step one only computes the rows and
    columns the crop keeps: the upscaled pixels are the same, the padding is never made.
    Returns bool masks of shape (..., H, W), written into `out` when given.
    """
    height, width = geometry.original_size
    lead_shape = low_res_logits.shape[:-2]
    if out is None:
        out = np.empty((*lead_shape, height, width), dtype=bool)
    flat_logits = low_res_logits.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE)
    flat_out = out.reshape(-1, height, width)
    for logits, mask in zip(flat_logits, flat_out, strict=True):
        np.greater(upscale_logits(logits, geometry), threshold, out=mask)
    return out


def upscale_logits(logits: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """One (256, 256) logit map at the original image's size, float32: SAM's two bilinear
    steps (`masks_from_logits`), the model frame's padding never computed."""
    height, width = geometry.original_size
    nh, nw = geometry.input_size
    # Low-res rows/cols whose bilinear footprint reaches the kept region, plus one of margin so
    # the border clamp never affects a kept pixel.
    src_rows = min(LOW_RES_SIZE, -(-nh // _UPSCALE) + 1)
    src_cols = min(LOW_RES_SIZE, -(-nw // _UPSCALE) + 1)
    upscaled = cv2.resize(
        logits[:src_rows, :src_cols],
        (src_cols * _UPSCALE, src_rows * _UPSCALE),
        interpolation=cv2.INTER_LINEAR,
    )[:nh, :nw]
    if (nh, nw) != (height, width):
        upscaled = cv2.resize(upscaled, (width, height), interpolation=cv2.INTER_LINEAR)
    return upscaled


@dataclass(frozen=True)
class MaskCrop:
    """One instance mask as its tight bounding-box crop: `mask` covers rows y0.. and cols x0..

    An empty mask has a (0, 0) crop at (0, 0). `mask` may be a view into a larger buffer.
    """

    x0: int
    y0: int
    mask: np.ndarray  # (h, w) bool, tight: its first/last rows and columns hold a True pixel
    image_size: tuple[int, int]  # (H, W) of the full frame

    @classmethod
    def from_mask(
        cls,
        mask: np.ndarray,
        offset: tuple[int, int] = (0, 0),
        image_size: tuple[int, int] | None = None,
    ) -> MaskCrop:
        """The tight crop of a bool mask (a view, no copy). `mask` is the full frame, or a
        window of it at `offset` (x, y) in an image of `image_size` (H, W)."""
        size = image_size if image_size is not None else (int(mask.shape[0]), int(mask.shape[1]))
        if mask.size == 0:
            return cls(0, 0, np.zeros((0, 0), dtype=bool), size)
        # OpenCV's bounding box of the non-zero pixels: one vectorized scan, ~5x numpy's.
        x, y, width, height = cv2.boundingRect(mask.view(np.uint8))
        if width == 0:
            return cls(0, 0, np.zeros((0, 0), dtype=bool), size)
        crop = mask[y : y + height, x : x + width]
        return cls(offset[0] + x, offset[1] + y, crop, size)

    @property
    def empty(self) -> bool:
        return self.mask.size == 0

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """(x_min, y_min, x_max, y_max) inclusive, as `mask_box` of the full mask; None if empty."""
        if self.empty:
            return None
        height, width = self.mask.shape
        return self.x0, self.y0, self.x0 + width - 1, self.y0 + height - 1

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) of the crop in the full frame."""
        height, width = self.mask.shape
        return slice(self.y0, self.y0 + height), slice(self.x0, self.x0 + width)

    def to_full(self) -> np.ndarray:
        """The (H, W) bool mask of the whole frame (allocated on each call)."""
        full = np.zeros(self.image_size, dtype=bool)
        full[self.slices] = self.mask
        return full


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight (x_min, y_min, x_max, y_max) pixel box of a bool mask, inclusive; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


@dataclass(frozen=True)
class _AxisWindows:
    """One image axis of `masks_from_logits`: low-res cells -> model pixels -> image pixels.

    The resize to the image repeats every `period_in` model pixels / `period_out` image pixels,
    so a window starting on a period boundary sees the same sampling positions as the full
    frame (OpenCV's IPP resize then gives the same values bit for bit).
    """

    cells: int  # low-res cells the full path reads (rows or cols of logits[:cells])
    model: int  # model-frame pixels kept (nh or nw)
    image: int  # image pixels (H or W)
    period_in: int
    period_out: int

    @classmethod
    def build(cls, model: int, image: int) -> _AxisWindows:
        cells = min(LOW_RES_SIZE, -(-model // _UPSCALE) + 1)
        common = math.gcd(model, image)
        return cls(cells, model, image, model // common, image // common)

    def window(self, first_cell: int, last_cell: int, aligned: bool) -> tuple[int, int, int, int]:
        """Cells [c0, c1) to resize and the image window [o0, o1) that holds every pixel of
        the mask that low-res cells first_cell..last_cell (the support) can reach."""
        # Model pixels a cell reaches through the x4 bilinear upscale: one cell either side.
        model_lo = max(_UPSCALE * (first_cell - 1), 0)
        model_hi = min(_UPSCALE * (last_cell + 2), self.model)
        if self.model != self.image:
            # Image pixels sampling those model pixels, with two pixels of slack for rounding.
            ratio = self.model / self.image
            image_lo = max(math.floor((model_lo - 2.5) / ratio - 0.5), 0)
            image_hi = min(math.ceil((model_hi + 2.5) / ratio - 0.5), self.image)
            blocks = self.image // self.period_out
            block_lo = image_lo // self.period_out - 1 if aligned else 0
            block_hi = -(-image_hi // self.period_out) + 1
            block_lo, block_hi = max(block_lo, 0), min(block_hi, blocks)
            image_lo, image_hi = block_lo * self.period_out, block_hi * self.period_out
            model_lo, model_hi = block_lo * self.period_in, block_hi * self.period_in
        # Cells whose x4 upscale covers [model_lo, model_hi), one cell of margin so the window's
        # border clamp never reaches a kept pixel (none needed at the frame's own borders).
        cell_lo = max(model_lo // _UPSCALE - 1, 0) if aligned else 0
        cell_hi = min(-(-model_hi // _UPSCALE) + 1, self.cells)
        if self.model == self.image:
            return cell_lo, cell_hi, model_lo, model_hi
        return cell_lo, cell_hi, image_lo, image_hi


def _windows_are_shift_invariant() -> bool:
    """Whether OpenCV's float resize gives a window the full frame's values bit for bit.

    True for IPP's resize. OpenCV's own code computes each sampling position from the absolute
    output index in float precision, so its windows must start at pixel 0 to match.
    """
    return bool(cv2.ipp.useIPP())


def mask_crops_from_logits(
    low_res_logits: np.ndarray, geometry: FrameGeometry, threshold: float = 0.0
) -> list[MaskCrop]:
    """(N, 256, 256) logits -> N tight `MaskCrop`s equal to crops of `masks_from_logits`.

    Only the box where a mask can be True is upscaled and thresholded: the box of low-res
    cells above the threshold, widened by one cell (the reach of the bilinear upscale). The
    cost follows the masks' boxes, not the frame size.
    """
    if low_res_logits.ndim != 3 or low_res_logits.shape[1:] != (LOW_RES_SIZE, LOW_RES_SIZE):
        raise InvalidInputError(
            f"low_res_logits must have shape (N, {LOW_RES_SIZE}, {LOW_RES_SIZE}), "
            f"got {low_res_logits.shape}"
        )
    height, width = geometry.original_size
    rows_axis, cols_axis = _axis_windows(geometry)
    logits = low_res_logits[:, : rows_axis.cells, : cols_axis.cells]
    # Bilinear weights are convex, so a pixel can pass the threshold only next to a cell that
    # does. At threshold 0 that holds in float too (sums of products of non-positive values
    # and non-negative weights stay non-positive); otherwise a slack of a few float steps of the
    # largest logit covers the rounding of the two resizes.
    slack = 0.0
    if threshold != 0.0 and logits.size:
        slack = 1e-6 * (abs(threshold) + float(np.abs(logits).max()))
    support = logits > threshold - slack
    rows_any, cols_any = support.any(axis=2), support.any(axis=1)
    aligned = _windows_are_shift_invariant()
    crops = []
    # Float scratch for the two resizes, reused by every mask of the call (only the bool
    # windows that the crops keep are allocated per mask).
    cells_scratch = np.empty(_UPSCALE * rows_axis.cells * _UPSCALE * cols_axis.cells, np.float32)
    image_scratch = np.empty(0, np.float32)
    for index in range(len(logits)):
        rows, cols = np.flatnonzero(rows_any[index]), np.flatnonzero(cols_any[index])
        if rows.size == 0:
            crops.append(MaskCrop(0, 0, np.zeros((0, 0), dtype=bool), (height, width)))
            continue
        r0, r1, y0, y1 = rows_axis.window(int(rows[0]), int(rows[-1]), aligned)
        c0, c1, x0, x1 = cols_axis.window(int(cols[0]), int(cols[-1]), aligned)
        cells = logits[index, r0:r1, c0:c1]
        upscaled_shape = (cells.shape[0] * _UPSCALE, cells.shape[1] * _UPSCALE)
        upscaled = cells_scratch[: upscaled_shape[0] * upscaled_shape[1]].reshape(upscaled_shape)
        cv2.resize(cells, upscaled_shape[::-1], dst=upscaled, interpolation=cv2.INTER_LINEAR)
        model_rows = _model_range(rows_axis, r0, y0, y1)
        model_cols = _model_range(cols_axis, c0, x0, x1)
        upscaled = upscaled[model_rows, model_cols]
        if upscaled.shape != (y1 - y0, x1 - x0):
            if image_scratch.size < (y1 - y0) * (x1 - x0):
                image_scratch = np.empty(height * width, np.float32)
            resized = image_scratch[: (y1 - y0) * (x1 - x0)].reshape(y1 - y0, x1 - x0)
            cv2.resize(upscaled, (x1 - x0, y1 - y0), dst=resized, interpolation=cv2.INTER_LINEAR)
            upscaled = resized
        crops.append(MaskCrop.from_mask(upscaled > threshold, (x0, y0), (height, width)))
    return crops


def _model_range(axis: _AxisWindows, first_cell: int, image_lo: int, image_hi: int) -> slice:
    """Model pixels feeding image window [image_lo, image_hi), relative to the upscaled cells."""
    if axis.model == axis.image:
        model_lo, model_hi = image_lo, image_hi
    else:
        model_lo = image_lo // axis.period_out * axis.period_in
        model_hi = image_hi // axis.period_out * axis.period_in
    offset = first_cell * _UPSCALE
    return slice(model_lo - offset, model_hi - offset)


_AXIS_CACHE: dict[FrameGeometry, tuple[_AxisWindows, _AxisWindows]] = {}


def _axis_windows(geometry: FrameGeometry) -> tuple[_AxisWindows, _AxisWindows]:
    axes = _AXIS_CACHE.get(geometry)
    if axes is None:
        (height, width), (nh, nw) = geometry.original_size, geometry.input_size
        axes = (_AxisWindows.build(nh, height), _AxisWindows.build(nw, width))
        _AXIS_CACHE[geometry] = axes
    return axes
