"""Row bands of one image worked on in parallel.

Pillow's resize, OpenCV's calls and numpy's large array loops release the GIL, so the per-frame
host work (resize, label image, overlay) splits into horizontal bands: one band on the calling
thread, the others on a small shared pool. On two cores two bands take a little over half the
time of one.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# More bands than two gains little: the node's other threads (encoder, publishers) share the
# cores, and each band re-reads a margin of rows.
BANDS = max(1, min(2, os.cpu_count() or 1))
# Below this many pixels a thread hand-off (tens of microseconds) costs more than it saves.
MIN_BAND_PIXELS = 150_000

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_inside_band = threading.local()  # set on the pool's thread while it runs a band


def _forget_pool_in_child() -> None:
    """A forked child has none of its parent's threads: it starts its own pool when needed."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(BANDS - 1, thread_name_prefix="row_band")
    return _pool


def row_bands(rows: int, width: int, bands: int = BANDS) -> list[tuple[int, int]]:
    """[y0, y1) row ranges that split `rows` rows of `width` pixels into equal bands, fewer
    when a band would hold less than MIN_BAND_PIXELS (one band for small images)."""
    count = max(1, min(bands, rows * max(width, 1) // MIN_BAND_PIXELS, rows))
    edges = [rows * index // count for index in range(count + 1)]
    return list(itertools.pairwise(edges))


def map_row_bands(
    work: Callable[[int, int], T], rows: int, width: int, bands: int = BANDS
) -> list[T]:
    """`work(y0, y1)` for each of `row_bands(rows, width)`, in parallel; results in band order.

    The first band runs on the calling thread. An exception of any band is raised here, after
    every band has finished (no band is left writing into a caller's buffer). Called from
    inside a band, it runs serially (the pool's thread would otherwise wait on itself).
    """
    ranges = row_bands(rows, width, bands)
    if len(ranges) == 1 or getattr(_inside_band, "active", False):
        return [work(y0, y1) for y0, y1 in ranges]
    pool = _shared_pool()
    futures = [pool.submit(_run_band, work, y0, y1) for y0, y1 in ranges[1:]]
    try:
        first = work(*ranges[0])
    finally:
        others = [future.exception() for future in futures]  # waits for each band
    for error in others:
        if error is not None:
            raise error
    return [first, *(future.result() for future in futures)]


def _run_band(work: Callable[[int, int], T], y0: int, y1: int) -> T:
    _inside_band.active = True
    try:
        return work(y0, y1)
    finally:
        _inside_band.active = False
