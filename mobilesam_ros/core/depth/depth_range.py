"""One instance's depth range from its mask's valid depths (steps 1-2 of `lifting`).

The eroded core's percentiles give the object's depth; the range then grows over the mask's
depths beyond each end for as long as they continue without a gap over `depth_gap`.
"""

from __future__ import annotations

import cv2
import numpy as np

from mobilesam_ros.core.settings import DepthSettings


def depth_range(
    depths: np.ndarray, in_core: np.ndarray | None, settings: DepthSettings
) -> tuple[float, float] | None:
    """[low, high] in metres from one mask's valid depths, or None when too few.

    `in_core` marks the depths inside the eroded mask (None: not eroded); a core with fewer than
    `min_points` depths leaves the whole mask to estimate the range.
    """
    core_depths = depths
    if in_core is not None:
        eroded_depths = depths[in_core]
        if eroded_depths.size >= settings.min_points:
            core_depths = eroded_depths
    if core_depths.size < settings.min_points:
        return None
    low, high = _percentiles(core_depths, settings.clip_percentile)
    return _extend_through(depths, low, high, settings.depth_gap)


def _percentiles(values: np.ndarray, percent: float) -> tuple[float, float]:
    """The `percent` and `100 - percent` percentiles, nearest rank (numpy's SIMD sort is faster
    here than np.partition or np.percentile)."""
    ordered = np.sort(values)
    offset = int((values.size - 1) * percent / 100.0)
    return float(ordered[offset]), float(ordered[values.size - 1 - offset])


def _extend_through(depths: np.ndarray, low: float, high: float, gap: float) -> tuple[float, float]:
    """[low, high] widened over the depths beyond it that continue without a gap over `gap`."""
    lowest, highest, _, _ = cv2.minMaxLoc(depths)
    # A side whose depths all lie within `gap` of its end has no gap: it reaches the extreme
    # without sorting.
    if low - lowest > gap:
        lowest = _reach(np.sort(depths[depths < low])[::-1], low, gap)
    if highest - high > gap:
        highest = _reach(np.sort(depths[depths > high]), high, gap)
    return lowest, highest


def _reach(beyond: np.ndarray, start: float, gap: float) -> float:
    """The last of `beyond` (sorted away from start) reached from start in steps of <= gap."""
    if beyond.size == 0 or abs(float(beyond[0]) - start) > gap:
        return start
    jumps = np.flatnonzero(np.abs(beyond[1:] - beyond[:-1]) > gap)
    return float(beyond[jumps[0]] if jumps.size else beyond[-1])
