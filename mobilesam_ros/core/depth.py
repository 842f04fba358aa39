"""Instance masks lifted into 3D with a registered depth image (no ROS).

Frame: the color camera's optical frame (x right, y down, z forward), metres.

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
3. From the points: centroid (mean), axis-aligned box, oriented box (below), number of points.
   Fewer than `min_points` points: no 3D result for the instance, counted.

The oriented box: its third axis is the points' direction of least variance (PCA), the other two
are the sides of the least-area rectangle around the points projected along it (OpenCV's rotating
calipers). A box seen on one face gets that face's rectangle and a thickness near zero; for a box
seen on two faces the visible surface does not fix the orientation, and the box fits the points.

Depth of another size than the color image is used when both have the same aspect ratio: color
pixel (u, v) reads depth pixel (floor((u + 0.5) * sx), floor((v + 0.5) * sy)) with s = depth size
/ color size. Camera intrinsics of another size than the color image are scaled likewise
(`CameraModel.scaled_to`). Lens distortion is not modelled: use rectified images.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.image_codec import check_buffer_layout
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.settings import DepthSettings

# Counter names (the node adds them to its diagnostics). Per frame: every instance of the frame
# counts once under the frame's reason.
DEPTH_MISSING = "depth_missing"
CAMERA_INFO_MISSING = "camera_info_missing"
DEPTH_SIZE_MISMATCH = "depth_size_mismatch"
CAMERA_INFO_SIZE_MISMATCH = "camera_info_size_mismatch"
# Per instance.
TOO_FEW_DEPTH_POINTS = "too_few_depth_points"
EMPTY_MASK = "empty_mask"

# Points to which the oriented box's rectangle is fitted (_box_axes).
OBB_SAMPLE_POINTS = 512

# Crops lifted together share per-pixel arrays (depth, rays, masks, neighbour tests) of about
# 30 bytes a pixel at their peak (measured): groups of at most this many pixels bound that to
# about 15 MiB. A 640x480 frame's crops fit in one group unless they cover it 1.7 times over.
LIFT_GROUP_PIXELS = 1 << 19

# Metres per unit of each accepted depth encoding.
DEPTH_ENCODINGS = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics of an image of `width` x `height` pixels (pixel centers at integers)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InvalidInputError(f"camera {name} must be a positive number, got {value}")
        for name in ("cx", "cy"):
            if not np.isfinite(getattr(self, name)):
                raise InvalidInputError(f"camera {name} must be finite, got {getattr(self, name)}")
        if self.width <= 0 or self.height <= 0:
            raise InvalidInputError(f"camera size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> CameraModel:
        """From a row-major 3x3 intrinsic matrix (CameraInfo.k)."""
        if len(k) != 9:
            raise InvalidInputError(f"camera matrix k must have 9 values, got {len(k)}")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    def scaled_to(self, width: int, height: int) -> CameraModel:
        """These intrinsics for the same view resampled to width x height (same aspect ratio).

        Raises InvalidInputError when the aspect ratios differ by more than one pixel's rounding.
        """
        if (width, height) == (self.width, self.height):
            return self
        if not same_aspect(self.width, self.height, width, height):
            raise InvalidInputError(
                f"cannot scale intrinsics of {self.width}x{self.height} to {width}x{height}: "
                "aspect ratios differ"
            )
        sx, sy = width / self.width, height / self.height
        # Pixel centers at integers: continuous x maps to (x + 0.5) * s - 0.5.
        return CameraModel(
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            width,
            height,
        )


def same_aspect(width: int, height: int, other_width: int, other_height: int) -> bool:
    """True when other is width x height scaled, up to rounding of one side to whole pixels."""
    if min(width, height, other_width, other_height) <= 0:
        return False
    return abs(other_width * height - other_height * width) <= max(width, height)


@dataclass(frozen=True)
class DepthImage:
    """A depth image as received: `raw` (H, W) values (a view on the buffer) times `scale` = m."""

    raw: np.ndarray
    scale: float

    @property
    def height(self) -> int:
        return int(self.raw.shape[0])

    @property
    def width(self) -> int:
        return int(self.raw.shape[1])

    @classmethod
    def from_buffer(
        cls,
        data: bytes | bytearray | memoryview | np.ndarray,
        height: int,
        width: int,
        step: int,
        encoding: str,
        is_bigendian: bool = False,
    ) -> DepthImage:
        """A view on a sensor_msgs/Image buffer: 16UC1 (or mono16) in mm, 32FC1 in m."""
        if encoding not in DEPTH_ENCODINGS:
            raise InvalidInputError(
                f"depth encoding {encoding!r} is not supported; use one of "
                f"{', '.join(sorted(DEPTH_ENCODINGS))}"
            )
        itemsize = 4 if encoding == "32FC1" else 2
        buffer = np.frombuffer(data, dtype=np.uint8)
        check_buffer_layout(buffer.size, height, width, step, itemsize, "depth image")
        if step % itemsize:
            raise InvalidInputError(
                f"depth image step {step} is not a whole number of {encoding} pixels"
            )
        kind = "f4" if encoding == "32FC1" else "u2"
        dtype = np.dtype((">" if is_bigendian else "<") + kind)
        rows = buffer[: step * height].view(dtype).reshape(height, step // itemsize)
        return cls(rows[:, :width], DEPTH_ENCODINGS[encoding])

    @classmethod
    def from_metres(cls, metres: np.ndarray) -> DepthImage:
        """From an (H, W) float array in metres (no copy for float32)."""
        if metres.ndim != 2:
            raise InvalidInputError(f"depth must be (H, W), got shape {metres.shape}")
        return cls(np.asarray(metres, dtype=np.float32), 1.0)

    @classmethod
    def from_millimetres(cls, millimetres: np.ndarray) -> DepthImage:
        """From an (H, W) uint16 array in millimetres (0 = no depth)."""
        if millimetres.ndim != 2 or millimetres.dtype != np.uint16:
            raise InvalidInputError(
                f"depth in mm must be (H, W) uint16, got {millimetres.dtype} {millimetres.shape}"
            )
        return cls(millimetres, 0.001)


@dataclass(frozen=True, eq=False)
class _PixelSet:
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
    pixels: _PixelSet  # where in the color image each point is

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
    camera = camera.scaled_to(width, height)
    # Normalized ray coordinates of every image column and row, gathered per point.
    rays = (
        (np.arange(width, dtype=np.float32) - np.float32(camera.cx)) / np.float32(camera.fx),
        (np.arange(height, dtype=np.float32) - np.float32(camera.cy)) / np.float32(camera.fy),
    )

    crops: list[MaskCrop | None] = []
    for mask in masks:
        crop = mask if isinstance(mask, MaskCrop) else _crop_of(mask, (height, width))
        if crop is not None:
            h, w = crop.mask.shape
            if crop.x0 < 0 or crop.y0 < 0 or crop.y0 + h > height or crop.x0 + w > width:
                raise InvalidInputError(
                    f"mask crop {w}x{h} at ({crop.x0}, {crop.y0}) is outside the "
                    f"{width}x{height} image"
                )
        crops.append(None if crop is None or crop.empty else crop)
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


def _crop_of(mask: np.ndarray, image_size: tuple[int, int]) -> MaskCrop | None:
    if mask.shape != image_size:
        raise InvalidInputError(f"mask shape {mask.shape} is not the image size {image_size}")
    crop = MaskCrop.from_mask(mask)
    return None if crop.empty else crop


def _depth_crop(
    depth: DepthImage, x0: int, y0: int, out: np.ndarray, image_size: tuple[int, int]
) -> None:
    """Depth in metres (float32) at the color pixels of the crop at (x0, y0), into `out` (h, w)."""
    height, width = image_size
    h, w = out.shape
    if (depth.height, depth.width) == image_size:
        raw = depth.raw[y0 : y0 + h, x0 : x0 + w]
    else:
        rows = ((np.arange(y0, y0 + h) + 0.5) * (depth.height / height)).astype(np.intp)
        cols = ((np.arange(x0, x0 + w) + 0.5) * (depth.width / width)).astype(np.intp)
        np.minimum(rows, depth.height - 1, out=rows)
        np.minimum(cols, depth.width - 1, out=cols)
        raw = depth.raw[rows[:, None], cols[None, :]]
    if depth.scale != 1.0:
        np.multiply(raw, np.float32(depth.scale), out=out)  # in float32, as raw * 1.0f * scale
    else:
        np.copyto(out, raw)  # also native byte order for big-endian buffers


@functools.lru_cache(maxsize=8)
def _square_kernel(radius: int) -> np.ndarray:
    return np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)


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
    z = np.empty(spans.total, dtype=np.float32)
    in_mask = np.empty(spans.total, dtype=bool)
    ray_x = np.empty(spans.total, dtype=np.float32)  # (u - cx) / fx of each pixel
    ray_y = np.empty(spans.total, dtype=np.float32)  # (v - cy) / fy of each pixel
    for crop, start, end in spans.spans:
        h, w = shape = crop.mask.shape
        _depth_crop(depth, crop.x0, crop.y0, z[start:end].reshape(shape), image_size)
        np.copyto(in_mask[start:end].reshape(shape), crop.mask)
        ray_x[start:end].reshape(shape)[...] = rays[0][crop.x0 : crop.x0 + w]
        ray_y[start:end].reshape(shape)[...] = rays[1][crop.y0 : crop.y0 + h, None]

    # NaN compares False: dropped with zeros and out-of-range values.
    in_range = (z >= params.min_depth) & (z <= params.max_depth)
    valid = in_range & in_mask
    if params.flying_threshold > 0:
        # Upsampled depth repeats each value: look as far as one depth pixel reaches.
        reach = max(1, -(-image_size[1] // depth.width), -(-image_size[0] // depth.height))
        valid &= _not_flying(z, in_range, spans, params.flying_threshold, reach)
    # Indices of the valid pixels; every later step works on these. (flatnonzero + take:
    # numpy's boolean indexing is slower.)
    pixels = np.flatnonzero(valid)
    depths = z.take(pixels)
    bounds = np.searchsorted(pixels, spans.offsets).tolist()  # crop i: bounds[i]:bounds[i + 1]
    in_core = None
    if params.erode_px > 0:
        core = np.empty(spans.total, dtype=np.uint8)
        kernel = _square_kernel(params.erode_px)
        for crop, start, end in spans.spans:
            # The mask's 0/1 bytes eroded stay 0/1.
            cv2.erode(
                crop.mask.view(np.uint8),
                kernel,
                dst=core[start:end].reshape(crop.mask.shape),
                borderType=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
        in_core = core.view(bool).take(pixels)

    # Each crop's depth range (steps 1-2); an empty range drops its points.
    lows = np.full(len(crops), np.inf)
    highs = np.full(len(crops), -np.inf)
    for i, (start, end) in enumerate(itertools.pairwise(bounds)):
        valid_depths = depths[start:end]
        core_depths = valid_depths
        if in_core is not None:
            eroded_depths = valid_depths[in_core[start:end]]
            if eroded_depths.size >= params.min_points:
                core_depths = eroded_depths
        if core_depths.size < params.min_points:
            continue
        low, high = _percentiles(core_depths, params.clip_percentile)
        lows[i], highs[i] = _extend_through(valid_depths, low, high, params.depth_gap)
    counts = np.diff(bounds)
    inside = (depths >= np.repeat(lows, counts)) & (depths <= np.repeat(highs, counts))
    kept = pixels[inside]
    kept_bounds = np.searchsorted(kept, spans.offsets).tolist()
    sizes = np.diff(kept_bounds)
    too_few = np.flatnonzero((sizes > 0) & (sizes < params.min_points))
    if too_few.size:  # rare: drop those crops' points so each instance's span is its own
        for i in too_few.tolist():
            inside[bounds[i] : bounds[i + 1]] = False
        kept = pixels[inside]
        kept_bounds = np.searchsorted(kept, spans.offsets).tolist()
        sizes = np.diff(kept_bounds)
    xyz = np.empty((3, kept.size), dtype=np.float32)
    xyz[2] = depths[inside]
    np.multiply(ray_x.take(kept), xyz[2], out=xyz[0])
    np.multiply(ray_y.take(kept), xyz[2], out=xyz[1])

    lifted = [i for i in range(len(crops)) if sizes[i] > 0]
    pixel_sets = [
        _PixelSet(
            kept[kept_bounds[i] : kept_bounds[i + 1]],
            int(spans.offsets[i]),
            crops[i].x0,
            crops[i].y0,
            crops[i].mask.shape[1],
        )
        for i in lifted
    ]
    instances: list[Instance3D | None] = [None] * len(crops)
    if lifted:
        starts = [kept_bounds[i] for i in lifted]
        for i, instance in zip(lifted, _describe_all(xyz, starts, pixel_sets), strict=True):
            instances[i] = instance
    return instances


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


def _describe_all(
    xyz: np.ndarray, starts: list[int], pixel_sets: list[_PixelSet]
) -> list[Instance3D]:
    """Step 3 for instances whose points are consecutive spans of (3, N) `xyz` (span i from
    starts[i] to the next start or the end). Sums, minima and maxima run once over all spans
    (`reduceat`); only the oriented boxes' axes are fitted one instance at a time."""
    ends = [*starts[1:], xyz.shape[1]]
    sizes = np.subtract(ends, starts)
    centroids = np.add.reduceat(xyz, starts, axis=1, dtype=np.float64) / sizes
    lows = np.minimum.reduceat(xyz, starts, axis=1).astype(np.float64)
    highs = np.maximum.reduceat(xyz, starts, axis=1).astype(np.float64)
    in_box = np.empty_like(xyz)  # the points in their box's axes
    all_axes = []
    for start, end in zip(starts, ends, strict=True):
        axes = _box_axes(xyz[:, start:end])
        np.matmul(axes.T.astype(np.float32), xyz[:, start:end], out=in_box[:, start:end])
        all_axes.append(axes)
    box_lows = np.minimum.reduceat(in_box, starts, axis=1).astype(np.float64)
    box_highs = np.maximum.reduceat(in_box, starts, axis=1).astype(np.float64)
    # (K, 3) rows, one per instance, computed for all instances at once.
    axes_stack = np.array(all_axes)
    obb_centers = np.einsum("kij,jk->ki", axes_stack, (box_lows + box_highs) / 2.0)
    return [
        Instance3D(
            centroid=centroid,
            aabb_center=aabb_center,
            aabb_size=aabb_size,
            obb_center=obb_center,
            obb_size=obb_size,
            obb_axes=axes,
            xyz=xyz[:, start:end],
            pixels=pixels,
        )
        for (
            centroid,
            aabb_center,
            aabb_size,
            obb_center,
            obb_size,
            axes,
            start,
            end,
            pixels,
        ) in zip(
            centroids.T,
            ((lows + highs) / 2.0).T,
            (highs - lows).T,
            obb_centers,
            (box_highs - box_lows).T,
            all_axes,
            starts,
            ends,
            pixel_sets,
            strict=True,
        )
    ]


def _box_axes(xyz: np.ndarray) -> np.ndarray:
    """The oriented box's axes (3, 3 columns, right-handed; see the module doc), fitted to at
    most OBB_SAMPLE_POINTS evenly spread points of (3, N) `xyz`. The box's extents along them
    are measured on all points (`_describe_all`)."""
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
