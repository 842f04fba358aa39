"""Recordings for the bag tools' tests, written with rosbags as a robot's recorder would:
a camera at 10 Hz (raw or JPEG), a detector whose boxes arrive 60 ms after their image,
optionally prompts, registered depth and camera_info."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from helpers import camera_frame

from mobilesam_ros.tools.bag.schemas import typestore

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
DETECTIONS_TOPIC = "/detector/detections"
PROMPTS_TOPIC = "/operator/prompts"
DEPTH_TOPIC = "/camera/depth/image_rect_raw"
CAMERA_INFO_TOPIC = "/camera/color/camera_info"
START_NS = 1_700_000_000_000_000_000
FRAME_NS = 100_000_000  # 10 Hz
DETECTOR_DELAY_NS = 60_000_000
DEPTH_MM = 2000
YOLO_MSGS = Path(__file__).parent / "message_packages" / "yolo_msgs" / "msg"


@dataclass
class Recording:
    path: Path
    frames: list[np.ndarray]  # RGB as sent (raw) or as decoded from the JPEG (compressed)
    stamps: list[int]
    boxes: list[np.ndarray]  # per frame: (N, 4) x0, y0, x1, y1 in pixels
    image_topic: str = IMAGE_TOPIC
    bad_frames: list[int] = field(default_factory=list)  # sent with an unsupported encoding


def process_bag_arguments(
    recording: Recording, output: Path, checkpoint: Path, cache: Path
) -> list[str]:
    """`process-bag`'s command line for a recording of this module, tracking off, on the CPU
    with ONNX Runtime (what follows `mobilesam-ros`)."""
    return [
        "process-bag",
        str(recording.path),
        "--output",
        str(output),
        "--image-topic",
        recording.image_topic,
        "--detections-topic",
        DETECTIONS_TOPIC,
        "--checkpoint",
        str(checkpoint),
        "--cache-dir",
        str(cache),
        "--backend",
        "onnxruntime",
        "--device",
        "cpu",
        "--param",
        "tracking.enabled=false",
    ]


def _moving_boxes(index: int, width: int, height: int, objects: int) -> np.ndarray:
    """`objects` boxes (the first three fixed, the others spread by a seeded generator) that
    drift right by 4 px per frame."""
    base = np.array(
        [[60, 80, 220, 300], [300, 60, 460, 240], [380, 260, 600, 460]], dtype=np.float64
    )[:objects]
    extra = objects - len(base)
    if extra > 0:
        rng = np.random.default_rng(0)
        x0, y0 = rng.uniform(0, width * 0.7, extra), rng.uniform(0, height * 0.7, extra)
        size = rng.uniform(60, 200, (extra, 2))
        base = np.concatenate([base, np.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], 1)])
    boxes = base.copy()
    boxes[:, [0, 2]] += 4 * index
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height - 1)
    return boxes


def write_recording(
    path: Path,
    frames: int = 4,
    size: tuple[int, int] = (480, 640),
    storage: str = "mcap",
    compressed: bool = False,
    prompts: bool = False,
    depth: bool = False,
    bad_frames: tuple[int, ...] = (),
    objects: int = 3,
    yolo: bool = False,
) -> Recording:
    """A rosbag2 folder at `path` (storage "mcap" or "sqlite3"); yolo: the detector is
    yolo_ros (yolo_msgs/DetectionArray, a type only the recording's own definitions name)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = yolo_typestore() if yolo else typestore()
    detections_type = "yolo_msgs/msg/DetectionArray" if yolo else "vision_msgs/msg/Detection2DArray"
    types = store.types
    height, width = size
    scene = camera_frame(height, width + 4 * frames)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    recording = Recording(path, [], [], [], COMPRESSED_TOPIC if compressed else IMAGE_TOPIC)
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        connections = {
            recording.image_topic: writer.add_connection(
                recording.image_topic, image_type, typestore=store
            ),
            DETECTIONS_TOPIC: writer.add_connection(
                DETECTIONS_TOPIC, detections_type, typestore=store
            ),
        }
        if prompts:
            connections[PROMPTS_TOPIC] = writer.add_connection(
                PROMPTS_TOPIC, "mobilesam_ros/msg/PromptArray", typestore=store
            )
        if depth:
            connections[DEPTH_TOPIC] = writer.add_connection(
                DEPTH_TOPIC, "sensor_msgs/msg/Image", typestore=store
            )
            connections[CAMERA_INFO_TOPIC] = writer.add_connection(
                CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=store
            )

        def write(topic: str, log_time: int, message: object, kind: str) -> None:
            writer.write(connections[topic], log_time, store.serialize_cdr(message, kind))

        for index in range(frames):
            stamp = START_NS + index * FRAME_NS
            header = types["std_msgs/msg/Header"](
                types["builtin_interfaces/msg/Time"](stamp // 10**9, stamp % 10**9), "camera"
            )
            rgb = np.ascontiguousarray(scene[:, 4 * index : 4 * index + width])
            if compressed:
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                assert ok
                message = types[image_type](header, "jpeg", jpeg.reshape(-1))
                rgb = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            else:
                encoding = "bayer_rggb8" if index in bad_frames else "rgb8"
                message = types[image_type](
                    header, height, width, encoding, 0, width * 3, rgb.reshape(-1)
                )
            write(recording.image_topic, stamp + 5_000_000, message, image_type)
            if index in bad_frames:
                recording.bad_frames.append(index)
            else:
                recording.frames.append(rgb)
                recording.stamps.append(stamp)
            boxes = _moving_boxes(index, width, height, objects)
            recording.boxes.append(boxes)
            detections = (
                yolo_detections_message(store, header, boxes)
                if yolo
                else detections_message(header, boxes)
            )
            write(DETECTIONS_TOPIC, stamp + DETECTOR_DELAY_NS, detections, detections_type)
            if prompts:
                write(
                    PROMPTS_TOPIC,
                    stamp + DETECTOR_DELAY_NS + 1,
                    prompt_message(header, (int(boxes[0, 0]) + 40, int(boxes[0, 1]) + 60)),
                    "mobilesam_ros/msg/PromptArray",
                )
            if depth:
                depth_image = np.full((height, width), DEPTH_MM, np.uint16)
                write(
                    DEPTH_TOPIC,
                    stamp + 8_000_000,
                    types["sensor_msgs/msg/Image"](
                        header,
                        height,
                        width,
                        "16UC1",
                        0,
                        width * 2,
                        depth_image.view(np.uint8).reshape(-1),
                    ),
                    "sensor_msgs/msg/Image",
                )
                write(
                    CAMERA_INFO_TOPIC,
                    stamp + 8_000_001,
                    camera_info(header, width, height),
                    "sensor_msgs/msg/CameraInfo",
                )
    return recording


def detections_message(header: object, boxes: np.ndarray) -> object:
    from mobilesam_ros.tools.bag.schemas import bag_message_types

    types = bag_message_types()
    detections = []
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        detection = types.detection_2d(header=header, id=f"car{index}")
        detection.bbox.center.position.x = float(x0 + x1) / 2
        detection.bbox.center.position.y = float(y0 + y1) / 2
        detection.bbox.size_x, detection.bbox.size_y = float(x1 - x0), float(y1 - y0)
        hypothesis = types.hypothesis_with_pose()
        hypothesis.hypothesis.class_id = str(index % 2 + 3)
        hypothesis.hypothesis.score = 0.9
        detection.results = [hypothesis]
        detections.append(detection)
    return types.detection_2d_array(header=header, detections=detections)


def yolo_typestore() -> Any:
    """The bag tools' types and yolo_ros's (from the tests' yolo_msgs package)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    types = dict(typestore().fielddefs)
    for path in sorted(YOLO_MSGS.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"yolo_msgs/msg/{path.stem}"))
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    return store


def yolo_detections_message(store: Any, header: object, boxes: np.ndarray) -> object:
    from mobilesam_ros.tools.bag.schemas import MessageFactory

    detections = []
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        detection = MessageFactory(store, "yolo_msgs/msg/Detection")(
            class_id=index, class_name=f"class{index}", score=0.8, id=f"y{index}"
        )
        detection.bbox.center.position.x = float(x0 + x1) / 2
        detection.bbox.center.position.y = float(y0 + y1) / 2
        detection.bbox.size.x, detection.bbox.size.y = float(x1 - x0), float(y1 - y0)
        detections.append(detection)
    return MessageFactory(store, "yolo_msgs/msg/DetectionArray")(
        header=header, detections=detections
    )


def prompt_message(header: object, point: tuple[int, int]) -> object:
    from mobilesam_ros.tools.bag.schemas import MessageFactory

    store = typestore()
    prompt = MessageFactory(store, "mobilesam_ros/msg/Prompt")(
        id="click",
        points=[
            MessageFactory(store, "geometry_msgs/msg/Point")(x=float(point[0]), y=float(point[1]))
        ],
        point_labels=np.array([1], np.uint8),
    )
    return MessageFactory(store, "mobilesam_ros/msg/PromptArray")(header=header, prompts=[prompt])


def camera_info(header: object, width: int, height: int) -> object:
    from mobilesam_ros.tools.bag.schemas import MessageFactory

    focal = 500.0
    k = np.array([focal, 0, width / 2, 0, focal, height / 2, 0, 0, 1], np.float64)
    return MessageFactory(typestore(), "sensor_msgs/msg/CameraInfo")(
        header=header, width=width, height=height, k=k, distortion_model="plumb_bob"
    )
