"""process-bag on recordings written with rosbags: the output recording read back and compared
with the Segmenter called directly on the same frames and boxes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rosbags")

from recordings import (
    CAMERA_INFO_TOPIC,
    DEPTH_MM,
    DEPTH_TOPIC,
    DETECTIONS_TOPIC,
    PROMPTS_TOPIC,
    Recording,
    write_recording,
)

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.everything import segment_everything
from mobilesam_ros.messages.readers import instance_full_mask, stamp_to_ns
from mobilesam_ros.tools.bag.outputs import OutputChoice
from mobilesam_ros.tools.bag.process import BagJob, StopRequest, process_bag
from mobilesam_ros.tools.bag.writing import read_progress

TRACKING_OFF = {"tracking.enabled": False}


@pytest.fixture
def segmenter(segmenters: dict) -> Any:
    return segmenters["onnxruntime"]


def read_outputs(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(log time, message)] of a recording, with every type from its own metadata."""
    from rosbags.highlevel import AnyReader

    topics: dict[str, list[tuple[int, Any]]] = {}
    with AnyReader([path]) as reader:  # no default store: the definitions must be embedded
        for connection, log_time, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            topics.setdefault(connection.topic, []).append((log_time, message))
    return topics


def direct_masks(segmenter: Any, recording: Recording, index: int) -> np.ndarray:
    return segmenter.segment(recording.frames[index], boxes=recording.boxes[index]).masks


def output_masks(message: Any) -> np.ndarray:
    return np.stack(
        [instance_full_mask(i, message.height, message.width) for i in message.instances]
    )


@pytest.mark.parametrize(("storage", "compressed"), [("mcap", False), ("sqlite3", True)])
def test_outputs_match_the_segmenter_called_directly(
    tmp_path: Path, segmenter: Any, storage: str, compressed: bool
) -> None:
    recording = write_recording(tmp_path / "in", frames=3, storage=storage, compressed=compressed)
    job = BagJob(recording.image_topic, DETECTIONS_TOPIC, parameters=TRACKING_OFF)
    report = process_bag(recording.path, tmp_path / "out", job, segmenter)
    assert report.complete and report.frames == 3 and not report.counters

    outputs = read_outputs(tmp_path / "out")
    assert set(outputs) == {
        "/mobilesam/masks",
        "/mobilesam/mask_image",
        "/mobilesam/detections_refined",
    }
    masks = outputs["/mobilesam/masks"]
    assert [stamp_to_ns(m.header.stamp) for _, m in masks] == recording.stamps
    # Recorded when their image was: the image's log time (5 ms after its stamp here).
    assert [t for t, _ in masks] == [s + 5_000_000 for s in recording.stamps]
    for index, (_, message) in enumerate(masks):
        assert message.header.frame_id == "camera"
        assert [i.id for i in message.instances] == ["car0", "car1", "car2"]
        np.testing.assert_array_equal(
            output_masks(message), direct_masks(segmenter, recording, index)
        )
        _, labels = outputs["/mobilesam/mask_image"][index]
        assert (labels.height, labels.width, labels.encoding) == (480, 640, "mono8")
        _, refined = outputs["/mobilesam/detections_refined"][index]
        assert [d.id for d in refined.detections] == ["car0", "car1", "car2"]
        assert refined.detections[0].results[0].hypothesis.class_id == "3"


def stopped_run(recording: Recording, output: Path, job: BagJob, segmenter: Any) -> Any:
    """process_bag asked to stop (as Ctrl-C does) after its second frame."""
    stop = StopRequest()
    return process_bag(
        recording.path,
        output,
        job,
        segmenter,
        progress=lambda total: StopAfter(stop, 2),
        stop=stop,
    )


class StopAfter:
    """A progress bar that asks the run to stop (as Ctrl-C does) after `frames` frames."""

    def __init__(self, stop: StopRequest, frames: int) -> None:
        self._stop, self._left = stop, frames

    def update(self, frames: int) -> None:
        self._left -= frames
        if self._left <= 0:
            self._stop.requested.set()

    def close(self) -> None:
        pass


def test_tracking_answers_every_frame_in_order_across_a_resume(
    tmp_path: Path, segmenter: Any
) -> None:
    recording = write_recording(tmp_path / "in", frames=4)
    job = BagJob(recording.image_topic, DETECTIONS_TOPIC)
    first = stopped_run(recording, tmp_path / "out", job, segmenter)
    second = process_bag(recording.path, tmp_path / "out", job, segmenter, resume=True)
    assert (first.frames, second.frames, second.complete) == (2, 2, True)
    assert read_progress(tmp_path / "out").frames_done == 4
    masks = read_outputs(tmp_path / "out")["/mobilesam/masks"]
    assert [stamp_to_ns(m.header.stamp) for _, m in masks] == recording.stamps
    # Tracks restart where the run resumed, under ids that never repeat the first part's.
    track_ids = [[i.track_id for i in m.instances] for _, m in masks]
    assert all(t.startswith("t") for ids in track_ids[:2] for t in ids)
    assert all(t.startswith("part2/t") for ids in track_ids[2:] for t in ids)


def test_prompts_and_depth(tmp_path: Path, segmenter: Any) -> None:
    recording = write_recording(tmp_path / "in", frames=2, prompts=True, depth=True)
    job = BagJob(
        recording.image_topic,
        prompts_topic=PROMPTS_TOPIC,
        depth_topic=DEPTH_TOPIC,
        camera_info_topic=CAMERA_INFO_TOPIC,
        outputs=OutputChoice(namespace="/labels", depth=True),
        parameters=TRACKING_OFF,
    )
    process_bag(recording.path, tmp_path / "out", job, segmenter)
    outputs = read_outputs(tmp_path / "out")
    for (_, masks), (_, boxes3d), (_, cloud) in zip(
        outputs["/labels/masks"],
        outputs["/labels/detections_3d"],
        outputs["/labels/instances_cloud"],
        strict=True,
    ):
        assert [i.id for i in masks.instances] == ["click"]
        assert len(boxes3d.detections) == 1
        assert boxes3d.detections[0].bbox.center.position.z == pytest.approx(
            DEPTH_MM / 1000, abs=0.01
        )
        assert cloud.width > 0 and cloud.header.stamp == masks.header.stamp
    # No detections topic: no refined detections for prompts (as the node).
    assert "/labels/detections_refined" not in outputs


def test_foxgloves_decoder_reads_every_output_from_the_embedded_definitions(
    tmp_path: Path, segmenter: Any
) -> None:
    """Foxglove's own MCAP reader and ROS 2 decoder (mcap, mcap-ros2-support), which know no
    message package: only the definitions the output carries."""
    pytest.importorskip("mcap_ros2")
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    recording = write_recording(tmp_path / "in", frames=1, depth=True)
    job = BagJob(
        recording.image_topic,
        DETECTIONS_TOPIC,
        depth_topic=DEPTH_TOPIC,
        camera_info_topic=CAMERA_INFO_TOPIC,
        outputs=OutputChoice(overlay=True, depth=True),
    )
    process_bag(recording.path, tmp_path / "out", job, segmenter)
    expected = read_outputs(tmp_path / "out")
    (path,) = (tmp_path / "out").glob("*.mcap")
    decoded = {}
    with path.open("rb") as file:
        reader = make_reader(file, decoder_factories=[DecoderFactory()])
        for schema, channel, _, message in reader.iter_decoded_messages():
            assert schema.encoding == "ros2msg"
            decoded[channel.topic] = message
    assert set(decoded) == set(expected) and len(decoded) == 6
    for topic, [(_, message)] in expected.items():
        assert decoded[topic].header.stamp.nanosec == message.header.stamp.nanosec
        assert decoded[topic].header.frame_id == "camera"
    masks = decoded["/mobilesam/masks"]
    assert [i.id for i in masks.instances] == ["car0", "car1", "car2"]
    assert bytes(masks.instances[0].mask.data) == bytes(
        expected["/mobilesam/masks"][0][1].instances[0].mask.data
    )
    cloud = decoded["/mobilesam/instances_cloud"]
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "label", "rgb"]


def test_everything_matches_the_core_on_each_frame(tmp_path: Path, segmenter: Any) -> None:
    recording = write_recording(tmp_path / "in", frames=2)
    # Random weights: with SAM's filters no mask would pass.
    parameters = {
        **TRACKING_OFF,
        "everything.points_per_side": 4,
        "everything.pred_iou_thresh": 0.0,
        "everything.stability_score_thresh": 0.0,
    }
    job = BagJob(
        recording.image_topic, outputs=OutputChoice(everything=True), parameters=parameters
    )
    process_bag(recording.path, tmp_path / "out", job, segmenter)
    outputs = read_outputs(tmp_path / "out")
    assert "/mobilesam/masks" not in outputs  # no prompts: nothing prompted
    settings = job.settings().everything
    for index, (_, message) in enumerate(outputs["/mobilesam/everything/masks"]):
        expected = segment_everything(segmenter, recording.frames[index], settings, "rgb")
        assert len(message.instances) == len(expected) > 0
        np.testing.assert_array_equal(
            output_masks(message), np.stack([m.crop.to_full() for m in expected])
        )


def test_stopped_run_is_valid_and_resumes_to_the_same_output(
    tmp_path: Path, segmenter: Any
) -> None:
    recording = write_recording(tmp_path / "in", frames=4)
    job = BagJob(recording.image_topic, DETECTIONS_TOPIC, parameters=TRACKING_OFF)
    first = stopped_run(recording, tmp_path / "out", job, segmenter)
    assert not first.complete and 2 <= first.frames < 4
    partial = read_outputs(tmp_path / "out")["/mobilesam/masks"]  # readable as it is
    assert len(partial) == first.frames
    assert not read_progress(tmp_path / "out").complete
    with pytest.raises(InvalidInputError, match="other options"):
        other = BagJob(recording.image_topic, DETECTIONS_TOPIC)
        process_bag(recording.path, tmp_path / "out", other, segmenter, resume=True)

    second = process_bag(recording.path, tmp_path / "out", job, segmenter, resume=True)
    assert second.complete and first.frames + second.frames == 4
    resumed = read_outputs(tmp_path / "out")["/mobilesam/masks"]
    process_bag(recording.path, tmp_path / "whole", job, segmenter)
    whole = read_outputs(tmp_path / "whole")["/mobilesam/masks"]
    assert [t for t, _ in resumed] == [t for t, _ in whole]
    for (_, a), (_, b) in zip(resumed, whole, strict=True):
        np.testing.assert_array_equal(output_masks(a), output_masks(b))
    with pytest.raises(InvalidInputError, match="complete"):
        process_bag(recording.path, tmp_path / "out", job, segmenter, resume=True)


def test_yolo_detections_read_with_the_recordings_own_definitions(
    tmp_path: Path, segmenter: Any
) -> None:
    recording = write_recording(tmp_path / "in", frames=1, yolo=True)
    job = BagJob(recording.image_topic, DETECTIONS_TOPIC, parameters=TRACKING_OFF)
    process_bag(recording.path, tmp_path / "out", job, segmenter)
    outputs = read_outputs(tmp_path / "out")
    ((_, masks),) = outputs["/mobilesam/masks"]
    assert [(i.id, i.class_id) for i in masks.instances] == [
        ("y0", "class0"),
        ("y1", "class1"),
        ("y2", "class2"),
    ]
    np.testing.assert_array_equal(output_masks(masks), direct_masks(segmenter, recording, 0))
    ((_, refined),) = outputs["/mobilesam/detections_refined"]
    assert refined.detections[1].results[0].hypothesis.class_id == "class1"


def test_a_burst_is_answered_whole_with_a_bounded_queue() -> None:
    """200 images logged at one instant (a recorder's burst): every one answered once, in order,
    with at most the frame cache's worth held back."""
    from doubles import BoxSegmenterDouble
    from recordings import detections_message

    from mobilesam_ros.core.settings import NodeSettings
    from mobilesam_ros.tools.bag import offline
    from mobilesam_ros.tools.bag.schemas import MessageFactory, typestore

    settings = NodeSettings.from_values({**NodeSettings().values(), **TRACKING_OFF}.__getitem__)
    stream = offline.OfflineStream(BoxSegmenterDouble(), settings)
    image = MessageFactory(typestore(), "sensor_msgs/msg/Image")
    answered, most_waiting = [], 0
    for index in range(200):
        header = MessageFactory(typestore(), "std_msgs/msg/Header")(frame_id="camera")
        header.stamp.sec = 100 + index
        pixels = np.zeros(48 * 64 * 3, np.uint8)
        answered += [a for answers in stream.advance(5.0) for a in answers]
        stream.add(
            offline.IMAGE,
            5 * 10**9,
            image(header=header, height=48, width=64, encoding="rgb8", step=192, data=pixels),
            "sensor_msgs/msg/Image",
        )
        stream.add(
            offline.DETECTIONS,
            5 * 10**9,
            detections_message(header, np.array([[4.0, 4, 30, 30]])),
            "vision_msgs/msg/Detection2DArray",
        )
        most_waiting = max(most_waiting, stream.frames_waiting)
    answered += [a for answers in stream.advance(float("inf")) for a in answers]
    assert [a.result.frame.stamp_ns // 10**9 for a in answered] == list(range(100, 300))
    assert most_waiting <= settings.sync.cache_size + 1
    assert not stream.counters()


def test_unknown_topic_lists_the_recording(tmp_path: Path, segmenter: Any) -> None:
    recording = write_recording(tmp_path / "in", frames=1)
    with pytest.raises(
        InvalidInputError, match=r"(?s)no such topic.*/camera/image_raw.*sensor_msgs/msg/Image"
    ):
        process_bag(
            recording.path, tmp_path / "out", BagJob("/camera/color", DETECTIONS_TOPIC), segmenter
        )
    with pytest.raises(InvalidInputError, match="expected sensor_msgs"):
        process_bag(
            recording.path, tmp_path / "out", BagJob(DETECTIONS_TOPIC, DETECTIONS_TOPIC), segmenter
        )


def test_unsupported_encoding_is_counted_and_skipped(tmp_path: Path, segmenter: Any) -> None:
    recording = write_recording(tmp_path / "in", frames=3, bad_frames=(1,))
    job = BagJob(recording.image_topic, DETECTIONS_TOPIC, parameters=TRACKING_OFF)
    report = process_bag(recording.path, tmp_path / "out", job, segmenter)
    assert report.counters["images_rejected"] == 1
    # The bad frame's detections waited for an image that never came: counted as the node does.
    assert report.counters["prompts_timed_out_waiting_for_image"] == 3
    masks = read_outputs(tmp_path / "out")["/mobilesam/masks"]
    assert [stamp_to_ns(m.header.stamp) for _, m in masks] == recording.stamps


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_recording_is_read_up_to_the_damage(
    tmp_path: Path, segmenter: Any, storage: str
) -> None:
    recording = write_recording(tmp_path / "in", frames=5, storage=storage)
    (data,) = [p for p in recording.path.iterdir() if p.suffix in (".mcap", ".db3")]
    data.write_bytes(data.read_bytes()[: int(data.stat().st_size * 0.6)])
    job = BagJob(recording.image_topic, DETECTIONS_TOPIC, parameters=TRACKING_OFF)
    report = process_bag(recording.path, tmp_path / "out", job, segmenter)
    assert report.damage and report.complete
    assert 1 <= report.frames < 5
    masks = read_outputs(tmp_path / "out")["/mobilesam/masks"]
    assert [stamp_to_ns(m.header.stamp) for _, m in masks] == recording.stamps[: len(masks)]
    for index, (_, message) in enumerate(masks):
        np.testing.assert_array_equal(
            output_masks(message), direct_masks(segmenter, recording, index)
        )


def test_a_bare_mcap_file_is_read_whole(tmp_path: Path, segmenter: Any) -> None:
    recording = write_recording(tmp_path / "in", frames=2)
    (data,) = recording.path.glob("*.mcap")
    bare = tmp_path / "camera.mcap"
    bare.write_bytes(data.read_bytes())  # as `ros2 bag record` leaves it without metadata.yaml
    job = BagJob(recording.image_topic, DETECTIONS_TOPIC, parameters=TRACKING_OFF)
    report = process_bag(bare, tmp_path / "out", job, segmenter)
    assert report.complete and report.damage is None and report.frames == 2
    masks = read_outputs(tmp_path / "out")["/mobilesam/masks"]
    for index, (_, message) in enumerate(masks):
        np.testing.assert_array_equal(
            output_masks(message), direct_masks(segmenter, recording, index)
        )


def test_coco_annotations_decode_to_the_output_masks(tmp_path: Path, segmenter: Any) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools import mask as coco_mask

    from mobilesam_ros.tools.bag.coco import CocoWriter

    recording = write_recording(tmp_path / "in", frames=2)
    job = BagJob(recording.image_topic, DETECTIONS_TOPIC, parameters=TRACKING_OFF)
    coco = CocoWriter(tmp_path / "coco.json", tmp_path / "images")
    process_bag(recording.path, tmp_path / "out", job, segmenter, coco=coco)
    document = json.loads((tmp_path / "coco.json").read_text())
    assert {c["id"]: c["name"] for c in document["categories"]} == {3: "3", 4: "4"}
    masks = read_outputs(tmp_path / "out")["/mobilesam/masks"]
    for image, (_, message) in zip(document["images"], masks, strict=True):
        assert image["stamp_ns"] == stamp_to_ns(message.header.stamp)
        assert (tmp_path / "images" / image["file_name"]).is_file()
        annotations = [a for a in document["annotations"] if a["image_id"] == image["id"]]
        decoded = np.stack([coco_mask.decode(a["segmentation"]) for a in annotations]).astype(bool)
        np.testing.assert_array_equal(decoded, output_masks(message))
        assert [a["category_id"] for a in annotations] == [3, 4, 3]
