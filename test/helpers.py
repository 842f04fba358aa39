"""Helpers shared by the tests."""

from __future__ import annotations

import importlib.util
import platform

import numpy as np

# What backend auto on a CPU is documented to take here.
AUTO_CPU_BACKEND = (
    "openvino"
    if platform.machine() == "x86_64" and importlib.util.find_spec("openvino")
    else "onnxruntime"
)


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photo that scikit-image ships."""
    from skimage import data

    image = np.asarray(getattr(data, name)())
    return np.ascontiguousarray(image[..., :3])


def camera_frame(height: int, width: int) -> np.ndarray:
    """A height x width RGB frame tiled from real photos at their own resolution, as a camera
    sees detail (sharp edges, fine texture) rather than an upscaled photo."""
    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
    tiles = [photo(name) for name in names]
    rows = []
    covered = 0
    index = 0
    while covered < height:
        row_height = tiles[index % len(tiles)].shape[0]
        row = []
        row_width = 0
        while row_width < width:
            tile = tiles[index % len(tiles)][:row_height]
            if tile.shape[0] < row_height:  # pad a shorter photo with its own mirror image
                tile = np.pad(tile, ((0, row_height - tile.shape[0]), (0, 0), (0, 0)), "reflect")
            row.append(tile)
            row_width += tile.shape[1]
            index += 1
        rows.append(np.concatenate(row, axis=1)[:, :width])
        covered += row_height
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:height])
