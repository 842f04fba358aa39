"""Messages of depth lifting (messages/readers.py, messages/builders.py) with the node's
message classes (ros/conversions.ROS_TYPES): inputs, cloud, markers, detections.

Detection3DArray needs vision_msgs: it is checked in a fresh interpreter with the TEST-ONLY subset
(test/message_packages/vision_msgs) built by the fixtures; the rest runs in this process.
"""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="needs ROS 2 Python packages (rclpy)")
pytest.importorskip("visualization_msgs", reason="needs visualization_msgs")

from node_message_types import node_message_types
from rclpy.serialization import deserialize_message, serialize_message
from rgbd_scenes import rgbd_frame
from ros_test_env import REPO_ROOT, run_python
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from mobilesam_ros.core.depth import lift_instances
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.prompts import Prompt, PromptMask
from mobilesam_ros.core.visualize import instance_color
from mobilesam_ros.messages.builders import MarkerTracker, instances_cloud_message
from mobilesam_ros.messages.readers import camera_from_info, depth_from_message

pytest_plugins = ["ros_fixtures"]
ROS_TYPES = node_message_types()


def _image(pixels: np.ndarray, encoding: str) -> Image:
    message = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding)
    message.step = int(pixels.strides[0])
    message.data = pixels.tobytes()
    return message


def _camera_info(values: dict) -> CameraInfo:
    return CameraInfo(**values)


def _decoded_cloud(message: PointCloud2) -> np.ndarray:
    """The records of a little-endian PointCloud2, read as its fields describe them."""
    formats = {PointField.FLOAT32: "<f4", PointField.UINT32: "<u4"}
    dtype = np.dtype(
        {
            "names": [field.name for field in message.fields],
            "formats": [formats[field.datatype] for field in message.fields],
            "offsets": [field.offset for field in message.fields],
            "itemsize": message.point_step,
        }
    )
    return np.frombuffer(bytes(message.data), dtype=dtype, count=message.width * message.height)


def _lifted(encoding: str = "16UC1"):
    frame = rgbd_frame(encoding)
    depth = depth_from_message(_image(frame.depth, encoding))
    camera = camera_from_info(_camera_info(frame.camera_info))
    result = lift_instances(frame.scene.masks, depth, camera)
    prompts = [
        PromptMask.from_mask(
            Prompt(id=f"t{i + 1}", class_id=name, detection_score=0.9), mask, 0.95, None
        )
        for i, (name, mask) in enumerate(zip(frame.names, frame.scene.masks, strict=True))
    ]
    return frame, result, prompts


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_depth_and_camera_info_messages_lift_to_the_expected_centroids(encoding: str) -> None:
    frame, result, _ = _lifted(encoding)
    for instance, expected in zip(result.instances, frame.expected_centroids, strict=True):
        assert np.abs(instance.centroid - expected).max() < 0.01


def test_uncalibrated_camera_info_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="fx"):
        camera_from_info(CameraInfo(width=640, height=480))


def test_point_cloud_round_trip() -> None:
    frame, result, _ = _lifted()
    header = Header(frame_id="camera_color_optical_frame")
    instances = [result.instances[0], None, result.instances[2]]
    message = instances_cloud_message(ROS_TYPES, header, instances, 2, frame.color_rgb8)
    back = deserialize_message(serialize_message(message), PointCloud2)
    assert back.header.frame_id == "camera_color_optical_frame"
    assert [f.name for f in back.fields] == ["x", "y", "z", "label", "rgb"]
    assert not back.is_bigendian
    cloud = _decoded_cloud(back)
    first = instances[0]
    on_grid = ((first.u % 2) == 0) & ((first.v % 2) == 0)
    np.testing.assert_array_equal(cloud["x"][: on_grid.sum()], first.xyz[0][on_grid])
    np.testing.assert_array_equal(cloud["z"][: on_grid.sum()], first.xyz[2][on_grid])
    # rgb: float32 fields holding the bytes 0x00RRGGBB.
    colors = frame.color_rgb8[first.v[on_grid], first.u[on_grid]].astype(np.uint32)
    packed = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
    np.testing.assert_array_equal(cloud["rgb"][: on_grid.sum()].view("<u4"), packed)
    assert set(np.unique(cloud["label"])) == {1, 3}
    assert back.width == cloud.shape[0] and back.row_step == back.point_step * back.width
    without_rgb = instances_cloud_message(ROS_TYPES, header, instances)
    assert [f.name for f in without_rgb.fields] == ["x", "y", "z", "label"]


def _marker_fields(marker: Marker) -> tuple:
    pose, scale, color = marker.pose, marker.scale, marker.color
    return (
        marker.header.frame_id,
        marker.ns,
        marker.id,
        marker.type,
        marker.action,
        (pose.position.x, pose.position.y, pose.position.z),
        (pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w),
        (scale.x, scale.y, scale.z),
        tuple(float(np.float32(c)) for c in (color.r, color.g, color.b, color.a)),
        marker.text,
    )


def test_markers_follow_instances_and_delete_ended_ones() -> None:
    _, result, prompts = _lifted()
    header = Header(frame_id="camera")
    tracker = MarkerTracker(ROS_TYPES)
    first = tracker.markers(header, prompts, result.instances, ["a", "b", "c"])
    assert [(m.ns, m.action) for m in first.markers] == [
        ("boxes", Marker.ADD),
        ("labels", Marker.ADD),
    ] * 3
    box = first.markers[0]
    blue, green, red = instance_color(0)
    assert (box.color.r, box.color.g, box.color.b) == pytest.approx(
        (red / 255, green / 255, blue / 255)
    )
    assert box.type == Marker.CUBE and box.scale.x > 0
    assert first.markers[1].text == "a"
    box_ids = {p.prompt.id: m.id for p, m in zip(prompts, first.markers[::2], strict=True)}

    # The second instance ends; the others keep their marker ids.
    second = tracker.markers(header, [prompts[0], prompts[2]], [result.instances[0], None])
    added = [(m.ns, m.id) for m in second.markers if m.action == Marker.ADD]
    deleted = [(m.ns, m.id) for m in second.markers if m.action == Marker.DELETE]
    assert added == [("boxes", box_ids["t1"]), ("labels", box_ids["t1"])]
    assert sorted(deleted) == sorted(
        (ns, box_ids[i]) for ns in ("boxes", "labels") for i in ("t2", "t3")
    )
    back = deserialize_message(serialize_message(second), MarkerArray)
    # Field by field (the wire form's alignment padding is not initialized, so its bytes vary);
    # colors travel as float32.
    assert [_marker_fields(m) for m in back.markers] == [_marker_fields(m) for m in second.markers]
    third = tracker.markers(header, [prompts[0]], [result.instances[0]])
    assert all(m.action == Marker.ADD for m in third.markers)


def test_without_vision_msgs_the_node_has_no_detection_types() -> None:
    if importlib.util.find_spec("vision_msgs") is not None:
        pytest.skip("vision_msgs is installed in this environment")
    vision = (
        ROS_TYPES.detection_2d_array,
        ROS_TYPES.detection_2d,
        ROS_TYPES.hypothesis_with_pose,
        ROS_TYPES.detection_3d_array,
        ROS_TYPES.detection_3d,
        ROS_TYPES.object_hypothesis,
    )
    assert vision == (None,) * 6


DETECTIONS_3D = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [sys.argv[1], sys.argv[2]]  # repository root (the sources), test/

    import numpy as np
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2D, Detection3DArray, ObjectHypothesis
    from vision_msgs.msg import ObjectHypothesisWithPose

    from mobilesam_ros.core.depth import lift_instances
    from mobilesam_ros.core.prompts import Prompt, PromptMask
    from mobilesam_ros.messages.builders import detections_3d
    from mobilesam_ros.messages.readers import camera_from_info, depth_from_message
    from node_message_types import node_message_types
    from rgbd_scenes import rgbd_frame

    types = node_message_types()
    assert types.detection_3d_array is Detection3DArray
    frame = rgbd_frame("32FC1")
    depth = Image(height=480, width=640, encoding="32FC1", step=640 * 4,
                  data=frame.depth.tobytes())
    result = lift_instances(
        frame.scene.masks,
        depth_from_message(depth),
        camera_from_info(CameraInfo(**frame.camera_info)),
    )
    source = Detection2D(id="det7", results=[ObjectHypothesisWithPose(
        hypothesis=ObjectHypothesis(class_id="crate", score=0.8))])
    prompts = [
        PromptMask.from_mask(
            Prompt(id="t1", class_id="crate", source=source), frame.scene.masks[0], 0.9, None
        ),
        PromptMask.from_mask(Prompt(id="t2", class_id="carton", detection_score=0.7),
                   frame.scene.masks[1], 0.9, None),
        PromptMask.from_mask(Prompt(id="t3"), frame.scene.masks[2], 0.9, None),
    ]
    instances = [result.instances[0], result.instances[1], None]
    header = Header(frame_id="camera")
    header.stamp.sec = 12
    message = detections_3d(types, header, prompts, instances)
    back = deserialize_message(serialize_message(message), Detection3DArray)
    assert back == message
    assert back.header.stamp.sec == 12 and len(back.detections) == 2
    crate, carton = back.detections
    assert (crate.id, carton.id) == ("t1", "t2")
    assert crate.header.frame_id == "camera"
    hypothesis = crate.results[0]
    assert (hypothesis.hypothesis.class_id, hypothesis.hypothesis.score) == ("crate", 0.8)
    assert (carton.results[0].hypothesis.class_id, carton.results[0].hypothesis.score) == (
        "carton", 0.7)
    for detection, instance, expected in zip(
        (crate, carton), instances, frame.expected_centroids
    ):
        position = detection.results[0].pose.pose.position
        centroid = np.array([position.x, position.y, position.z])
        assert np.abs(centroid - expected).max() < 0.01, (centroid, expected)
        center = detection.bbox.center.position
        np.testing.assert_allclose([center.x, center.y, center.z], instance.obb_center)
        size = detection.bbox.size
        np.testing.assert_allclose([size.x, size.y, size.z], instance.obb_size)
        q = detection.bbox.center.orientation
        assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1) < 1e-9
    aligned = detections_3d(types, header, prompts, instances, oriented=False)
    size = aligned.detections[0].bbox.size
    np.testing.assert_allclose([size.x, size.y, size.z], instances[0].aabb_size)
    assert aligned.detections[0].bbox.center.orientation.w == 1.0
    print("detections 3d ok")
    """
)


def test_detection_3d_array_round_trip(
    test_messages_ros_env: dict[str, str], tmp_path: Path
) -> None:
    output = run_python(
        DETECTIONS_3D, test_messages_ros_env, tmp_path, str(REPO_ROOT), str(REPO_ROOT / "test")
    )
    assert "detections 3d ok" in output
