"""What lifting returns: each instance's points and boxes, and why others have none."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from mobilesam_ros.core.depth.boxes3d import rotation_to_quaternion

# Counter names (the node adds them to its diagnostics). Per frame: every instance of the frame
# counts once under the frame's reason.
DEPTH_MISSING = "depth_missing"
CAMERA_INFO_MISSING = "camera_info_missing"
DEPTH_SIZE_MISMATCH = "depth_size_mismatch"
CAMERA_INFO_SIZE_MISMATCH = "camera_info_size_mismatch"
# Per instance.
TOO_FEW_DEPTH_POINTS = "too_few_depth_points"
EMPTY_MASK = "empty_mask"


@dataclass(frozen=True, eq=False)
class PixelSet:
    """Pixels of a mask crop as row-major indices into the crop (`width` wide, at x0, y0).

    Image columns and rows are worked out when first asked for (the point cloud's stride and
    colors): lifting itself needs only the indices.
    """

    index: np.ndarray  # (N,) intp, row-major in the crop plus `base`
    base: int
    x0: int
    y0: int
    width: int

    @functools.cached_property
    def columns_rows(self) -> tuple[np.ndarray, np.ndarray]:
        rows, columns = np.divmod(self.index - self.base, self.width)
        columns += self.x0
        rows += self.y0
        return columns, rows


@dataclass(frozen=True)
class Instance3D:
    """One instance in the camera's optical frame (metres)."""

    centroid: np.ndarray  # (3,) mean of the points
    aabb_center: np.ndarray  # (3,)
    aabb_size: np.ndarray  # (3,) extents along x, y, z
    obb_center: np.ndarray  # (3,)
    obb_size: np.ndarray  # (3,) extents along obb_axes' columns
    obb_axes: np.ndarray  # (3, 3) rotation: columns are the box axes (right-handed)
    xyz: np.ndarray  # (3, N) float32: rows x, y, z of the points
    pixels: PixelSet  # where in the color image each point is

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[1])

    @property
    def u(self) -> np.ndarray:
        """(N,) color-image column of each point."""
        return self.pixels.columns_rows[0]

    @property
    def v(self) -> np.ndarray:
        """(N,) color-image row of each point."""
        return self.pixels.columns_rows[1]

    @property
    def points(self) -> np.ndarray:
        """(N, 3) view of the points."""
        return self.xyz.T

    @property
    def obb_quaternion(self) -> tuple[float, float, float, float]:
        """obb_axes as a unit quaternion (x, y, z, w)."""
        return rotation_to_quaternion(self.obb_axes)


@dataclass
class LiftResult:
    """instances[i] belongs to masks[i] (None: no 3D result); counts: reasons for the Nones."""

    instances: list[Instance3D | None]
    counts: Counter[str] = field(default_factory=Counter)
