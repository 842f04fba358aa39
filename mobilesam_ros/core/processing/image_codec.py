"""Camera image buffers (sensor_msgs/Image fields, compressed bytes) -> arrays the model reads.

ROS-free: takes the message's fields, not the message. Color images come back as a view of the
buffer wherever the layout allows, together with their channel order, so that no per-frame
color conversion happens; the pre-processing reads BGR and alpha layouts in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mobilesam_ros.core.errors import InvalidInputError

# Encoding name -> (bytes per pixel, channel order the model can read directly, or None).
_DIRECT = {
    "rgb8": (3, "rgb"),
    "bgr8": (3, "bgr"),
    "rgba8": (4, "rgba"),
    "bgra8": (4, "bgra"),
}
# Encodings that need one conversion to BGR: name -> (bytes per pixel, dtype, OpenCV code).
_CONVERTED = {
    "mono8": (1, np.uint8, cv2.COLOR_GRAY2BGR),
    "8uc1": (1, np.uint8, cv2.COLOR_GRAY2BGR),
    "mono16": (2, np.uint16, None),
    "16uc1": (2, np.uint16, None),
    # sensor_msgs' "yuv422" is UYVY byte order; "yuv422_yuy2" is YUYV.
    "yuv422": (2, np.uint8, cv2.COLOR_YUV2BGR_UYVY),
    "uyvy": (2, np.uint8, cv2.COLOR_YUV2BGR_UYVY),
    "yuv422_yuy2": (2, np.uint8, cv2.COLOR_YUV2BGR_YUYV),
    "yuyv": (2, np.uint8, cv2.COLOR_YUV2BGR_YUYV),
}
SUPPORTED_ENCODINGS = tuple(_DIRECT) + tuple(_CONVERTED)


@dataclass(frozen=True)
class DecodedImage:
    """Pixels ready for `Segmenter.encode(pixels, channel_order)` and for drawing overlays."""

    pixels: np.ndarray  # HxWxC uint8
    channel_order: str  # rgb, bgr, rgba or bgra

    def to_bgr(self) -> np.ndarray:
        """A BGR uint8 image (a view when already BGR)."""
        order = self.channel_order
        if order == "bgr":
            return self.pixels
        code = {"rgb": cv2.COLOR_RGB2BGR, "rgba": cv2.COLOR_RGBA2BGR, "bgra": cv2.COLOR_BGRA2BGR}
        return cv2.cvtColor(self.pixels, code[order])


def check_raw_image(data_size: int, height: int, width: int, step: int, encoding: str) -> None:
    """Cheap checks of a raw image's fields (no pixel access); InvalidInputError if unusable."""
    _layout(data_size, height, width, step, encoding)


def check_buffer_layout(
    data_size: int, height: int, width: int, step: int, bytes_per_pixel: int, what: str = "image"
) -> None:
    """Size, row step and buffer length of a sensor_msgs/Image-like buffer; InvalidInputError
    naming `what` and the field that is wrong."""
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"{what} is empty: {width}x{height}")
    if step < width * bytes_per_pixel:
        raise InvalidInputError(
            f"{what} step {step} is smaller than width {width} x {bytes_per_pixel} bytes per pixel"
        )
    if data_size < step * height:
        raise InvalidInputError(
            f"{what} data has {data_size} bytes, fewer than step x height = {step * height}"
        )


def _layout(data_size: int, height: int, width: int, step: int, encoding: str) -> tuple[str, int]:
    name = encoding.lower()
    if name in _DIRECT:
        bytes_per_pixel = _DIRECT[name][0]
    elif name in _CONVERTED:
        bytes_per_pixel = _CONVERTED[name][0]
    else:
        raise InvalidInputError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    check_buffer_layout(data_size, height, width, step, bytes_per_pixel)
    if bytes_per_pixel == 2 and name not in ("mono16", "16uc1") and width % 2:
        raise InvalidInputError(f"{encoding} images need an even width, got {width}")
    return name, bytes_per_pixel


def decode_raw_image(
    data: bytes | bytearray | memoryview | np.ndarray,
    height: int,
    width: int,
    step: int,
    encoding: str,
    is_bigendian: bool = False,
) -> DecodedImage:
    """Interpret a raw image buffer; raises InvalidInputError naming what is wrong."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    name, bytes_per_pixel = _layout(buffer.size, height, width, step, encoding)
    rows = buffer[: step * height].reshape(height, step)[:, : width * bytes_per_pixel]
    if name in _DIRECT:
        return DecodedImage(rows.reshape(height, width, bytes_per_pixel), _DIRECT[name][1])
    _, dtype, code = _CONVERTED[name]
    if dtype == np.uint16:
        # 16-bit mono (IR, depth visualised as intensity): scaled by the frame's maximum.
        pixels = np.ascontiguousarray(rows).view(
            np.dtype(np.uint16).newbyteorder(">" if is_bigendian else "<")
        )
        peak = int(pixels.max())
        mono = cv2.convertScaleAbs(pixels, alpha=255.0 / peak if peak else 0.0)
        return DecodedImage(cv2.cvtColor(mono, cv2.COLOR_GRAY2BGR), "bgr")
    if bytes_per_pixel == 2:
        packed = np.ascontiguousarray(rows).reshape(height, width, 2)
        return DecodedImage(cv2.cvtColor(packed, code), "bgr")
    return DecodedImage(cv2.cvtColor(np.ascontiguousarray(rows), code), "bgr")


def decode_compressed_image(data: bytes | bytearray | memoryview | np.ndarray) -> DecodedImage:
    """JPEG or PNG bytes (sensor_msgs/CompressedImage.data) -> BGR pixels."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buffer.size == 0:
        raise InvalidInputError("compressed image is empty")
    pixels = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if pixels is None:
        raise InvalidInputError(f"cannot decode compressed image ({buffer.size} bytes)")
    return DecodedImage(pixels, "bgr")
