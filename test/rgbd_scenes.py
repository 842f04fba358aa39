"""Registered RGB-D test frames with known geometry, for core tests and tests of the node.

`rgbd_frame()` gives everything a test publisher needs: the color image (rgb8), the depth image
in either encoding, the CameraInfo fields, the boxes of the objects (as detection prompts) and
the expected 3D centroid of each object's visible surface, in the color camera's optical frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobilesam_ros.tools.rgbd_scene import DEFAULT_BOXES, RgbdScene, SceneBox, render_scene

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
