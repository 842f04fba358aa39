"""Lifting masks into 3D with registered depth (core/depth/) on synthetic RGB-D frames."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from rgbd_scenes import DEFAULT_BOXES, FACING_BOXES, RgbdScene
from rgbd_scenes import render_scene as _render_scene

from mobilesam_ros.core.depth import (
    CAMERA_INFO_MISSING,
    CAMERA_INFO_SIZE_MISMATCH,
    CLOUD_RGB_DTYPE,
    DEPTH_MISSING,
    DEPTH_SIZE_MISMATCH,
    EMPTY_MASK,
    TOO_FEW_DEPTH_POINTS,
    CameraModel,
    DepthImage,
    instances_cloud,
    lift_instances,
    rotation_to_quaternion,
)
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.settings import DepthSettings
from mobilesam_ros.core.visualize import mask_box

CENTROID_TOLERANCE = 0.01  # m
EXTENT_TOLERANCE = 0.02  # m
FAULTS = dict(holes=0.1, flying_pixels=True, nan_holes=True, mask_bleed_px=3)


@functools.lru_cache(maxsize=8)
def _cached_scene(boxes: tuple, options: tuple) -> RgbdScene:
    return _render_scene(boxes, **dict(options))


def render_scene(boxes: tuple, **options: object) -> RgbdScene:
    """render_scene, rendered once per set of arguments (tests copy what they change)."""
    return _cached_scene(boxes, tuple(sorted(options.items())))


def _depth_as_message_buffer(scene: RgbdScene, encoding: str) -> DepthImage:
    """The scene's depth through the path a ROS message takes (bytes, step with row padding)."""
    pixels = scene.depth_millimetres() if encoding == "16UC1" else scene.depth
    height, width = pixels.shape
    padded = np.zeros((height, width + 3), dtype=pixels.dtype)
    padded[:, :width] = pixels
    return DepthImage.from_buffer(padded.tobytes(), height, width, padded.strides[0], encoding)


def _camera(scene: RgbdScene) -> CameraModel:
    return CameraModel.from_k(scene.k, scene.width, scene.height)


def _check_against_truth(scene: RgbdScene, instances: list) -> None:
    for name, instance, centroid, size in zip(
        scene.names, instances, scene.expected_centroids, scene.expected_aabb_sizes, strict=True
    ):
        assert instance is not None, name
        centroid_error = np.abs(instance.centroid - centroid)
        assert centroid_error.max() < CENTROID_TOLERANCE, (name, centroid_error)
        size_error = np.abs(instance.aabb_size - size)
        assert size_error.max() < EXTENT_TOLERANCE, (name, size_error)
        assert instance.num_points >= 1000, (name, instance.num_points)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
@pytest.mark.parametrize("faults", [False, True], ids=["clean", "holes-flying-bleed"])
def test_centroids_and_extents_match_the_geometry(encoding: str, faults: bool) -> None:
    scene = render_scene(DEFAULT_BOXES, **(FAULTS if faults else {}))
    depth = _depth_as_message_buffer(scene, encoding)
    result = lift_instances(scene.masks, depth, _camera(scene))
    assert not result.counts
    _check_against_truth(scene, result.instances)


def test_oriented_box_of_a_tilted_panel_matches_its_size_and_normal() -> None:
    scene = render_scene(DEFAULT_BOXES, **FAULTS)
    panel_index = scene.names.index("panel")
    panel = lift_instances(
        scene.masks, DepthImage.from_metres(scene.depth), _camera(scene)
    ).instances[panel_index]
    assert panel is not None
    order = np.argsort(panel.obb_size)
    np.testing.assert_allclose(panel.obb_size[order], [0.01, 0.25, 0.40], atol=EXTENT_TOLERANCE)
    normal = panel.obb_axes[:, order[0]]
    true_normal = DEFAULT_BOXES[panel_index].rotation[:, 2]  # the panel's thin axis
    assert abs(float(normal @ true_normal)) > np.cos(np.deg2rad(3.0))
    assert np.linalg.det(panel.obb_axes) == pytest.approx(1.0)
    np.testing.assert_allclose(panel.obb_center, DEFAULT_BOXES[panel_index].center, atol=0.01)
    # Every point lies in the oriented box.
    local = panel.obb_axes.T @ (panel.points.T - panel.obb_center[:, None])
    assert np.all(np.abs(local) <= panel.obb_size[:, None] / 2 + 1e-4)


def test_flying_pixels_and_bleed_would_spoil_the_boxes_without_the_filters() -> None:
    scene = render_scene(DEFAULT_BOXES, **FAULTS)
    unfiltered = DepthSettings(flying_threshold=0.0, erode_px=0, clip_percentile=0.0)
    instances = lift_instances(
        scene.masks, DepthImage.from_metres(scene.depth), _camera(scene), unfiltered
    ).instances
    errors = [
        np.abs(i.aabb_size - size).max()
        for i, size in zip(instances, scene.expected_aabb_sizes, strict=True)
    ]
    assert max(errors) > 0.5  # the wall at 3 m comes in through the bleed


def test_masks_bleeding_past_the_erosion_margin_are_still_clipped() -> None:
    scene = render_scene(DEFAULT_BOXES, holes=0.1, flying_pixels=True, mask_bleed_px=4)
    result = lift_instances(scene.masks, DepthImage.from_metres(scene.depth), _camera(scene))
    _check_against_truth(scene, result.instances)


@pytest.mark.parametrize("info_size", ["color", "depth"])
def test_depth_at_half_resolution_with_color_or_depth_sized_camera_info(info_size: str) -> None:
    scene = render_scene(FACING_BOXES, depth_scale=0.5, **FAULTS)
    assert scene.depth.shape == (240, 320)
    camera = _camera(scene)
    if info_size == "depth":
        camera = camera.scaled_to(320, 240)
    depth = DepthImage.from_millimetres(scene.depth_millimetres())
    result = lift_instances(scene.masks, depth, camera)
    assert not result.counts
    _check_against_truth(scene, result.instances)


def test_scaled_intrinsics_project_points_to_scaled_pixels() -> None:
    camera = CameraModel(525.0, 520.0, 319.5, 239.5, 640, 480)
    half = camera.scaled_to(320, 240)
    point = np.array([0.3, -0.2, 1.5])
    u, v = camera.fx * point[0] / point[2] + camera.cx, camera.fy * point[1] / point[2] + camera.cy
    u_half = half.fx * point[0] / point[2] + half.cx
    v_half = half.fy * point[1] / point[2] + half.cy
    # Pixel edges scale by the factor: (u + 0.5) / 2 = u_half + 0.5.
    assert (u + 0.5) / 2 == pytest.approx(u_half + 0.5)
    assert (v + 0.5) / 2 == pytest.approx(v_half + 0.5)
    assert camera.scaled_to(640, 480) is camera
    with pytest.raises(InvalidInputError, match="aspect"):
        camera.scaled_to(640, 360)


def test_missing_inputs_and_sizes_without_a_scale_are_counted() -> None:
    scene = render_scene(DEFAULT_BOXES)
    camera, depth = _camera(scene), DepthImage.from_metres(scene.depth)
    count = len(scene.masks)
    cases = [
        (None, camera, DEPTH_MISSING),
        (depth, None, CAMERA_INFO_MISSING),
        (DepthImage.from_metres(np.ones((360, 640), np.float32)), camera, DEPTH_SIZE_MISMATCH),
        (depth, CameraModel(500.0, 500.0, 400.0, 300.0, 800, 450), CAMERA_INFO_SIZE_MISMATCH),
    ]
    for case_depth, case_camera, reason in cases:
        result = lift_instances(scene.masks, case_depth, case_camera)
        assert result.instances == [None] * count, reason
        assert result.counts == {reason: count}


def test_instances_without_enough_depth_get_no_pose_and_are_counted() -> None:
    scene = render_scene(DEFAULT_BOXES)
    depth = scene.depth.copy()
    holed = scene.masks[1]
    depth[holed] = 0.0  # no depth anywhere on the second object
    tiny = np.zeros_like(scene.masks[0])
    tiny[100:103, 100:103] = True  # 9 pixels: under min_points
    empty = np.zeros_like(scene.masks[0])
    masks = [scene.masks[0], holed, tiny, empty]
    result = lift_instances(masks, DepthImage.from_metres(depth), _camera(scene))
    assert result.instances[0] is not None
    assert result.instances[1:] == [None, None, None]
    assert result.counts == {TOO_FEW_DEPTH_POINTS: 2, EMPTY_MASK: 1}


def test_instances_lifted_together_equal_each_lifted_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Instances share per-pixel arrays in groups; an instance whose depth range keeps too few
    # points in the middle of a group must not hand its points to a neighbour.
    scene = render_scene(DEFAULT_BOXES, **FAULTS)
    depth = scene.depth.copy()
    ramp = scene.masks[1]
    depth[ramp] = 1.5 + 0.001 * np.arange(np.count_nonzero(ramp))  # 1 mm apart, all different
    depth_image, camera = DepthImage.from_metres(depth), _camera(scene)
    # The 49.9th to 50.1st percentiles, not extended over 1 mm steps, keep about 10 points.
    params = DepthSettings(
        clip_percentile=49.9, depth_gap=0.0005, flying_threshold=0.0, min_points=30
    )
    alone = [lift_instances([m], depth_image, camera, params).instances[0] for m in scene.masks]
    assert alone[1] is None and alone[0] is not None and alone[2] is not None
    for group_pixels in (1 << 19, 1):  # one group, and a group per instance
        monkeypatch.setattr("mobilesam_ros.core.depth.lifting.LIFT_GROUP_PIXELS", group_pixels)
        together = lift_instances(scene.masks, depth_image, camera, params)
        assert together.counts == {TOO_FEW_DEPTH_POINTS: 1}
        assert together.instances[1] is None
        for a, b in ((alone[0], together.instances[0]), (alone[2], together.instances[2])):
            assert b is not None
            np.testing.assert_array_equal(a.points, b.points)
            np.testing.assert_array_equal(a.u, b.u)
            np.testing.assert_array_equal(a.v, b.v)
            np.testing.assert_array_equal(a.centroid, b.centroid)
            np.testing.assert_array_equal(a.obb_size, b.obb_size)


def test_out_of_range_depth_is_ignored() -> None:
    scene = render_scene(DEFAULT_BOXES)
    near = lift_instances(
        scene.masks,
        DepthImage.from_metres(scene.depth),
        _camera(scene),
        DepthSettings(max_depth=1.4),
    )
    # Only the crate (1.075 to 1.325 m) is nearer than 1.4 m; the others are out of range.
    assert near.instances[0] is not None and near.instances[0].points[:, 2].max() <= 1.4
    assert near.instances[1:] == [None, None]
    assert near.counts == {TOO_FEW_DEPTH_POINTS: 2}


def test_crops_give_the_same_result_as_full_masks() -> None:
    scene = render_scene(DEFAULT_BOXES, **FAULTS)
    crops = []
    for mask in scene.masks:
        x0, y0, x1, y1 = mask_box(mask)
        crops.append(MaskCrop(x0, y0, mask[y0 : y1 + 1, x0 : x1 + 1], mask.shape))
    depth, camera = DepthImage.from_metres(scene.depth), _camera(scene)
    full = lift_instances(scene.masks, depth, camera).instances
    cropped = lift_instances(crops, depth, camera, image_size=(480, 640)).instances
    for a, b in zip(full, cropped, strict=True):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.obb_size, b.obb_size)
    with pytest.raises(InvalidInputError, match="image_size"):
        lift_instances(crops, depth, camera)
    with pytest.raises(InvalidInputError, match="outside"):
        lift_instances(
            [MaskCrop(630, 0, crops[0].mask, (480, 640))], depth, camera, image_size=(480, 640)
        )


def test_depth_buffers_big_endian_and_bad_input() -> None:
    millimetres = np.array([[1000, 0], [2500, 65535]], dtype=np.uint16)
    big = DepthImage.from_buffer(millimetres.astype(">u2").tobytes(), 2, 2, 4, "16UC1", True)
    np.testing.assert_array_equal(big.raw, millimetres)
    assert big.scale == 0.001
    with pytest.raises(InvalidInputError, match="'rgb8'"):
        DepthImage.from_buffer(bytes(12), 2, 2, 6, "rgb8")
    with pytest.raises(InvalidInputError, match="bytes"):
        DepthImage.from_buffer(bytes(6), 2, 2, 4, "16UC1")
    with pytest.raises(InvalidInputError, match="step"):
        DepthImage.from_buffer(bytes(8), 2, 2, 2, "32FC1")
    with pytest.raises(InvalidInputError, match="fx"):
        CameraModel(0.0, 500.0, 320.0, 240.0, 640, 480)
    with pytest.raises(InvalidInputError, match="depth range"):
        DepthSettings(min_depth=2.0, max_depth=1.0)


def test_cloud_holds_labels_colors_and_strided_points() -> None:
    scene = render_scene(DEFAULT_BOXES)
    instances = lift_instances(
        scene.masks, DepthImage.from_metres(scene.depth), _camera(scene)
    ).instances
    instances = [instances[0], None, instances[2]]
    cloud = instances_cloud(instances, 1, scene.color)
    assert cloud.dtype == CLOUD_RGB_DTYPE
    assert cloud.shape[0] == instances[0].num_points + instances[2].num_points
    assert set(np.unique(cloud["label"])) == {1, 3}
    first = cloud[0]
    u, v = instances[0].u[0], instances[0].v[0]
    r, g, b = (int(c) for c in scene.color[v, u])
    assert int(first["rgb"]) == (r << 16) | (g << 8) | b
    strided = instances_cloud(instances, 4)
    assert "rgb" not in strided.dtype.names
    on_grid = ((instances[0].u % 4) == 0) & ((instances[0].v % 4) == 0)
    assert int((strided["label"] == 1).sum()) == int(on_grid.sum())
    with pytest.raises(InvalidInputError, match="stride"):
        instances_cloud(instances, 0)


def test_quaternion_rotates_like_the_matrix() -> None:
    rotation = DEFAULT_BOXES[1].rotation @ DEFAULT_BOXES[2].rotation
    x, y, z, w = rotation_to_quaternion(rotation)
    vector = np.array([0.3, -0.1, 0.7])
    q_vector = np.array([x, y, z])
    # v' = v + 2 w (q x v) + 2 q x (q x v)
    rotated = vector + 2 * w * np.cross(q_vector, vector)
    rotated += 2 * np.cross(q_vector, np.cross(q_vector, vector))
    np.testing.assert_allclose(rotated, rotation @ vector, atol=1e-9)
