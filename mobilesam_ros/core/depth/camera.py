"""The pinhole camera model of the color image, and how intrinsics follow a resampled view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mobilesam_ros.core.errors import InvalidInputError


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics of an image of `width` x `height` pixels (pixel centers at integers)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InvalidInputError(f"camera {name} must be a positive number, got {value}")
        for name in ("cx", "cy"):
            if not np.isfinite(getattr(self, name)):
                raise InvalidInputError(f"camera {name} must be finite, got {getattr(self, name)}")
        if self.width <= 0 or self.height <= 0:
            raise InvalidInputError(f"camera size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> CameraModel:
        """From a row-major 3x3 intrinsic matrix (CameraInfo.k)."""
        if len(k) != 9:
            raise InvalidInputError(f"camera matrix k must have 9 values, got {len(k)}")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    def scaled_to(self, width: int, height: int) -> CameraModel:
        """These intrinsics for the same view resampled to width x height (same aspect ratio).

        Raises InvalidInputError when the aspect ratios differ by more than one pixel's rounding.
        """
        if (width, height) == (self.width, self.height):
            return self
        if not same_aspect(self.width, self.height, width, height):
            raise InvalidInputError(
                f"cannot scale intrinsics of {self.width}x{self.height} to {width}x{height}: "
                "aspect ratios differ"
            )
        sx, sy = width / self.width, height / self.height
        # Pixel centers at integers: continuous x maps to (x + 0.5) * s - 0.5.
        return CameraModel(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            width,
            height,
        )

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalized ray coordinates, float32: (u - cx) / fx of every column u and (v - cy) / fy
        of every row v; a pixel's point at depth z is (ray_x * z, ray_y * z, z)."""
        return (
            (np.arange(self.width, dtype=np.float32) - np.float32(self.cx)) / np.float32(self.fx),
            (np.arange(self.height, dtype=np.float32) - np.float32(self.cy)) / np.float32(self.fy),
        )


def same_aspect(width: int, height: int, other_width: int, other_height: int) -> bool:
    """True when other is width x height scaled, up to rounding of one side to whole pixels."""
    if min(width, height, other_width, other_height) <= 0:
        return False
    return abs(other_width * height - other_height * width) <= max(width, height)
