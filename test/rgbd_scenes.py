"""Synthetic registered RGB-D frames with known geometry, for core tests, tests of the node and
the depth benchmark (benchmarks/bench_depth.py).

Boxes (any orientation) in front of a wall, rendered by ray casting through a pinhole camera:
color (RGB), depth in metres, one ground-truth mask per box, and the true visible surface of each
box (mean and extents of the points that the camera sees), against which lifting is measured.
Sensor faults can be added: holes (zero depth), flying pixels at depth edges, NaNs, and masks that
bleed a few pixels onto the background as segmentation masks do.

`rgbd_frame()` gives everything a test publisher needs: the color image (rgb8), the depth image
in either encoding, the CameraInfo fields, the boxes of the objects (as detection prompts) and
the expected 3D centroid of each object's visible surface, in the color camera's optical frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class SceneBox:
    """A box: center (m, camera optical frame), size (m), rotation about y then x (degrees)."""

    name: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw_deg: float = 0.0  # about the camera's y axis (down)
    pitch_deg: float = 0.0  # about the camera's x axis (right)
    color: tuple[int, int, int] = (200, 80, 40)  # RGB

    @property
    def rotation(self) -> np.ndarray:
        yaw, pitch = np.deg2rad(self.yaw_deg), np.deg2rad(self.pitch_deg)
        about_y = np.array(
            [[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]]
        )
        about_x = np.array(
            [[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]]
        )
        return about_x @ about_y


@dataclass
class RgbdScene:
    """One frame. expected_* are of each box's visible surface in the noise-free rendering."""

    width: int
    height: int
    k: tuple[float, ...]  # row-major 3x3 intrinsics of the color image (CameraInfo.k)
    color: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray  # (Hd, Wd) float32 metres, 0 or NaN where there is no depth
    masks: list[np.ndarray]  # (H, W) bool per box, with bleed when asked for
    names: list[str]
    pixel_boxes: list[tuple[int, int, int, int]]  # x_min, y_min, x_max, y_max of each true mask
    expected_centroids: np.ndarray  # (N, 3)
    expected_aabb_sizes: np.ndarray  # (N, 3)
    boxes: list[SceneBox] = field(default_factory=list)

    def depth_millimetres(self) -> np.ndarray:
        """The depth as 16UC1 millimetres (0 = no depth)."""
        metres = np.nan_to_num(self.depth, nan=0.0)
        return np.round(metres * 1000.0).astype(np.uint16)

    def camera_info_values(self) -> dict[str, object]:
        """Fields of a sensor_msgs/CameraInfo for the color image (no distortion)."""
        fx, _, cx, _, fy, cy, _, _, _ = self.k
        return {
            "width": self.width,
            "height": self.height,
            "distortion_model": "plumb_bob",
            "d": [0.0] * 5,
            "k": list(self.k),
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        }


def _ray_box_hits(directions: np.ndarray, box: SceneBox) -> np.ndarray:
    """Distance along each ray (direction with z = 1, so distance = depth z) to box; inf = miss."""
    rotation = box.rotation
    center = np.asarray(box.center, dtype=np.float64)
    half = np.asarray(box.size, dtype=np.float64) / 2.0
    origin_local = rotation.T @ (-center)  # camera origin in box coordinates
    dirs_local = directions @ rotation  # (P, 3): R^T d for each ray
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - origin_local) / dirs_local
        t2 = (half - origin_local) / dirs_local
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (t_near <= t_far) & (t_far > 0)
    return np.where(hit, t_near, np.inf)


def render_scene(
    boxes: Sequence[SceneBox],
    width: int = 640,
    height: int = 480,
    fx: float = 525.0,
    fy: float = 525.0,
    wall_depth: float = 3.0,
    depth_scale: float = 1.0,
    holes: float = 0.0,
    flying_pixels: bool = False,
    nan_holes: bool = False,
    mask_bleed_px: int = 0,
    seed: int = 0,
) -> RgbdScene:
    """Render `boxes` in front of a wall at `wall_depth` m (0: no wall).

    depth_scale: size of the depth image relative to the color image (same aspect ratio; depth is
    rendered for its own pixel grid). holes: share of each box's pixels whose depth is removed, in
    blobs. flying_pixels: pixels along each depth edge get a depth between the two sides.
    nan_holes: holes are NaN instead of 0. mask_bleed_px: masks are dilated by this many pixels.
    """
    rng = np.random.default_rng(seed)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    k = (fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0)

    def cast(w: int, h: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Pixel centers at integers; intrinsics scaled as CameraModel.scaled_to does.
        sfx, sfy = fx * scale, fy * scale
        scx, scy = (cx + 0.5) * scale - 0.5, (cy + 0.5) * scale - 0.5
        v, u = np.mgrid[0:h, 0:w]
        directions = np.stack(
            ((u.ravel() - scx) / sfx, (v.ravel() - scy) / sfy, np.ones(u.size)), axis=1
        )
        depth = np.full(u.size, wall_depth if wall_depth > 0 else np.inf)
        labels = np.zeros(u.size, dtype=np.int32)
        for index, box in enumerate(boxes, start=1):
            hits = _ray_box_hits(directions, box)
            closer = hits < depth
            depth[closer], labels[closer] = hits[closer], index
        depth = np.where(np.isfinite(depth), depth, 0.0)
        points = directions * depth[:, None]
        return depth.reshape(h, w), labels.reshape(h, w), points.reshape(h, w, 3)

    color_depth, labels, points = cast(width, height, 1.0)
    color = np.empty((height, width, 3), dtype=np.uint8)
    color[:] = (90, 90, 100)
    texture = rng.integers(-20, 21, size=(height, width, 1))
    for index, box in enumerate(boxes, start=1):
        color[labels == index] = box.color
    color = np.clip(color.astype(np.int32) + texture, 0, 255).astype(np.uint8)

    masks, pixel_boxes, centroids, sizes = [], [], [], []
    for index in range(1, len(boxes) + 1):
        truth = labels == index
        if not truth.any():
            raise ValueError(f"box {boxes[index - 1].name!r} is not visible")
        surface = points[truth]
        centroids.append(surface.mean(axis=0))
        sizes.append(surface.max(axis=0) - surface.min(axis=0))
        rows, cols = np.nonzero(truth)
        pixel_boxes.append((int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())))
        if mask_bleed_px > 0:
            kernel = np.ones((2 * mask_bleed_px + 1,) * 2, np.uint8)
            truth = cv2.dilate(truth.view(np.uint8), kernel).view(bool)
        masks.append(truth)

    if depth_scale != 1.0:
        depth_w, depth_h = round(width * depth_scale), round(height * depth_scale)
        depth, depth_labels, _ = cast(depth_w, depth_h, depth_w / width)
    else:
        depth, depth_labels = color_depth, labels
    depth = depth.astype(np.float32)

    if flying_pixels:
        # One pixel on each side of every depth edge takes a depth between the two sides.
        edges = np.abs(np.diff(depth, axis=1)) > 0.1
        rows, cols = np.nonzero(edges)
        mix = rng.uniform(0.2, 0.8, size=rows.size).astype(np.float32)
        between = depth[rows, cols] * mix + depth[rows, cols + 1] * (1 - mix)
        depth[rows, cols + rng.integers(0, 2, size=rows.size)] = between
    if holes > 0:
        missing = np.zeros(depth.shape, dtype=bool)
        for index in range(1, len(boxes) + 1):
            rows, cols = np.nonzero(depth_labels == index)
            if rows.size == 0:
                continue
            # Blobs of radius 3 at random pixels of the box until the share is reached.
            target = holes * rows.size
            while (missing & (depth_labels == index)).sum() < target:
                pick = rng.integers(rows.size)
                cv2.circle(missing.view(np.uint8), (int(cols[pick]), int(rows[pick])), 3, 1, -1)
        depth[missing] = np.nan if nan_holes else 0.0

    return RgbdScene(
        width=width,
        height=height,
        k=k,
        color=color,
        depth=depth,
        masks=masks,
        names=[box.name for box in boxes],
        pixel_boxes=pixel_boxes,
        expected_centroids=np.array(centroids),
        expected_aabb_sizes=np.array(sizes),
        boxes=list(boxes),
    )


# Three boxes at 1.2 to 1.8 m: facing the camera, turned 35 degrees, and a thin tilted panel.
DEFAULT_BOXES = (
    SceneBox("crate", (-0.35, 0.05, 1.2), (0.30, 0.20, 0.25), color=(200, 60, 40)),
    SceneBox("carton", (0.35, 0.0, 1.8), (0.30, 0.25, 0.20), yaw_deg=35.0, color=(60, 180, 70)),
    SceneBox("panel", (0.0, -0.3, 1.5), (0.40, 0.25, 0.01), pitch_deg=20.0, color=(50, 90, 210)),
)


def grid_boxes(count: int, seed: int = 0) -> list[SceneBox]:
    """`count` boxes of 0.10 to 0.25 m at 1 to 2.5 m, laid out on a grid so none hides another."""
    rng = np.random.default_rng(seed)
    columns = int(np.ceil(np.sqrt(count * 4 / 3)))
    rows = int(np.ceil(count / columns))
    boxes = []
    for index in range(count):
        row, column = divmod(index, columns)
        depth = float(rng.uniform(1.0, 2.5))
        # Cell centers spread over the middle 80% of the view at that depth.
        x = ((column + 0.5) / columns - 0.5) * 0.8 * depth * 640 / 525
        y = ((row + 0.5) / rows - 0.5) * 0.8 * depth * 480 / 525
        boxes.append(
            SceneBox(
                f"box{index}",
                (x, y, depth),
                tuple(float(s) for s in rng.uniform(0.10, 0.25, size=3)),  # type: ignore[arg-type]
                yaw_deg=float(rng.uniform(-40, 40)),
                color=tuple(int(c) for c in rng.integers(40, 230, size=3)),  # type: ignore[arg-type]
            )
        )
    return boxes


# Only the front faces are visible (no side seen at a grazing angle): used where depth has half
# the color resolution, which loses about one depth pixel at the far end of a grazing side face.
FACING_BOXES = (
    SceneBox("crate", (0.0, 0.0, 1.2), (0.30, 0.20, 0.25), color=(200, 60, 40)),
    DEFAULT_BOXES[1],
    DEFAULT_BOXES[2],
)


@dataclass
class RgbdFrame:
    """One frame as a camera driver would publish it."""

    color_rgb8: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # 16UC1: (Hd, Wd) uint16 mm; 32FC1: (Hd, Wd) float32 m
    depth_encoding: str  # "16UC1" or "32FC1"
    camera_info: dict[str, object]  # CameraInfo fields of the color camera
    names: list[str]  # object names: use as detection class ids
    pixel_boxes: list[tuple[int, int, int, int]]  # x_min, y_min, x_max, y_max per object
    expected_centroids: np.ndarray  # (N, 3) metres, optical frame of the color camera
    scene: RgbdScene


def rgbd_frame(
    depth_encoding: str = "16UC1", depth_scale: float = 1.0, faults: bool = True, seed: int = 0
) -> RgbdFrame:
    """640x480 frame of three boxes at 1.2 to 1.8 m in front of a wall at 3 m.

    faults: 10% holes in each object's depth, flying pixels at depth edges (the expected centroids
    are of the noise-free surface). depth_scale 0.5: a 320x240 depth image registered to the
    color image (CameraInfo stays the color camera's).
    """
    if depth_encoding not in ("16UC1", "32FC1"):
        raise ValueError(f"depth_encoding must be 16UC1 or 32FC1, got {depth_encoding!r}")
    scene = render_scene(
        DEFAULT_BOXES if depth_scale == 1.0 else FACING_BOXES,
        depth_scale=depth_scale,
        holes=0.1 if faults else 0.0,
        flying_pixels=faults,
        seed=seed,
    )
    depth = scene.depth_millimetres() if depth_encoding == "16UC1" else scene.depth
    return RgbdFrame(
        color_rgb8=scene.color,
        depth=depth,
        depth_encoding=depth_encoding,
        camera_info=scene.camera_info_values(),
        names=list(scene.names),
        pixel_boxes=list(scene.pixel_boxes),
        expected_centroids=scene.expected_centroids,
        scene=scene,
    )
