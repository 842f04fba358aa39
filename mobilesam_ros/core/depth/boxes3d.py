"""Centroids, axis-aligned and oriented boxes of point sets; rotations as quaternions.

The oriented box: its third axis is the points' direction of least variance (PCA), the other two
are the sides of the least-area rectangle around the points projected along it (OpenCV's rotating
calipers). A box seen on one face gets that face's rectangle and a thickness near zero; for a box
seen on two faces the visible surface does not fix the orientation, and the box fits the points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Points to which the oriented box's rectangle is fitted (box_axes).
OBB_SAMPLE_POINTS = 512


@dataclass(frozen=True)
class BoxFits:
    """Point set k's centroid and boxes (row k of each (K, 3) array), in the points' frame."""

    centroids: np.ndarray  # (K, 3) mean of the points
    aabb_centers: np.ndarray  # (K, 3)
    aabb_sizes: np.ndarray  # (K, 3) extents along x, y, z
    obb_centers: np.ndarray  # (K, 3)
    obb_sizes: np.ndarray  # (K, 3) extents along the columns of obb_axes[k]
    obb_axes: list[np.ndarray]  # K (3, 3) rotations: columns are the box axes (right-handed)


def fit_boxes(xyz: np.ndarray, starts: list[int]) -> BoxFits:
    """Boxes of the consecutive point sets of (3, N) `xyz` (set k from starts[k] to the next
    start or the end). Sums, minima and maxima run once over all sets (`reduceat`); only the
    oriented boxes' axes are fitted one set at a time."""
    ends = [*starts[1:], xyz.shape[1]]
    sizes = np.subtract(ends, starts)
    centroids = np.add.reduceat(xyz, starts, axis=1, dtype=np.float64) / sizes
    lows = np.minimum.reduceat(xyz, starts, axis=1).astype(np.float64)
    highs = np.maximum.reduceat(xyz, starts, axis=1).astype(np.float64)
    in_box = np.empty_like(xyz)  # the points in their box's axes
    all_axes = []
    for start, end in zip(starts, ends, strict=True):
        axes = box_axes(xyz[:, start:end])
        np.matmul(axes.T.astype(np.float32), xyz[:, start:end], out=in_box[:, start:end])
        all_axes.append(axes)
    box_lows = np.minimum.reduceat(in_box, starts, axis=1).astype(np.float64)
    box_highs = np.maximum.reduceat(in_box, starts, axis=1).astype(np.float64)
    obb_centers = np.einsum("kij,jk->ki", np.array(all_axes), (box_lows + box_highs) / 2.0)
    return BoxFits(
        centroids=centroids.T,
        aabb_centers=((lows + highs) / 2.0).T,
        aabb_sizes=(highs - lows).T,
        obb_centers=obb_centers,
        obb_sizes=(box_highs - box_lows).T,
        obb_axes=all_axes,
    )


def box_axes(xyz: np.ndarray) -> np.ndarray:
    """The oriented box's axes (3, 3 columns, right-handed; see the module doc), fitted to at
    most OBB_SAMPLE_POINTS evenly spread points of (3, N) `xyz`. The box's extents along them
    are measured on all points (`fit_boxes`)."""
    step = -(-xyz.shape[1] // OBB_SAMPLE_POINTS)  # ceil division
    sample = xyz[:, ::step].astype(np.float64)
    sample -= sample.sum(axis=1, keepdims=True) / sample.shape[1]
    # The scatter matrix in numpy: OpenCV's calcCovarMatrix is faster alone but runs on the
    # thread pool, whose workers then spin through the rest of the lifting (twice the CPU time).
    # cv2.eigen: rows are eigenvectors, eigenvalues descending (cheaper than np.linalg.eigh).
    first, second, _ = cv2.eigen(sample @ sample.T)[-1].tolist()
    in_plane = np.array([first, second], dtype=np.float32)
    planar = sample.T.astype(np.float32) @ in_plane.T  # (n, 2), contiguous
    _, _, angle = cv2.minAreaRect(planar)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # Rectangle sides in 3D (the in-plane axes rotated by angle) and their cross product.
    a = [cos * p + sin * q for p, q in zip(first, second, strict=True)]
    b = [cos * q - sin * p for p, q in zip(first, second, strict=True)]
    c = [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
    return np.array([a, b, c]).T


def rotation_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """3x3 rotation matrix -> unit quaternion (x, y, z, w), w >= 0."""
    m = rotation
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        w, x = 0.25 * s, (m[2, 1] - m[1, 2]) / s
        y, z = (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x = (m[2, 1] - m[1, 2]) / s, 0.25 * s
        y, z = (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s
        y, z = 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s
        y, z = (m[1, 2] + m[2, 1]) / s, 0.25 * s
    quaternion = np.array([x, y, z, w], dtype=np.float64)
    quaternion /= np.linalg.norm(quaternion)
    if quaternion[3] < 0:
        quaternion = -quaternion
    return tuple(float(q) for q in quaternion)  # type: ignore[return-value]
