"""The lifted instances' points as one structured array, laid out as PointCloud2 records."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mobilesam_ros.core.depth.instances import Instance3D
from mobilesam_ros.core.errors import InvalidInputError

# Point cloud record: xyz, instance label (i + 1 for instances[i], as in mask_image), packed rgb.
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u4")])
CLOUD_RGB_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u4"), ("rgb", "<u4")]
)


def instances_cloud(
    instances: Sequence[Instance3D | None], stride: int = 1, rgb: np.ndarray | None = None
) -> np.ndarray:
    """Points of every instance as one structured array (CLOUD_DTYPE, or CLOUD_RGB_DTYPE with rgb).

    `stride` keeps the points on every stride-th image row and column. `rgb`: the (H, W, 3)
    color image in R, G, B order; packed as 0x00RRGGBB (the layout of PointCloud2's `rgb`).
    """
    if stride < 1:
        raise InvalidInputError(f"cloud stride must be >= 1, got {stride}")
    selections = []
    for label, instance in enumerate(instances, start=1):
        if instance is None:
            continue
        if stride > 1:
            keep = np.flatnonzero(((instance.u % stride) == 0) & ((instance.v % stride) == 0))
            selections.append((label, instance.xyz[:, keep], instance.u[keep], instance.v[keep]))
        else:
            selections.append((label, instance.xyz, instance.u, instance.v))
    total = sum(xyz.shape[1] for _, xyz, _, _ in selections)
    cloud = np.empty(total, dtype=CLOUD_DTYPE if rgb is None else CLOUD_RGB_DTYPE)
    start = 0
    for label, xyz, u, v in selections:
        end = start + xyz.shape[1]
        part = cloud[start:end]
        part["x"], part["y"], part["z"] = xyz
        part["label"] = label
        if rgb is not None:
            colors = rgb[v, u].astype(np.uint32)
            part["rgb"] = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
        start = end
    return cloud
