"""The ROS layer in one process: a real rclpy node with the node's runtime (parameters, inputs,
outputs, diagnostics) and a client node, spun by one executor; the model is the box-filling
stand-in of doubles.py, so every expected mask is known.

Runs in the install space's environment (run_ros_tests.py): the generated messages import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import photo

rclpy = pytest.importorskip("rclpy")
vision_msgs = pytest.importorskip("vision_msgs.msg")
from inprocess_world import BOXES, World  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from mobilesam_ros.messages.builders import image_message  # noqa: E402
from mobilesam_ros.messages.readers import instance_full_mask  # noqa: E402
from mobilesam_ros.ros.conversions import ROS_TYPES  # noqa: E402

IMAGE = photo("astronaut")[:240, :320]


@pytest.fixture(scope="module")
def world():
    rclpy.init()
    world = World(IMAGE)
    yield world
    world.close()
    rclpy.try_shutdown()


def test_masks_label_image_and_refined_boxes_are_the_answer_with_the_images_header(world):
    header = world.frame(10)
    answer = world.answer(header)
    assert answer.header == header and [i.id for i in answer.instances] == ["p0", "p1"]
    for instance, (x0, y0, x1, y1) in zip(answer.instances, BOXES, strict=True):
        full = instance_full_mask(instance, *IMAGE.shape[:2])
        expected = np.zeros(IMAGE.shape[:2], bool)
        expected[y0 : y1 + 1, x0 : x1 + 1] = True  # the stand-in's mask is its prompt box
        assert np.array_equal(full, expected)
    labels_message = world.spin_until(
        lambda: next((m for m in world.received["mask_image"] if m.header == header), None),
        "mask_image",
    )
    labels = np.frombuffer(bytes(labels_message.data), np.uint8).reshape(IMAGE.shape[:2])
    assert set(np.unique(labels)) == {0, 1, 2}
    refined = world.spin_until(
        lambda: next((m for m in world.received["detections_refined"] if m.header == header), None),
        "detections_refined",
    )
    sizes = [(d.bbox.size_x, d.bbox.size_y) for d in refined.detections]
    assert sizes == [(x1 - x0 + 1, y1 - y0 + 1) for x0, y0, x1, y1 in BOXES]


def test_overlay_max_rate_skips_overlays_and_counts_them(world):
    assert world.node.set_parameters([Parameter("overlay.max_rate", value=0.2)])[0].successful
    before = len(world.received["overlay"])
    for second in range(20, 23):
        world.answer(world.frame(second))
    # The settings reach the frames after the change: at most one overlay in 5 s.
    assert len(world.received["overlay"]) - before <= 1
    assert world.runtime.cameras[""].overlays_skipped >= 2
    assert world.node.set_parameters([Parameter("overlay.max_rate", value=0.0)])[0].successful


def test_run_time_parameter_changes_are_checked_together_and_applied_between_frames(world):
    set_parameters = world.node.set_parameters
    refused = set_parameters([Parameter("depth.min", value=20.0)])[0]  # above depth.max (10)
    assert not refused.successful and "depth.min/depth.max" in refused.reason
    assert world.runtime.settings.depth.min_depth == 0.1
    both = world.node.set_parameters_atomically(
        [Parameter("depth.max", value=30.0), Parameter("depth.min", value=20.0)]
    )
    assert both.successful and world.runtime.settings.depth.min_depth == 20.0
    assert not set_parameters([Parameter("overlay.alpha", value=2.0)])[0].successful
    assert not set_parameters([Parameter("backend", value="torch")])[0].successful  # read-only
    assert set_parameters([Parameter("mask_threshold", value=1.5)])[0].successful
    world.answer(world.frame(30))  # the worker applies queued settings before its next job
    assert world.segmenter.mask_threshold == 1.5
    set_parameters([Parameter("mask_threshold", value=0.0)])
    world.node.set_parameters_atomically(
        [Parameter("depth.min", value=0.1), Parameter("depth.max", value=10.0)]
    )


def test_detections_become_prompts_with_their_ids_and_classes(world):
    header = world.frame(40)
    detection = vision_msgs.Detection2D(id="d7")
    detection.bbox.center.position.x, detection.bbox.center.position.y = 60.0, 80.0
    detection.bbox.size_x, detection.bbox.size_y = 100.0, 120.0
    hypothesis = vision_msgs.ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = "cup", 0.8
    detection.results.append(hypothesis)
    world.detections.publish(vision_msgs.Detection2DArray(header=header, detections=[detection]))
    # With tracking (on by default) the frame may first be answered for the live tracks alone,
    # and the answer to the detections carries the other live tracks too.
    instance = world.spin_until(
        lambda: next(
            (
                i
                for m in world.received["masks"]
                if m.header == header
                for i in m.instances
                if i.id == "d7"
            ),
            None,
        ),
        "the detection's mask",
    )
    assert instance.class_id == "cup"
    assert instance.detection_score == pytest.approx(0.8)
    assert (instance.roi.x_offset, instance.roi.width) == (10, 101)


def test_diagnostics_say_ready_and_carry_the_counters(world):
    world.frame(50)
    world.received["diagnostics"].clear()
    world.runtime._diagnostics.publish()
    status = world.spin_until(
        lambda: next(iter(world.received["diagnostics"]), None), "/diagnostics"
    ).status[0]
    assert status.name == "/inproc/mobilesam: segmentation"
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["images received (total)"]) >= 5
    assert int(values["images encoded (total)"]) >= 4
    assert "lifecycle state" not in values  # the plain node has none
    assert status.message in ("ready", "inputs dropped or rejected since the last report")


def test_the_readmes_subscriber_example_rebuilds_the_masks_from_the_message_alone(world):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```python\nimport rclpy\nfrom rclpy.node import Node\n")
    code = readme[start + len("```python\n") : readme.index("```\n", start + 10)]
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    listener = namespace["MaskListener"]()
    try:
        answer = world.answer(world.frame(60))
        listener.on_masks(answer)  # the message alone: no image size from elsewhere
        for instance, (x0, y0, x1, y1) in zip(answer.instances, BOXES, strict=True):
            assert listener.areas[instance.track_id] == [(x1 - x0 + 1) * (y1 - y0 + 1)]
    finally:
        listener.destroy_node()


def call_segment(world, request):
    from mobilesam_ros.srv import Segment

    client = world.client.create_client(Segment, "/inproc/mobilesam/segment")
    try:
        world.spin_until(lambda: client.service_is_ready(), "the segment service")
        future = client.call_async(request)
        return world.spin_until(lambda: future.done() and future.result(), "the service reply")
    finally:
        world.client.destroy_client(client)


def segment_request(image=None, stamp_sec=0, boxes=BOXES):
    from mobilesam_ros.msg import Prompt
    from mobilesam_ros.srv import Segment

    request = Segment.Request()
    if image is not None:
        request.image = image
    request.image.header.stamp.sec = stamp_sec
    request.prompts = [
        Prompt(id=f"s{i}", has_box=True, box=[float(v) for v in box]) for i, box in enumerate(boxes)
    ]
    return request


def test_segment_service_answers_its_own_image_with_its_header(world):
    from std_msgs.msg import Header

    header = Header(frame_id="elsewhere")
    header.stamp.sec = 77
    image = image_message(ROS_TYPES, header, IMAGE, "rgb8")
    response = call_segment(world, segment_request(image))
    assert response.success, response.message
    assert response.masks.header == header
    assert [i.id for i in response.masks.instances] == ["s0", "s1"]
    full = instance_full_mask(response.masks.instances[0], *IMAGE.shape[:2])
    x0, y0, x1, y1 = BOXES[0]
    assert full[y0 : y1 + 1, x0 : x1 + 1].all() and full.sum() == (x1 - x0 + 1) * (y1 - y0 + 1)


def test_segment_service_answers_a_cached_frame_without_encoding_it_again(world):
    header = world.frame(40)
    world.answer(header)  # the stream encodes it
    encoded = len(world.segmenter.encoded)
    response = call_segment(world, segment_request(stamp_sec=40, boxes=BOXES[:1]))
    assert response.success, response.message
    assert response.masks.header == header  # the cached frame's stamp and frame id
    assert len(world.segmenter.encoded) == encoded


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (dict(stamp_sec=12345), "no cached image with stamp"),
        (dict(boxes=[(50, 50, 10, 10)]), "s0"),
    ],
)
def test_segment_service_failures_say_why_and_the_node_goes_on(world, request_, message):
    if "boxes" in request_:
        world.frame(50)
    response = call_segment(world, segment_request(**request_))
    assert not response.success and message in response.message
    world.answer(world.frame(51))  # still serving the camera
