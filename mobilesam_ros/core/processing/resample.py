"""Pillow's bilinear shrink as a few matrix products, for sizes whose ratio repeats.

`Image.resize(size, Image.BILINEAR)` filters each axis with a triangle as wide as the scale
(antialiased). Where an axis's input and output sizes have a short ratio P/Q (1920 -> 1024 is
15/8), every P input pixels give Q outputs with the same weights: a pass is a product of each
block with one (P + neighbours, Q) matrix, plus a small product for the blocks at the image
borders, where Pillow clips and renormalizes the window. numpy's matrix products and ufuncs
release the GIL, so row bands run in parallel.

The weights are Pillow's own fixed-point ones (`precompute_coeffs` and `normalize_coeffs_8bpc`
in libImaging/Resample.c), applied in float32. Pillow rounds its horizontal pass to 8 bits
before the vertical one; this module does not: at most half a grey level apart before the final
rounding, the result is at most 1 grey level from Pillow's in about 10-18 % of the values
(tests). Rounding in between would not make it exact: float32 cannot tell which way Pillow's
exact sum rounds within 1e-5 of k + 0.5, where the weights' rational ratios put 1-3 % of the
sums. Plain rounding then reached 2 grey levels; keeping those ties at k + 0.5 held 1 grey level
in 1-3 % of the values, for four extra passes costing a quarter of the shrink's time. Unrounded,
the passes commute, so the vertical one runs first: over contiguous rows it is the cheaper pass
per pixel, and the horizontal one then has half as many rows.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from mobilesam_ros.core.processing.bands import map_row_bands

# A block's dense (P, Q) product does P * Q multiply-adds where the filter needs about 2P + Q,
# while Pillow's work per pixel stays about the same: measured against Pillow (both in two row
# bands), 45/32 (1440x1080 -> 1024x768) is 10-20 % faster, 47/32 to 63/32 are 10-30 % slower,
# 63/16 and 63/4 are 35-50 % faster.
MAX_PERIOD = 64
MAX_BLOCK_WEIGHTS = 45 * 32
# Pillow's fixed-point weights: 22 fractional bits (PRECISION_BITS in Resample.c).
_PRECISION_BITS = 22


def pillow_bilinear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bilinear weights for resizing an axis of `in_size` pixels to `out_size`.

    Returns (first, weights): output i is sum_t weights[i, t] * input[first[i] + t] / 2**22, the
    weights as integers (in float64) equal to Pillow's for 8-bit images: each step repeats
    Pillow's double arithmetic in the same order."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the triangle reaches 1 pixel, stretched by the scale
    taps = np.arange(math.ceil(support) * 2 + 1)
    centers = (np.arange(out_size) + 0.5) * scale
    # C's (int) cast truncates; the clamp at 0 makes truncation and floor agree below 0.
    first = np.maximum(np.trunc(centers - support + 0.5), 0).astype(np.int64)
    last = np.minimum(np.trunc(centers + support + 0.5), in_size).astype(np.int64)
    distance = ((taps + first[:, None]) - centers[:, None] + 0.5) * (1.0 / filter_scale)
    weights = np.maximum(1.0 - np.abs(distance), 0.0)
    weights[taps >= (last - first)[:, None]] = 0.0
    total = np.cumsum(weights, axis=1)[:, -1:]  # summed left to right, as the C loop does
    np.divide(weights, total, out=weights, where=total != 0)
    return first, np.trunc(0.5 + weights * (1 << _PRECISION_BITS))


@dataclass(frozen=True)
class _Taps:
    """Inputs of a neighbouring block that reach into a block's outputs [q0, q1): input
    `offsets[i]` of that block with weights `weights[i]` (q1 - q0,) float32."""

    offsets: tuple[int, ...]
    q0: int
    q1: int
    weights: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class _BorderBlock:
    """A block whose weights differ from the repeating ones (see `axis_plan`)."""

    block: int
    start: int  # its inputs [start, stop)
    stop: int
    weights: np.ndarray  # (stop - start, Q) float32


@dataclass(frozen=True)
class AxisPlan:
    """One axis's filter as blocks: each `period` inputs give `outputs` outputs. Block b's
    outputs read inputs [period * b - before, period * b + period + after) with the weights
    `window`, the same for every block but `borders`."""

    period: int  # P
    outputs: int  # Q
    blocks: int
    before: int
    after: int
    window: np.ndarray  # (before + P + after, Q) float32
    window_t: np.ndarray  # its transpose, contiguous (for the vertical pass)
    previous: _Taps | None  # inputs of block b - 1 that block b reads
    following: _Taps | None  # inputs of block b + 1 that block b reads
    inner: tuple[int, int]  # the blocks [b0, b1) whose windows lie inside the image
    borders: tuple[_BorderBlock, ...]  # include every block outside `inner`

    @property
    def main(self) -> np.ndarray:
        """(P, Q): the weights of a block's own inputs."""
        return self.window[self.before : self.before + self.period]


def _taps(rows: np.ndarray, offsets: range) -> _Taps | None:
    """The weights `rows` (inputs of the neighbouring block at `offsets`, Q) as taps."""
    used = np.flatnonzero(rows.any(axis=0))
    if used.size == 0:
        return None
    q0, q1 = int(used[0]), int(used[-1]) + 1
    kept = [(offset, row[q0:q1]) for offset, row in zip(offsets, rows, strict=True) if row.any()]
    return _Taps(
        tuple(offset for offset, _ in kept), q0, q1, tuple(w.astype(np.float32) for _, w in kept)
    )


@lru_cache(maxsize=32)
def axis_plan(in_size: int, out_size: int) -> AxisPlan | None:
    """The block form of Pillow's shrink of one axis, or None where the ratio has no short
    period (or the axis grows)."""
    if out_size > in_size or out_size < 1:
        return None
    divisor = math.gcd(in_size, out_size)
    period, outputs = in_size // divisor, out_size // divisor
    if period > MAX_PERIOD or period * outputs > MAX_BLOCK_WEIGHTS:
        return None
    blocks = out_size // outputs
    if out_size == in_size:  # Pillow skips the pass; the identity keeps one code path
        first = np.arange(in_size)
        weights = np.full((in_size, 1), float(1 << _PRECISION_BITS))
    else:
        first, weights = pillow_bilinear_weights(in_size, out_size)
    # Each output's taps relative to the start of its block.
    output_block, output_q = np.divmod(np.arange(out_size), outputs)
    positions = (first - output_block * period)[:, None] + np.arange(weights.shape[1])
    used = weights > 0
    before = max(0, -int(positions[used].min()))
    after = max(0, int(positions[used].max()) - period + 1)
    if before > period or after > period:
        return None
    dense = np.zeros((blocks, before + period + after, outputs))
    count = used.sum(axis=1)
    dense[
        np.repeat(output_block, count), (positions + before)[used], np.repeat(output_q, count)
    ] = weights[used] / (1 << _PRECISION_BITS)
    window = dense[blocks // 2]
    # Blocks whose window leaves the image or whose weights differ (clipped at the border, or
    # float rounding of an inexact scale) are computed on their own.
    inner = (
        math.ceil(before / period),
        min(blocks, (in_size - period - after) // period + 1),
    )
    fits = (np.arange(blocks) >= inner[0]) & (np.arange(blocks) < inner[1])
    irregular = np.flatnonzero(~fits | np.any(dense != window, axis=(1, 2)))
    if irregular.size > 4:  # not periodic after all
        return None
    borders = []
    for block in irregular.tolist():
        start = max(block * period - before, 0)
        stop = min(block * period + period + after, in_size)
        offset = start - (block * period - before)
        weights_in_image = dense[block, offset : offset + stop - start].astype(np.float32)
        borders.append(_BorderBlock(block, start, stop, weights_in_image))
    window32 = window.astype(np.float32)
    return AxisPlan(
        period=period,
        outputs=outputs,
        blocks=blocks,
        before=before,
        after=after,
        window=window32,
        window_t=np.ascontiguousarray(window32.T),
        previous=_taps(window[:before], range(period - before, period)),
        following=_taps(window[before + period :], range(after)),
        inner=inner,
        borders=tuple(borders),
    )


# OpenBLAS runs a product on several threads above m * n * k = 65536 * 4; on threads that are
# already the row bands that only adds waiting (10 ms and more per product on a busy 2-core
# machine). Products are cut into batches below that size: numpy loops over them in C.
_BLAS_SERIAL_MNK = 65536 * 4


def _matmul_rows(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = a @ b for (m, k) `a` and (m, n) `out` with contiguous rows, in batches of rows."""
    m, k = a.shape
    rows = max(1, _BLAS_SERIAL_MNK // (k * b.shape[1]))
    whole = m // rows * rows
    if whole:
        np.matmul(
            a[:whole].reshape(-1, rows, k), b, out=out[:whole].reshape(-1, rows, out.shape[1])
        )
    if whole < m:
        np.matmul(a[whole:], b, out=out[whole:])


def _add_taps(
    taps: _Taps | None, source: np.ndarray, target: np.ndarray, scratch: np.ndarray, reach: int
) -> None:
    """Add the taps of each block's neighbour (`reach` -1: the previous block, +1: the next) into
    `target` (rows, blocks, Q) from `source` (rows, blocks, P); `scratch`: float32 (2, rows,
    blocks - 1). One 2-D operation per output and input: each touches a column every P or Q."""
    if taps is None:
        return
    into, read = (
        (slice(1, None), slice(None, -1)) if reach < 0 else (slice(None, -1), slice(1, None))
    )
    total, product = scratch
    for q in range(taps.q0, taps.q1):
        for index, (offset, weights) in enumerate(zip(taps.offsets, taps.weights, strict=True)):
            np.multiply(source[:, read, offset], weights[q - taps.q0], out=product)
            if index == 0:
                total, product = product, total
            else:
                np.add(total, product, out=total)
        column = target[:, into, q]
        np.add(column, total, out=column)


def _horizontal(
    plan: AxisPlan, source: np.ndarray, target: np.ndarray, scratch: np.ndarray
) -> None:
    """Filter the rows of `source` (rows, n_in) into `target` (rows, n_out), float32 and
    contiguous. `scratch`: float32 (2, rows, blocks - 1)."""
    period, outputs, blocks = plan.period, plan.outputs, plan.blocks
    rows = source.shape[0]
    _matmul_rows(source.reshape(-1, period), plan.main, target.reshape(-1, outputs))
    if blocks > 1:
        source_blocks = source.reshape(rows, blocks, period)
        target_blocks = target.reshape(rows, blocks, outputs)
        _add_taps(plan.previous, source_blocks, target_blocks, scratch, -1)
        _add_taps(plan.following, source_blocks, target_blocks, scratch, 1)
    for border in plan.borders:  # last: they replace what the repeating weights gave
        _matmul_rows(
            source[:, border.start : border.stop],
            border.weights,
            target[:, border.block * outputs : (border.block + 1) * outputs],
        )


def _strip_width(width: int, rows_times_depth: int) -> int:
    """Column strip width that keeps a (rows, depth) @ (depth, strip) product serial."""
    return max(1, min(width, _BLAS_SERIAL_MNK // rows_times_depth))


def _vertical(
    plan: AxisPlan, source: np.ndarray, source_row: int, target: np.ndarray, b0: int, b1: int
) -> None:
    """Filter the columns of `source` (contiguous, input rows from `source_row` on) into the
    output rows of blocks [b0, b1): `target` ((b1 - b0) * Q, width), contiguous."""
    period, outputs, width = plan.period, plan.outputs, source.shape[1]
    itemsize = source.itemsize
    # Blocks inside the image: one batched product over overlapping windows of rows per column
    # strip. Border blocks are then computed with their own weights.
    first, stop = max(b0, plan.inner[0]), min(b1, plan.inner[1])
    if first < stop:
        span = plan.window_t.shape[1]
        strip = _strip_width(width, outputs * span)
        top = period * first - plan.before - source_row
        rows = target[(first - b0) * outputs : (stop - b0) * outputs]
        for x0 in range(0, width, strip):
            x1 = min(x0 + strip, width)
            windows = np.lib.stride_tricks.as_strided(
                source[top:, x0:x1],
                shape=(stop - first, span, x1 - x0),
                strides=(period * width * itemsize, width * itemsize, itemsize),
                writeable=False,
            )
            out = rows[:, x0:x1].reshape(stop - first, outputs, x1 - x0)
            np.matmul(plan.window_t, windows, out=out)
    for border in plan.borders:
        if b0 <= border.block < b1:
            rows = source[border.start - source_row : border.stop - source_row]
            out = target[(border.block - b0) * outputs : (border.block - b0 + 1) * outputs]
            strip = _strip_width(width, outputs * rows.shape[0])
            for x0 in range(0, width, strip):
                np.matmul(border.weights.T, rows[:, x0 : x0 + strip], out=out[:, x0 : x0 + strip])


# finish(buffers, channel, rows, y0, y1): a channel's output rows [y0, y1) of one band.
_Finish = Callable[["_BandBuffers", int, np.ndarray, int, int], None]


class PeriodicShrink:
    """Pillow's bilinear shrink of (H, W, C) uint8 images of one size to another, in block form
    and in row bands. Keeps its buffers for the next frame; one caller at a time."""

    def __init__(self, rows: AxisPlan, columns: AxisPlan, in_hw: tuple[int, int]) -> None:
        self.rows, self.columns = rows, columns
        self.in_hw = in_hw
        self.out_hw = (rows.blocks * rows.outputs, columns.blocks * columns.outputs)
        # Per band and channel count. Whole bands at once: chunks of rows small enough to stay
        # in cache were faster on one thread but no faster with two bands (measured).
        self._buffers: dict[tuple[int, int, int], _BandBuffers] = {}

    @classmethod
    def for_sizes(cls, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> PeriodicShrink | None:
        """A shrink from `in_hw` to `out_hw`, or None where an axis has no short period."""
        rows, columns = axis_plan(in_hw[0], out_hw[0]), axis_plan(in_hw[1], out_hw[1])
        if rows is None or columns is None:
            return None
        return cls(rows, columns, in_hw)

    def _input_rows(self, b0: int, b1: int) -> tuple[int, int]:
        """The input rows that the output rows of row blocks [b0, b1) read."""
        plan = self.rows
        first = max(plan.period * b0 - plan.before, 0)
        return first, min(plan.period * b1 + plan.after, self.in_hw[0])

    def _band(
        self,
        image: np.ndarray,
        b0: int,
        b1: int,
        channels: Sequence[int],
        finish: _Finish,
        after: Callable[[_BandBuffers, int, int], None] | None,
    ) -> None:
        """Row blocks [b0, b1): `finish` for each of `channels` with its output rows (float32,
        unrounded, in a buffer the next channel reuses), then `after(buffers, y0, y1)`."""
        r0, r1 = self._input_rows(b0, b1)
        y0, y1 = b0 * self.rows.outputs, b1 * self.rows.outputs
        buffers = self._buffers.get((b0, b1, image.shape[2]))
        if buffers is None:
            buffers = _BandBuffers(
                r1 - r0, y1 - y0, self.in_hw[1], self.out_hw[1], self.columns.blocks, image.shape[2]
            )
            self._buffers[(b0, b1, image.shape[2])] = buffers
        cv2.split(image[r0:r1], buffers.pixels)
        for channel in channels:
            np.copyto(buffers.plane, buffers.pixels[channel])
            _vertical(self.rows, buffers.plane, r0, buffers.down, b0, b1)
            _horizontal(self.columns, buffers.down, buffers.result, buffers.scratch)
            finish(buffers, channel, buffers.result, y0, y1)
        if after is not None:
            after(buffers, y0, y1)

    def _run(
        self,
        image: np.ndarray,
        channels: Sequence[int],
        finish: _Finish,
        after: Callable[[_BandBuffers, int, int], None] | None = None,
    ) -> None:
        if image.ndim != 3 or image.shape[:2] != self.in_hw or image.dtype != np.uint8:
            raise ValueError(f"expected a {self.in_hw} uint8 image, got {image.shape}")

        def band(b0: int, b1: int) -> None:
            self._band(image, b0, b1, channels, finish, after)

        map_row_bands(band, self.rows.blocks, self.rows.outputs * self.out_hw[1])

    def resize(self, image: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Shrink `image` (H, W, C) uint8 into `out` (h, w, C) uint8."""
        channels = range(image.shape[2])
        # Rounded values lie in 0..255 (weights >= 0 summing to 1): the uint8 cast never clips.
        if not out.flags.c_contiguous:

            def into_channel(
                _: _BandBuffers, channel: int, rows: np.ndarray, y0: int, y1: int
            ) -> None:
                np.rint(rows, out=out[y0:y1, :, channel], casting="unsafe")

            self._run(image, channels, into_channel)
            return out

        def into_plane(
            buffers: _BandBuffers, channel: int, rows: np.ndarray, y0: int, y1: int
        ) -> None:
            np.rint(rows, out=buffers.out_planes()[channel], casting="unsafe")

        def interleave(buffers: _BandBuffers, y0: int, y1: int) -> None:
            # Interleaving whole rows in one call is several times faster than per channel.
            cv2.merge(buffers.out_planes(), dst=out[y0:y1])

        self._run(image, channels, into_plane, interleave)
        return out

    def each_channel(
        self,
        image: np.ndarray,
        channels: Sequence[int],
        finish: Callable[[int, np.ndarray, int, int], None],
    ) -> None:
        """`finish(index, rows, y0, y1)` for each of `channels` (`index` its place there) and each
        piece of rows: its output rows [y0, y1) as float32 whole grey levels, reused after the
        call. Row bands run in parallel; `finish` must write only its rows."""
        order = {channel: index for index, channel in enumerate(channels)}

        def rounded(_: _BandBuffers, channel: int, rows: np.ndarray, y0: int, y1: int) -> None:
            finish(order[channel], np.rint(rows, out=rows), y0, y1)

        self._run(image, channels, rounded)


class _BandBuffers:
    """The buffers of one row band, kept across frames."""

    def __init__(
        self, rows: int, out_rows: int, width: int, out_width: int, blocks: int, channels: int
    ) -> None:
        self.pixels = [np.empty((rows, width), np.uint8) for _ in range(channels)]
        self.plane = np.empty((rows, width), np.float32)
        self.down = np.empty((out_rows, width), np.float32)  # after the vertical pass
        self.scratch = np.empty((2, out_rows, max(blocks - 1, 1)), np.float32)
        self.result = np.empty((out_rows, out_width), np.float32)
        self._out_planes: list[np.ndarray] = []

    def out_planes(self) -> list[np.ndarray]:
        """uint8 planes of the band's output rows (`PeriodicShrink.resize` interleaves them)."""
        if not self._out_planes:
            self._out_planes = [np.empty_like(self.result, np.uint8) for _ in self.pixels]
        return self._out_planes


_idle_lock = threading.Lock()
# Idle shrinks for `shrink_like_pillow`'s next call, by size pair: only the last size's, as their
# buffers are tens of MiB for HD frames (about 24 MiB at 1920x1080).
_idle: dict[tuple[tuple[int, int], tuple[int, int]], PeriodicShrink] = {}
_IDLE_SIZES = 1


def shrink_like_pillow(image: np.ndarray, size_hw: tuple[int, int], out: np.ndarray) -> bool:
    """Shrink `image` (H, W, C) uint8 into `out` (h, w, C) uint8 as Pillow's bilinear resize
    does, within 1 grey level; False (nothing written) where a ratio has no short period.
    The last size pair's buffers are kept, so a stream of same-size frames allocates nothing."""
    key = (image.shape[:2], tuple(size_hw))
    with _idle_lock:
        shrink = _idle.pop(key, None)
    if shrink is None:
        shrink = PeriodicShrink.for_sizes(key[0], key[1])
        if shrink is None:
            return False
    shrink.resize(image, out)
    with _idle_lock:
        if key not in _idle and len(_idle) >= _IDLE_SIZES:
            _idle.pop(next(iter(_idle)))
        _idle[key] = shrink
    return True
