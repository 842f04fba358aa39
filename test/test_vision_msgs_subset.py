"""The vision_msgs subset (definitions in mobilesam_ros/data/vision_msgs, built as the tests'
package test/message_packages/vision_msgs): layout, serialization, real DDS.

Layouts of the 2D and 3D detection messages; round trips and DDS with the 2D ones.

The package is built with colcon into build/test_vision_msgs (once; cached while its sources are
unchanged). Each check runs in a fresh interpreter with the install spaces on its paths, started
outside the repository.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from ros_test_env import TEST_MESSAGES_BUILD_ROOT, installed_test_messages, run_python

pytest_plugins = ["ros_fixtures"]

# Field names and types of vision_msgs 4.x, as rosidl reports them.
EXPECTED_FIELDS = textwrap.dedent(
    """
    EXPECTED = {
        "Detection2DArray": {
            "header": "std_msgs/Header",
            "detections": "sequence<vision_msgs/Detection2D>",
        },
        "Detection2D": {
            "header": "std_msgs/Header",
            "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
            "bbox": "vision_msgs/BoundingBox2D",
            "id": "string",
        },
        "BoundingBox2D": {
            "center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double",
        },
        "Pose2D": {"position": "vision_msgs/Point2D", "theta": "double"},
        "Point2D": {"x": "double", "y": "double"},
        "ObjectHypothesisWithPose": {
            "hypothesis": "vision_msgs/ObjectHypothesis",
            "pose": "geometry_msgs/PoseWithCovariance",
        },
        "ObjectHypothesis": {"class_id": "string", "score": "double"},
        "Detection3DArray": {
            "header": "std_msgs/Header",
            "detections": "sequence<vision_msgs/Detection3D>",
        },
        "Detection3D": {
            "header": "std_msgs/Header",
            "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
            "bbox": "vision_msgs/BoundingBox3D",
            "id": "string",
        },
        "BoundingBox3D": {"center": "geometry_msgs/Pose", "size": "geometry_msgs/Vector3"},
    }
    """
)

# Builds the test detection: one box centered at (100, 50), 40 x 20 pixels, "cup" at 0.9, id "7".
MAKE_DETECTIONS = textwrap.dedent(
    """
    from std_msgs.msg import Header
    from vision_msgs.msg import (
        BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
        ObjectHypothesisWithPose, Point2D, Pose2D,
    )

    def make_detections():
        header = Header(frame_id="camera")
        header.stamp.sec, header.stamp.nanosec = 3, 500
        result = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id="cup", score=0.9))
        bbox = BoundingBox2D(
            center=Pose2D(position=Point2D(x=100.0, y=50.0), theta=0.0), size_x=40.0, size_y=20.0
        )
        detection = Detection2D(header=header, results=[result], bbox=bbox, id="7")
        return Detection2DArray(header=header, detections=[detection])

    def check_detections(message):
        assert type(message) is Detection2DArray, type(message)
        assert message.header.frame_id == "camera", message.header
        assert (message.header.stamp.sec, message.header.stamp.nanosec) == (3, 500)
        assert len(message.detections) == 1, message.detections
        detection = message.detections[0]
        assert detection.id == "7"
        assert detection.header.frame_id == "camera"
        center = detection.bbox.center
        assert (center.position.x, center.position.y, center.theta) == (100.0, 50.0, 0.0)
        assert (detection.bbox.size_x, detection.bbox.size_y) == (40.0, 20.0)
        assert len(detection.results) == 1
        hypothesis = detection.results[0].hypothesis
        assert (hypothesis.class_id, hypothesis.score) == ("cup", 0.9)
        assert detection.results[0].pose.pose.orientation.w == 1.0
    """
)

ROUND_TRIP = (
    EXPECTED_FIELDS
    + MAKE_DETECTIONS
    + textwrap.dedent(
        """
        import sys
        from pathlib import Path

        import vision_msgs.msg
        from rclpy.serialization import deserialize_message, serialize_message

        install_base = Path(sys.argv[1]).resolve()
        module_file = Path(vision_msgs.msg.__file__).resolve()
        assert install_base in module_file.parents, f"vision_msgs.msg from {module_file}"

        for name, fields in EXPECTED.items():
            actual = getattr(vision_msgs.msg, name).get_fields_and_field_types()
            assert actual == fields, f"{name}: {actual}"

        message = make_detections()
        data = serialize_message(message)
        assert isinstance(data, bytes) and data, data
        round_trip = deserialize_message(data, Detection2DArray)
        assert round_trip == message
        check_detections(round_trip)
        print("round trip ok")
        """
    )
)

PUBLISH_SUBSCRIBE = MAKE_DETECTIONS + textwrap.dedent(
    """
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    TIMEOUT_S = 10.0

    rclpy.init(args=[])
    try:
        talker = rclpy.create_node("detections_talker")
        listener = rclpy.create_node("detections_listener")
        received = []
        listener.create_subscription(
            Detection2DArray, "detections", received.append, 10
        )
        publisher = talker.create_publisher(Detection2DArray, "detections", 10)
        # Published repeatedly: discovery takes a moment, and a message sent before the
        # subscription is matched is lost with the default (volatile) QoS.
        talker.create_timer(0.05, lambda: publisher.publish(make_detections()))
        executor = SingleThreadedExecutor()
        executor.add_node(talker)
        executor.add_node(listener)
        deadline = time.monotonic() + TIMEOUT_S
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert received, f"no Detection2DArray received within {TIMEOUT_S} s"
        check_detections(received[0])
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    finally:
        rclpy.try_shutdown()
    print("received ok")
    """
)


def test_env_additions_point_into_the_build(test_messages_env: dict[str, str]) -> None:
    for name in ("PYTHONPATH", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH"):
        assert test_messages_env[name], f"{name} is empty"
        for entry in test_messages_env[name].split(os.pathsep):
            assert TEST_MESSAGES_BUILD_ROOT in Path(entry).parents, f"{name}: {entry}"


def test_detection_array_serialization_round_trip(
    test_messages_ros_env: dict[str, str], tmp_path: Path
) -> None:
    install_base = installed_test_messages(TEST_MESSAGES_BUILD_ROOT)
    output = run_python(ROUND_TRIP, test_messages_ros_env, tmp_path, str(install_base))
    assert "round trip ok" in output


def test_detection_array_over_dds(test_messages_ros_env: dict[str, str], tmp_path: Path) -> None:
    output = run_python(PUBLISH_SUBSCRIBE, test_messages_ros_env, tmp_path)
    assert "received ok" in output
