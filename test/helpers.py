"""Helpers shared by the tests."""

from __future__ import annotations

import numpy as np


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photo that scikit-image ships."""
    from skimage import data

    image = np.asarray(getattr(data, name)())
    return np.ascontiguousarray(image[..., :3])
