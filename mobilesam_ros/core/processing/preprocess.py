"""Image and prompt pre-processing in numpy/OpenCV/Pillow: the model's 1024x1024 input frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.model.constants import IMAGE_SIZE
from mobilesam_ros.core.processing.bands import map_row_bands
from mobilesam_ros.core.processing.resample import PeriodicShrink, shrink_like_pillow

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# Point labels of the decoder graph (SAM's convention).
LABEL_PADDING = -1
LABEL_BACKGROUND = 0
LABEL_FOREGROUND = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3


def resized_shape(height: int, width: int, target: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) after scaling the longest side to `target`, rounded as SAM rounds it."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@dataclass(frozen=True)
class FrameGeometry:
    """How one image maps into the model frame: original and resized (unpadded) sizes."""

    original_size: tuple[int, int]  # (H, W) of the camera image
    input_size: tuple[int, int]  # (h, w) after resizing, before padding to 1024x1024

    @classmethod
    def for_image(cls, height: int, width: int) -> FrameGeometry:
        return cls((height, width), resized_shape(height, width))

    @property
    def scale_xy(self) -> np.ndarray:
        """Per-axis factors from original pixels to model-frame pixels, as SAM computes them."""
        (h, w), (nh, nw) = self.original_size, self.input_size
        return np.array([nw / w, nh / h], dtype=np.float64)


CHANNEL_ORDERS = ("rgb", "bgr", "rgba", "bgra")


def validate_image(image: object, channel_order: str = "rgb") -> np.ndarray:
    """Check an HxWxC uint8 array in `channel_order`; return it (unchanged, no copy)."""
    if channel_order not in CHANNEL_ORDERS:
        raise InvalidInputError(
            f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}"
        )
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidInputError(f"image must be uint8 {channel_order}, got dtype {image.dtype}")
    channels = len(channel_order)
    if image.ndim != 3 or image.shape[2] != channels:
        raise InvalidInputError(
            f"image must have shape (H, W, {channels}) in {channel_order} order, got {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidInputError(f"image is empty: shape {image.shape}")
    return image


def resize_like_sam(
    image: np.ndarray, size_hw: tuple[int, int], out: np.ndarray | None = None
) -> np.ndarray:
    """Resize an HxWxC uint8 image (C = 3 or 4, any channel order) to `size_hw` as SAM's
    `ResizeLongestSide.apply_image` does: Pillow's bilinear filter, antialiased when shrinking.
    Every channel is filtered on its own, so the channel order does not matter.

    Shrinking by a ratio that repeats within a few pixels (camera sizes to 1024: 1920 -> 1024
    is 15/8) applies Pillow's weights as matrix products in row bands on two threads
    (`resample.PeriodicShrink`): at most 1 grey level from Pillow's result, in 9-18 % of the
    values (tests). Other shrinks go through Pillow itself, in row bands (`shrink_rows`).
    Enlarging is plain bilinear interpolation in both libraries; OpenCV's, 5 to 8 times
    faster, differs from Pillow's only in weight rounding: at most 1 grey level, 0.2 on
    average (measured on scikit-image photos). Writes into `out` when given.
    """
    height, width, channels = image.shape
    new_height, new_width = size_hw
    if new_height >= height and new_width >= width:
        return cv2.resize(image, (new_width, new_height), dst=out, interpolation=cv2.INTER_LINEAR)
    if out is None:
        out = np.empty((new_height, new_width, channels), dtype=np.uint8)
    if shrink_like_pillow(image, size_hw, out):
        return out

    def shrink_band(y0: int, y1: int) -> None:
        np.copyto(out[y0:y1], shrink_rows(image, size_hw, y0, y1))

    map_row_bands(shrink_band, new_height, new_width)
    return out


def shrink_rows(image: np.ndarray, size_hw: tuple[int, int], y0: int, y1: int) -> np.ndarray:
    """Rows [y0, y1) of Pillow's bilinear (antialiased) shrink of `image` to `size_hw`.

    Pillow resizes the source rows that those output rows read, with its `box` argument set to
    the band's part of the frame, so the filter's positions and weights are those of the whole
    image's resize. Bands put together equal one call where the scale is a short binary
    fraction (1920x1080 and 1280x720 to 1024 wide: 15/8, 5/4); elsewhere the box's float
    rounding moves a weight now and then: at most 1 grey level, in under 0.1 % of the values
    (tests). Returns a read-only (y1 - y0, w, C) array.
    """
    height, width, channels = image.shape
    new_height, new_width = size_hw
    scale = height / new_height
    # The antialiased filter reaches `scale` source rows either side of a row's centre.
    first = max(int((y0 - 1) * scale) - 2, 0)
    last = min(int((y1 + 1) * scale) + 3, height)
    top = y0 * scale - first
    bottom = (height if y1 == new_height else y1 * scale) - first
    rows = image[first:last]
    if channels == 3:
        source = Image.fromarray(rows)  # copies into Pillow's 4-byte pixel layout
    elif channels == 4:
        # "RGBX", not "RGBA": Pillow premultiplies alpha when resizing RGBA, which would change
        # the color channels. Contiguous rows are wrapped without a copy.
        buffer = np.ascontiguousarray(rows)
        source = Image.frombuffer("RGBX", (width, last - first), buffer, "raw", "RGBX", 0, 1)
    else:
        raise InvalidInputError(f"image must have 3 or 4 channels, got shape {image.shape}")
    # Image.BILINEAR without reducing_gap: what torchvision's resize passes to Pillow.
    resized = source.resize((new_width, y1 - y0), Image.BILINEAR, box=(0, top, width, bottom))
    return np.asarray(resized)


class ImagePreprocessor:
    """Resize longest side to 1024, normalize, pad: HxWxC uint8 -> 1x3x1024x1024 float32 RGB.

    The resize is SAM's own filter (Pillow bilinear, antialiased when shrinking; within 1 grey
    level of Pillow's result, see `resize_like_sam`), so HD camera frames reach the encoder as
    the model was trained and evaluated on them. Owns its output buffers and reuses them while
    the image size stays the same. BGR and alpha layouts are read in place (each model plane
    picks its source channel), so camera images need no color conversion. Resize and
    normalization run in row bands on two threads, each band straight from the camera image
    into the model planes.
    The returned array is overwritten by the next call: a backend must consume it before then.
    """

    def __init__(self) -> None:
        self._geometry: FrameGeometry | None = None
        self._enlarged = np.empty(0, dtype=np.uint8)  # reused when frames are enlarged
        self._shrink: PeriodicShrink | None = None  # its buffers are reused frame to frame
        self._input = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
        self._scale = (1.0 / PIXEL_STD).astype(np.float32)
        self._offset = (-PIXEL_MEAN / PIXEL_STD).astype(np.float32)

    def __call__(
        self, image: np.ndarray, channel_order: str = "rgb"
    ) -> tuple[np.ndarray, FrameGeometry]:
        image = validate_image(image, channel_order)
        height, width = image.shape[:2]
        geometry = self._geometry
        if geometry is None or geometry.original_size != (height, width):
            geometry = FrameGeometry.for_image(height, width)
            self._input.fill(0.0)  # the padding is 0 after normalization, as in SAM
            self._geometry = geometry
            self._shrink = PeriodicShrink.for_sizes((height, width), geometry.input_size)
        nh, nw = geometry.input_size
        sources = [channel_order.index(name) for name in "rgb"]
        shrunk = nh < height or nw < width
        if shrunk and self._shrink is not None:
            self._shrink.each_channel(image, sources, self._normalize)
            return self._input, geometry
        resized = image
        if not shrunk and (nh, nw) != (height, width):  # enlarged into a reused buffer
            if self._enlarged.shape != (nh, nw, image.shape[2]):
                self._enlarged = np.empty((nh, nw, image.shape[2]), dtype=np.uint8)
            resized = resize_like_sam(image, (nh, nw), self._enlarged)

        def band(y0: int, y1: int) -> None:
            rows = shrink_rows(image, (nh, nw), y0, y1) if shrunk else resized[y0:y1]
            for channel, source in enumerate(sources):
                self._normalize(channel, rows[:, :, source], y0, y1)

        map_row_bands(band, nh, nw)
        return self._input, geometry

    def _normalize(self, channel: int, rows: np.ndarray, y0: int, y1: int) -> None:
        """(x - mean) / std of one channel's rows [y0, y1), written straight into that CHW plane
        of the model input: no intermediate image."""
        plane = self._input[0, channel, y0:y1, : rows.shape[1]]
        np.multiply(rows, self._scale[channel], out=plane)
        plane += self._offset[channel]


def to_model_frame(coords: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """Original-image pixel coordinates (..., 2) -> model-frame float32 coordinates."""
    return (coords * geometry.scale_xy).astype(np.float32)


def _finite_array(value: object, name: str, dtype: type) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numeric: {exc}") from None
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} contain NaN or infinite values")
    return array


def encode_prompts(
    geometry: FrameGeometry,
    boxes: object | None,
    points: object | None,
    point_labels: object | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate prompts and pack them as decoder inputs: coords (N, T, 2), labels (N, T).

    Prompt i is points[i] followed by the two corners of boxes[i], the token order SAM uses;
    prompts without a box get SAM's padding point. Boxes must not be inverted and must overlap
    the image (parts outside are kept, as SAM keeps them); points must lie inside the image.
    """
    height, width = geometry.original_size
    if boxes is None and points is None:
        raise InvalidInputError("give boxes, points or both")
    num_prompts = None
    box_array = None
    if boxes is not None:
        box_array = _finite_array(boxes, "boxes", np.float64)
        if box_array.size == 0:
            box_array = box_array.reshape(0, 4)
        if box_array.ndim == 1 and box_array.shape == (4,):
            box_array = box_array[None]
        if box_array.ndim != 2 or box_array.shape[1] != 4:
            raise InvalidInputError(
                f"boxes must have shape (N, 4) as x_min, y_min, x_max, y_max; got {box_array.shape}"
            )
        x0, y0, x1, y1 = box_array.T
        inverted = np.flatnonzero((x1 < x0) | (y1 < y0))
        if inverted.size:
            raise InvalidInputError(
                f"box {int(inverted[0])} is inverted (x_max < x_min or y_max < y_min): "
                f"{box_array[inverted[0]].tolist()}"
            )
        outside = np.flatnonzero((x1 < 0) | (y1 < 0) | (x0 > width) | (y0 > height))
        if outside.size:
            raise InvalidInputError(
                f"box {int(outside[0])} {box_array[outside[0]].tolist()} lies outside the "
                f"{width}x{height} image"
            )
        num_prompts = len(box_array)
    point_array = label_array = None
    if points is not None:
        point_array = _finite_array(points, "points", np.float64)
        if point_array.size == 0:
            point_array = point_array.reshape(0, 1, 2)
            point_labels = None
        if point_array.ndim != 3 or point_array.shape[2] != 2:
            raise InvalidInputError(
                f"points must have shape (N, K, 2) as x, y pixels; got {point_array.shape}"
            )
        if num_prompts is not None and len(point_array) != num_prompts:
            raise InvalidInputError(
                f"{num_prompts} boxes but {len(point_array)} point sets; prompt i uses box i "
                "and points i, so both need the same N"
            )
        num_prompts = len(point_array)
        if point_labels is None:
            label_array = np.full(point_array.shape[:2], LABEL_FOREGROUND, dtype=np.float32)
        else:
            label_array = _finite_array(point_labels, "point_labels", np.float64)
            if label_array.shape != point_array.shape[:2]:
                raise InvalidInputError(
                    f"point_labels must have shape {point_array.shape[:2]} (one per point), "
                    f"got {label_array.shape}"
                )
            if not np.isin(label_array, (LABEL_PADDING, LABEL_BACKGROUND, LABEL_FOREGROUND)).all():
                raise InvalidInputError(
                    "point_labels must be 1 (foreground), 0 (background) or -1 (ignored)"
                )
        px, py = point_array[..., 0], point_array[..., 1]
        outside = (px < 0) | (py < 0) | (px > width) | (py > height)
        outside &= label_array != LABEL_PADDING
        if outside.any():
            index = tuple(int(i) for i in np.argwhere(outside)[0])
            raise InvalidInputError(
                f"point {index} {point_array[index].tolist()} lies outside the "
                f"{width}x{height} image"
            )
    elif point_labels is not None:
        raise InvalidInputError("point_labels given without points")

    assert num_prompts is not None
    pieces_coords = []
    pieces_labels = []
    if point_array is not None:
        pieces_coords.append(point_array)
        pieces_labels.append(label_array)
    if box_array is not None:
        pieces_coords.append(box_array.reshape(-1, 2, 2))
        pieces_labels.append(
            np.tile(np.array([[LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT]]), (num_prompts, 1))
        )
    else:
        pieces_coords.append(np.zeros((num_prompts, 1, 2)))
        pieces_labels.append(np.full((num_prompts, 1), LABEL_PADDING))
    coords = np.concatenate(pieces_coords, axis=1)
    labels = np.concatenate(pieces_labels, axis=1).astype(np.float32)
    return to_model_frame(coords, geometry), labels
