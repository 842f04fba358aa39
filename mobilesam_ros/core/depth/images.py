"""Depth images as received (a view on the message's buffer) and their depth in metres.

Depth of another size than the color image is read where both have the same aspect ratio:
color pixel (u, v) reads depth pixel (floor((u + 0.5) * sx), floor((v + 0.5) * sy)) with
s = depth size / color size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.image_codec import check_buffer_layout

# Metres per unit of each accepted depth encoding.
DEPTH_ENCODINGS = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}


@dataclass(frozen=True)
class DepthImage:
    """A depth image as received: `raw` (H, W) values (a view on the buffer) times `scale` = m."""

    raw: np.ndarray
    scale: float

    @property
    def height(self) -> int:
        return int(self.raw.shape[0])

    @property
    def width(self) -> int:
        return int(self.raw.shape[1])

    @classmethod
    def from_buffer(
        cls,
        data: bytes | bytearray | memoryview | np.ndarray,
        height: int,
        width: int,
        step: int,
        encoding: str,
        is_bigendian: bool = False,
    ) -> DepthImage:
        """A view on a sensor_msgs/Image buffer: 16UC1 (or mono16) in mm, 32FC1 in m."""
        if encoding not in DEPTH_ENCODINGS:
            raise InvalidInputError(
                f"depth encoding {encoding!r} is not supported; use one of "
                f"{', '.join(sorted(DEPTH_ENCODINGS))}"
            )
        itemsize = 4 if encoding == "32FC1" else 2
        buffer = np.frombuffer(data, dtype=np.uint8)
        check_buffer_layout(buffer.size, height, width, step, itemsize, "depth image")
        if step % itemsize:
            raise InvalidInputError(
                f"depth image step {step} is not a whole number of {encoding} pixels"
            )
        kind = "f4" if encoding == "32FC1" else "u2"
        dtype = np.dtype((">" if is_bigendian else "<") + kind)
        rows = buffer[: step * height].view(dtype).reshape(height, step // itemsize)
        return cls(rows[:, :width], DEPTH_ENCODINGS[encoding])

    @classmethod
    def from_metres(cls, metres: np.ndarray) -> DepthImage:
        """From an (H, W) float array in metres (no copy for float32)."""
        if metres.ndim != 2:
            raise InvalidInputError(f"depth must be (H, W), got shape {metres.shape}")
        return cls(np.asarray(metres, dtype=np.float32), 1.0)

    @classmethod
    def from_millimetres(cls, millimetres: np.ndarray) -> DepthImage:
        """From an (H, W) uint16 array in millimetres (0 = no depth)."""
        if millimetres.ndim != 2 or millimetres.dtype != np.uint16:
            raise InvalidInputError(
                f"depth in mm must be (H, W) uint16, got {millimetres.dtype} {millimetres.shape}"
            )
        return cls(millimetres, 0.001)

    def metres_at_crop(
        self, x0: int, y0: int, out: np.ndarray, image_size: tuple[int, int]
    ) -> None:
        """Depth in metres (float32) at the pixels of the (h, w) crop `out` at (x0, y0) of a
        color image of `image_size` (H, W), written into `out`."""
        height, width = image_size
        h, w = out.shape
        if (self.height, self.width) == image_size:
            raw = self.raw[y0 : y0 + h, x0 : x0 + w]
        else:
            rows = ((np.arange(y0, y0 + h) + 0.5) * (self.height / height)).astype(np.intp)
            cols = ((np.arange(x0, x0 + w) + 0.5) * (self.width / width)).astype(np.intp)
            np.minimum(rows, self.height - 1, out=rows)
            np.minimum(cols, self.width - 1, out=cols)
            raw = self.raw[rows[:, None], cols[None, :]]
        if self.scale != 1.0:
            np.multiply(raw, np.float32(self.scale), out=out)  # in float32, as raw * 1.0f * scale
        else:
            np.copyto(out, raw)  # also native byte order for big-endian buffers

    def upsampling_reach(self, image_size: tuple[int, int]) -> int:
        """Color pixels, along a row or a column, that repeat one depth pixel (at least 1)."""
        height, width = image_size
        return max(1, -(-width // self.width), -(-height // self.height))
