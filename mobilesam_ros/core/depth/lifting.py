"""Instance masks lifted into 3D points and boxes with a registered depth image.

Per instance, `lift_instances` works inside the mask's bounding box only:
0. Flying pixels are dropped: pixels with a valid neighbour more than `flying_threshold` nearer
   and one more than `flying_threshold` farther, i.e. with a depth between two surfaces, as
   sensors report at depth edges (3x3 neighbours, wider where depth is upsampled to the color
   size). Surfaces steeper than that per pixel go as well: at 2 m and fx = 525 px, 5 cm per pixel
   is a surface seen at about 80 degrees from its normal.
1. The mask is eroded by `erode_px` pixels; the valid depths (finite, inside [min_depth,
   max_depth]) of this core give the object's depth range: its percentiles `clip_percentile` and
   `100 - clip_percentile`. Eroding keeps edge bleed (the background's depth at the rim of a
   mask that overlaps it) out of this estimate; the percentiles keep out what erosion misses.
   Thin masks whose core has fewer than `min_points` valid pixels use the whole mask.
2. That range is extended over the whole mask's valid depths (sorted, beyond each end) for as
   long as they continue without a gap over `depth_gap` metres: surfaces that recede
   continuously, such as a side face seen at a grazing angle, stay whole; background behind a
   gap does not come in. The points are the mask's pixels with valid depth inside the range. The
   rim is not eroded away, so extents are not biased short by the erosion margin.
3. From the points: centroid (mean), axis-aligned box, oriented box (`boxes3d`), number of
   points. Fewer than `min_points` points: no 3D result for the instance, counted.

Color images of another size than the depth image or the camera intrinsics are lifted where the
aspect ratios agree (`DepthImage.metres_at_crop`, `CameraModel.scaled_to`).
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mobilesam_ros.core.depth.boxes3d import fit_boxes
from mobilesam_ros.core.depth.camera import CameraModel, same_aspect
from mobilesam_ros.core.depth.depth_range import depth_range
from mobilesam_ros.core.depth.images import DepthImage
from mobilesam_ros.core.depth.instances import (
    CAMERA_INFO_MISSING,
    CAMERA_INFO_SIZE_MISMATCH,
    DEPTH_MISSING,
    DEPTH_SIZE_MISMATCH,
    EMPTY_MASK,
    TOO_FEW_DEPTH_POINTS,
    Instance3D,
    LiftResult,
    PixelSet,
)
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.settings import DepthSettings

# Crops lifted together share per-pixel arrays (depth, rays, masks, neighbour tests) of about
# 30 bytes a pixel at their peak (measured): groups of at most this many pixels bound that to
# about 15 MiB. A 640x480 frame's crops fit in one group unless they cover it 1.7 times over.
LIFT_GROUP_PIXELS = 1 << 19


def lift_instances(
    masks: Sequence[np.ndarray | MaskCrop],
    depth: DepthImage | None,
    camera: CameraModel | None,
    params: DepthSettings | None = None,
    image_size: tuple[int, int] | None = None,
) -> LiftResult:
    """3D centroid, boxes and points of each mask (full (H, W) bool masks or `MaskCrop`s).

    `image_size` (H, W) of the color image is needed when there are no full-frame masks. Without
    depth or camera, or with sizes that no scale relates, every instance is None and counted.
    """
    params = params or DepthSettings()
    count = len(masks)
    if count == 0:
        return LiftResult([])
    if image_size is None:
        full = next((m for m in masks if not isinstance(m, MaskCrop)), None)
        if full is None:
            raise InvalidInputError("image_size is needed when every mask is a MaskCrop")
        image_size = (int(full.shape[0]), int(full.shape[1]))
    height, width = image_size

    def none_for_all(reason: str) -> LiftResult:
        return LiftResult([None] * count, Counter({reason: count}))

    if depth is None:
        return none_for_all(DEPTH_MISSING)
    if camera is None:
        return none_for_all(CAMERA_INFO_MISSING)
    if not same_aspect(width, height, depth.width, depth.height):
        return none_for_all(DEPTH_SIZE_MISMATCH)
    if not same_aspect(camera.width, camera.height, width, height):
        return none_for_all(CAMERA_INFO_SIZE_MISMATCH)
    rays = camera.scaled_to(width, height).rays()

    crops = [_nonempty_crop(mask, (height, width)) for mask in masks]
    lifted = iter(
        instance
        for group in _groups_by_area([crop for crop in crops if crop is not None])
        for instance in _lift_crops(group, depth, rays, params, (height, width))
    )
    result = LiftResult([])
    for crop in crops:
        instance = None if crop is None else next(lifted)
        if instance is None:
            result.counts[EMPTY_MASK if crop is None else TOO_FEW_DEPTH_POINTS] += 1
        result.instances.append(instance)
    return result


def _nonempty_crop(mask: np.ndarray | MaskCrop, image_size: tuple[int, int]) -> MaskCrop | None:
    """The mask's crop, checked to lie inside the image; None for an empty mask."""
    if isinstance(mask, MaskCrop):
        crop = mask
    elif mask.shape != image_size:
        raise InvalidInputError(f"mask shape {mask.shape} is not the image size {image_size}")
    else:
        crop = MaskCrop.from_mask(mask)
    height, width = image_size
    h, w = crop.mask.shape
    if crop.x0 < 0 or crop.y0 < 0 or crop.y0 + h > height or crop.x0 + w > width:
        raise InvalidInputError(
            f"mask crop {w}x{h} at ({crop.x0}, {crop.y0}) is outside the {width}x{height} image"
        )
    return None if crop.empty else crop


def _groups_by_area(crops: list[MaskCrop]) -> list[list[MaskCrop]]:
    """Consecutive crops in groups of at most LIFT_GROUP_PIXELS pixels (a larger crop alone),
    which bounds the memory of the per-pixel arrays that a group shares."""
    groups: list[list[MaskCrop]] = []
    area = LIFT_GROUP_PIXELS
    for crop in crops:
        if area + crop.mask.size > LIFT_GROUP_PIXELS:
            groups.append([])
            area = 0
        groups[-1].append(crop)
        area += crop.mask.size
    return groups


class _CropSpans:
    """Per-pixel arrays of several crops laid end to end: crop i's pixels, row-major, are
    [offsets[i], offsets[i + 1]). Element-wise steps run once over all crops; only the steps
    that look at neighbours (erosion, dilation) run per crop, on its (h, w) view."""

    def __init__(self, crops: Sequence[MaskCrop]) -> None:
        self.offsets = np.zeros(len(crops) + 1, dtype=np.intp)
        np.cumsum([crop.mask.size for crop in crops], out=self.offsets[1:])
        self.total = int(self.offsets[-1])
        # (crop, start, end) of each crop, for the loops that work per crop.
        self.spans = list(
            zip(crops, self.offsets[:-1].tolist(), self.offsets[1:].tolist(), strict=True)
        )


@dataclass(frozen=True)
class _CropPixels:
    """Every crop pixel, in the layout of `_CropSpans`."""

    depth: np.ndarray  # (total,) float32 metres
    in_mask: np.ndarray  # (total,) bool
    ray_x: np.ndarray  # (total,) float32 (u - cx) / fx
    ray_y: np.ndarray  # (total,) float32 (v - cy) / fy


@dataclass(frozen=True)
class _PixelDepths:
    """Some of the crop pixels (ascending indices into `_CropPixels`) and their depths."""

    index: np.ndarray  # (M,) intp
    depth: np.ndarray  # (M,) float32 metres
    bounds: list[int]  # crop i's pixels: index[bounds[i] : bounds[i + 1]]

    @classmethod
    def of(cls, index: np.ndarray, depth: np.ndarray, offsets: np.ndarray) -> _PixelDepths:
        return cls(index, depth, np.searchsorted(index, offsets).tolist())


def _lift_crops(
    crops: Sequence[MaskCrop],
    depth: DepthImage,
    rays: tuple[np.ndarray, np.ndarray],
    params: DepthSettings,
    image_size: tuple[int, int],
) -> list[Instance3D | None]:
    """Steps 0-3 of the module doc for non-empty crops: each one's Instance3D or None.

    The crops' pixels share flat arrays (`_CropSpans`), so each element-wise step is one numpy
    call for all instances instead of one per instance: at 10 instances of a few thousand
    pixels, per-call overhead was about half of the time.
    """
    spans = _CropSpans(crops)
    pixels = _gather_pixels(spans, depth, rays, image_size)
    valid = _valid_pixels(pixels, spans, params, depth.upsampling_reach(image_size))
    in_core = _in_eroded_core(spans, valid.index, params.erode_px)
    lows, highs = _depth_ranges(valid, in_core, params)
    points = _points_in_ranges(valid, lows, highs, spans.offsets, params.min_points)
    return _instances(crops, spans, points, _positions(points, pixels))


def _gather_pixels(
    spans: _CropSpans,
    depth: DepthImage,
    rays: tuple[np.ndarray, np.ndarray],
    image_size: tuple[int, int],
) -> _CropPixels:
    """Depth in metres, mask bit and ray of every crop pixel."""
    pixels = _CropPixels(
        depth=np.empty(spans.total, dtype=np.float32),
        in_mask=np.empty(spans.total, dtype=bool),
        ray_x=np.empty(spans.total, dtype=np.float32),
        ray_y=np.empty(spans.total, dtype=np.float32),
    )
    for crop, start, end in spans.spans:
        h, w = shape = crop.mask.shape
        depth.metres_at_crop(crop.x0, crop.y0, pixels.depth[start:end].reshape(shape), image_size)
        np.copyto(pixels.in_mask[start:end].reshape(shape), crop.mask)
        pixels.ray_x[start:end].reshape(shape)[...] = rays[0][crop.x0 : crop.x0 + w]
        pixels.ray_y[start:end].reshape(shape)[...] = rays[1][crop.y0 : crop.y0 + h, None]
    return pixels


def _valid_pixels(
    pixels: _CropPixels, spans: _CropSpans, params: DepthSettings, reach: int
) -> _PixelDepths:
    """Mask pixels with a depth inside [min_depth, max_depth] that are not flying (step 0);
    `reach`: how far the flying-pixel test looks, in color pixels."""
    # NaN compares False: dropped with zeros and out-of-range values.
    in_range = (pixels.depth >= params.min_depth) & (pixels.depth <= params.max_depth)
    valid = in_range & pixels.in_mask
    if params.flying_threshold > 0:
        valid &= _not_flying(pixels.depth, in_range, spans, params.flying_threshold, reach)
    # Every later step works on these indices (flatnonzero + take: numpy's boolean indexing is
    # slower).
    index = np.flatnonzero(valid)
    return _PixelDepths.of(index, pixels.depth.take(index), spans.offsets)


def _not_flying(
    z: np.ndarray, in_range: np.ndarray, spans: _CropSpans, threshold: float, reach: int
) -> np.ndarray:
    """False at flying pixels: a neighbour (within `reach`, inside the crop) nearer and one
    farther by more than threshold. (Also False at NaN depths, which `in_range` drops.)"""
    kernel = _square_kernel(reach)
    usable = in_range.view(np.uint8)
    # Unusable pixels as +inf for the nearest neighbour and 0 for the farthest, so that neither
    # picks them (OpenCV's masked copies: several times faster than np.where here).
    nearest_input = np.full_like(z, np.inf)
    cv2.copyTo(z, usable, nearest_input)
    farthest_input = cv2.copyTo(z, usable)  # a new array is zero-filled
    nearer = np.empty_like(z)
    farther = np.empty_like(z)
    for crop, start, end in spans.spans:
        shape = crop.mask.shape
        cv2.erode(
            nearest_input[start:end].reshape(shape), kernel, dst=nearer[start:end].reshape(shape)
        )
        cv2.dilate(
            farthest_input[start:end].reshape(shape), kernel, dst=farther[start:end].reshape(shape)
        )
    return (z - nearer <= threshold) | (farther - z <= threshold)


def _in_eroded_core(spans: _CropSpans, index: np.ndarray, erode_px: int) -> np.ndarray | None:
    """Whether each pixel of `index` lies in its mask eroded by `erode_px` (None: no erosion)."""
    if erode_px <= 0:
        return None
    core = np.empty(spans.total, dtype=np.uint8)
    kernel = _square_kernel(erode_px)
    for crop, start, end in spans.spans:
        # The mask's 0/1 bytes eroded stay 0/1.
        cv2.erode(
            crop.mask.view(np.uint8),
            kernel,
            dst=core[start:end].reshape(crop.mask.shape),
            borderType=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return core.view(bool).take(index)


def _depth_ranges(
    valid: _PixelDepths, in_core: np.ndarray | None, params: DepthSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Each crop's depth range (steps 1-2): lows, highs; [inf, -inf], empty, where too few."""
    lows = np.full(len(valid.bounds) - 1, np.inf)
    highs = np.full(len(valid.bounds) - 1, -np.inf)
    for i, (start, end) in enumerate(itertools.pairwise(valid.bounds)):
        found = depth_range(
            valid.depth[start:end], None if in_core is None else in_core[start:end], params
        )
        if found is not None:
            lows[i], highs[i] = found
    return lows, highs


def _points_in_ranges(
    valid: _PixelDepths, lows: np.ndarray, highs: np.ndarray, offsets: np.ndarray, min_points: int
) -> _PixelDepths:
    """The valid pixels inside their crop's depth range; none of a crop left with fewer than
    `min_points`."""
    counts = np.diff(valid.bounds)
    inside = (valid.depth >= np.repeat(lows, counts)) & (valid.depth <= np.repeat(highs, counts))
    points = _PixelDepths.of(valid.index[inside], valid.depth[inside], offsets)
    sizes = np.diff(points.bounds)
    too_few = np.flatnonzero((sizes > 0) & (sizes < min_points))
    if too_few.size == 0:
        return points
    # Rare. Those crops get no instance, and their points go: an instance's points run up to
    # the next instance's start (`fit_boxes`), so they must not hand theirs to a neighbour.
    for i in too_few.tolist():
        inside[valid.bounds[i] : valid.bounds[i + 1]] = False
    return _PixelDepths.of(valid.index[inside], valid.depth[inside], offsets)


def _positions(points: _PixelDepths, pixels: _CropPixels) -> np.ndarray:
    """(3, N) float32 x, y, z of the points: each pixel's ray times its depth."""
    xyz = np.empty((3, points.index.size), dtype=np.float32)
    xyz[2] = points.depth
    np.multiply(pixels.ray_x.take(points.index), xyz[2], out=xyz[0])
    np.multiply(pixels.ray_y.take(points.index), xyz[2], out=xyz[1])
    return xyz


def _instances(
    crops: Sequence[MaskCrop], spans: _CropSpans, points: _PixelDepths, xyz: np.ndarray
) -> list[Instance3D | None]:
    """Step 3: an Instance3D for each crop with points (its span of `xyz`), else None."""
    instances: list[Instance3D | None] = [None] * len(crops)
    lifted = [i for i, (start, end) in enumerate(itertools.pairwise(points.bounds)) if end > start]
    if not lifted:
        return instances
    boxes = fit_boxes(xyz, [points.bounds[i] for i in lifted])
    for k, i in enumerate(lifted):
        start, end = points.bounds[i], points.bounds[i + 1]
        crop = crops[i]
        instances[i] = Instance3D(
            centroid=boxes.centroids[k],
            aabb_center=boxes.aabb_centers[k],
            aabb_size=boxes.aabb_sizes[k],
            obb_center=boxes.obb_centers[k],
            obb_size=boxes.obb_sizes[k],
            obb_axes=boxes.obb_axes[k],
            xyz=xyz[:, start:end],
            pixels=PixelSet(
                points.index[start:end],
                int(spans.offsets[i]),
                crop.x0,
                crop.y0,
                crop.mask.shape[1],
            ),
        )
    return instances


@functools.lru_cache(maxsize=8)
def _square_kernel(radius: int) -> np.ndarray:
    return np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
