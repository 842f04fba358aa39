"""Row bands of one image worked on two threads (`core/processing/bands.py`)."""

from __future__ import annotations

import itertools
import multiprocessing
import sys

import numpy as np
import pytest

from mobilesam_ros.core.processing import bands
from mobilesam_ros.core.processing.bands import map_row_bands, row_bands


def test_row_bands_cover_the_rows_once():
    assert row_bands(10, 10) == [(0, 10)]  # small images stay in one band
    for rows in (480, 1079, 2):
        ranges = row_bands(rows, 10**6, bands=3)
        assert ranges[0][0] == 0 and ranges[-1][1] == rows
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert len(ranges) == min(3, rows)


def test_bands_run_in_parallel_in_order_and_raise():
    image = np.zeros((1000, 1000), np.uint8)

    def fill(y0: int, y1: int) -> int:
        image[y0:y1] = y0 // 7 + 1
        return y0

    starts = map_row_bands(fill, *image.shape, bands=2)
    assert starts == [0, 500] and image[0, 0] == 1 and image[-1, -1] == 500 // 7 + 1

    def fail_late(y0: int, y1: int) -> None:
        if y0:
            raise ValueError("band failed")

    with pytest.raises(ValueError, match="band failed"):
        map_row_bands(fail_late, *image.shape, bands=2)

    def nested(y0: int, y1: int) -> list[int]:  # a band that splits again runs serially
        return map_row_bands(lambda a, b: a, *image.shape, bands=2)

    assert map_row_bands(nested, *image.shape, bands=2) == [[0, 500], [0, 500]]


def _bands_in_child(queue) -> None:
    queue.put(map_row_bands(lambda y0, y1: y0, 1000, 1000, bands=2))


@pytest.mark.skipif(sys.platform != "linux", reason="fork is a POSIX start method")
def test_a_forked_child_starts_its_own_pool():
    map_row_bands(lambda y0, y1: y0, 1000, 1000, bands=2)  # the parent's pool exists
    assert bands._pool is not None
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_bands_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0, "the child hung or failed using the parent's pool"
    assert queue.get(timeout=5) == [0, 500]
