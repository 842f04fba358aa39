"""Detectors as they publish, into the node at 1920x1080: do the masks land on the objects?

Each stand-in publishes what its detector's own source publishes (read there):
- Isaac ROS Grounding DINO: vision_msgs/Detection2DArray, boxes in its 960x544 network input
  (the camera image scaled by 1/2 keeping its aspect ratio, padded below), empty ids, the text
  phrase as class_id, one detection per query above the threshold (near-duplicates), the
  image's header.
- Isaac ROS YOLOv8: boxes in its 640x640 input (scaled by 1/3, padded above and below), whole
  pixels, the class index as class_id, empty ids, the image's stamp with an empty frame_id.
- Isaac ROS RT-DETR (its core launch): camera pixels, the image's header, no suppression.
- yolo_ros: yolo_msgs/DetectionArray, camera pixels, its tracker's ids, the class name.
The model is the box-filling stand-in (a prompt's mask is its box), so a mask on the right
object is a mask whose box is the object's camera box.
"""

from __future__ import annotations

import pytest
from helpers import camera_frame

rclpy = pytest.importorskip("rclpy")
vision_msgs = pytest.importorskip("vision_msgs.msg")
yolo_msgs = pytest.importorskip("yolo_msgs.msg")
from inprocess_world import RELIABLE, World  # noqa: E402

FRAME = camera_frame(1080, 1920)
# Three objects, in camera pixels (x0, y0, x1, y1), with a phrase each.
OBJECTS = {
    "red cup": (200.0, 400.0, 500.0, 800.0),
    "person on the left": (700.0, 100.0, 1100.0, 1000.0),
    "plastic bag": (1300.0, 600.0, 1800.0, 1000.0),
}


def detection_2d(box, class_id, score, header, detection_id=""):
    x0, y0, x1, y1 = box
    detection = vision_msgs.Detection2D(header=header, id=detection_id)
    detection.bbox.center.position.x, detection.bbox.center.position.y = (
        (x0 + x1) / 2,
        (y0 + y1) / 2,
    )
    detection.bbox.size_x, detection.bbox.size_y = x1 - x0, y1 - y0
    hypothesis = vision_msgs.ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = class_id, score
    detection.results.append(hypothesis)
    return detection


def scaled(box, scale, pad_y=0.0, whole=False):
    values = [v * scale + (pad_y if i % 2 else 0.0) for i, v in enumerate(box)]
    return tuple(float(int(v)) for v in values) if whole else tuple(values)


@pytest.fixture()
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def masks_on_objects(world, header, expected_ids):
    """The answer to the detections: instance ids, and each mask's box against its object's."""
    answer = world.spin_until(
        lambda: next(
            (
                m
                for m in world.received["masks"]
                if m.header.stamp == header.stamp
                # The answer to the detections (PROMPTED), not one for the live tracks alone.
                and {i.id for i in m.instances if i.origin == 0} >= expected_ids
            ),
            None,
        ),
        "the masks of the detections",
    )
    assert (answer.height, answer.width) == (1080, 1920)
    assert [i.label for i in answer.instances] == list(range(1, len(answer.instances) + 1))
    return answer


def assert_on(instance, box, tolerance=3.0):
    roi = instance.roi
    got = (roi.x_offset, roi.y_offset, roi.x_offset + roi.width - 1, roi.y_offset + roi.height - 1)
    assert max(abs(a - b) for a, b in zip(got, box, strict=True)) <= tolerance, (got, box)


def test_grounding_dino_network_boxes_duplicates_and_empty_ids(ros):
    world = World(
        FRAME, **{"detections.input_size": "960x544", "detections.letterbox": "bottom_right"}
    )
    try:
        header = world.frame(10)
        detections = []
        for phrase, box in OBJECTS.items():  # each object twice, as the decoder's queries do
            network = scaled(box, 0.5)
            jittered = tuple(v + 2.0 for v in network)
            detections += [detection_2d(network, phrase, 0.6, header)]
            detections += [detection_2d(jittered, phrase, 0.55, header)]
        world.detections.publish(vision_msgs.Detection2DArray(header=header, detections=detections))
        answer = masks_on_objects(world, header, {"d0", "d2", "d4"})
        prompted = [i for i in answer.instances if i.origin == 0]
        assert [(i.id, i.class_id) for i in prompted] == [
            ("d0", "red cup"),
            ("d2", "person on the left"),
            ("d4", "plastic bag"),
        ]  # 3 instances for 3 objects, not 6
        for instance, box in zip(prompted, OBJECTS.values(), strict=True):
            assert_on(instance, box)
        refined = world.spin_until(
            lambda: next(
                (m for m in world.received["detections_refined"] if m.header == header), None
            ),
            "detections_refined",
        )
        # The identity rule: with tracking on, the refined detections carry the track ids.
        assert [d.id for d in refined.detections[:3]] == [i.track_id for i in prompted]
    finally:
        world.close()


def test_isaac_yolov8_letterboxed_boxes_with_an_empty_frame_id(ros):
    world = World(FRAME, **{"detections.input_size": "640x640", "detections.letterbox": "center"})
    try:
        header = world.frame(20)
        stamp_only = type(header)(stamp=header.stamp)  # the decoder sets no frame_id
        detections = [
            detection_2d(scaled(box, 1 / 3, 140.0, whole=True), str(index), 0.8, stamp_only)
            for index, box in enumerate(OBJECTS.values())
        ]
        world.detections.publish(
            vision_msgs.Detection2DArray(header=stamp_only, detections=detections)
        )
        answer = masks_on_objects(world, header, {"d0", "d1", "d2"})
        assert answer.header.frame_id == "camera"  # the image's header, not the detections'
        prompted = [i for i in answer.instances if i.origin == 0]
        for instance, box in zip(prompted, OBJECTS.values(), strict=True):
            assert_on(instance, box, tolerance=4.0)  # whole pixels of a 1/3 scale
    finally:
        world.close()


def test_rt_detr_camera_pixel_boxes(ros):
    world = World(FRAME, **{"tracking.enabled": False})
    try:
        header = world.frame(30)
        detections = [
            detection_2d(box, str(index), 0.95, header)
            for index, box in enumerate(OBJECTS.values())
        ]
        world.detections.publish(vision_msgs.Detection2DArray(header=header, detections=detections))
        answer = masks_on_objects(world, header, {"d0", "d1", "d2"})
        for instance, box in zip(answer.instances, OBJECTS.values(), strict=True):
            assert_on(instance, box, tolerance=1.0)
        refined = world.spin_until(
            lambda: next(
                (m for m in world.received["detections_refined"] if m.header == header), None
            ),
            "detections_refined",
        )
        assert [d.id for d in refined.detections] == ["d0", "d1", "d2"]  # no tracking: the ids
    finally:
        world.close()


def yolo_array(header, boxes_by_id):
    array = yolo_msgs.DetectionArray(header=header)
    for track_id, (name, (x0, y0, x1, y1)) in boxes_by_id.items():
        detection = yolo_msgs.Detection(class_name=name, score=0.7, id=track_id)
        detection.bbox.center.position.x, detection.bbox.center.position.y = (
            (x0 + x1) / 2,
            (y0 + y1) / 2,
        )
        detection.bbox.size.x, detection.bbox.size.y = x1 - x0, y1 - y0
        array.detections.append(detection)
    return array


def test_yolo_ros_detections_keep_their_tracks_by_the_trackers_ids(ros):
    world = World(FRAME, **{"tracking.match_detection_ids": True})
    publisher = world.client.create_publisher(yolo_msgs.DetectionArray, "yolo_detections", RELIABLE)
    try:
        world.spin_until(lambda: publisher.get_subscription_count(), "the node's yolo subscription")
        items = list(OBJECTS.items())
        header = world.frame(40)
        publisher.publish(yolo_array(header, {"11": items[0], "12": items[1]}))
        answer = masks_on_objects(world, header, {"11", "12"})
        for instance, (_, box) in zip(answer.instances, items[:2], strict=True):
            assert_on(instance, box, tolerance=1.0)
        tracks = {i.id: i.track_id for i in answer.instances}
        # yolo_ros's tracker keeps its ids; the boxes moved far (no overlap with the old ones).
        later = world.frame(41)
        swapped = {"11": (items[0][0], items[2][1]), "12": items[1]}
        publisher.publish(yolo_array(later, swapped))
        answer = masks_on_objects(world, later, {"11", "12"})
        assert {i.id: i.track_id for i in answer.instances if i.origin == 0} == tracks
    finally:
        world.close()
