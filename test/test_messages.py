"""mobilesam_ros/messages without ROS: readers take a uint8[] `data` field as bytes, array.array
(rclpy) or a numpy uint8 array (rosbags); builders build from whatever message classes they are
given, here stand-ins made like rosbags' dataclasses, with numpy data."""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest

from mobilesam_ros.core.prompts import Prompt, PromptMask
from mobilesam_ros.messages.builders import MessageTypes, image_message, instance_mask_array
from mobilesam_ros.messages.readers import (
    camera_from_info,
    decode_image_message,
    depth_from_message,
    instance_full_mask,
)

# How a uint8[] field arrives: rclpy's messages hold array.array, rosbags' numpy uint8 arrays.
DATA_KINDS = {
    "bytes": bytes,
    "array.array": lambda raw: array.array("B", raw),
    "numpy": lambda raw: np.frombuffer(raw, np.uint8),
}


def _no_data() -> np.ndarray:
    return np.zeros(0, np.uint8)


@dataclass
class Image:
    header: Any = None
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: int = 0
    step: int = 0
    data: Any = field(default_factory=_no_data)


@dataclass
class CompressedImage:
    header: Any = None
    format: str = ""
    data: Any = field(default_factory=_no_data)


@dataclass
class RegionOfInterest:
    x_offset: int = 0
    y_offset: int = 0
    height: int = 0
    width: int = 0
    do_rectify: bool = False


@dataclass
class InstanceMask:
    id: str = ""
    track_id: str = ""
    label: int = 0
    origin: int = 0
    class_id: str = ""
    detection_score: float = 0.0
    predicted_iou: float = 0.0
    roi: RegionOfInterest = field(default_factory=RegionOfInterest)
    mask: Image = field(default_factory=Image)


@dataclass
class InstanceMaskArray:
    header: Any = None
    height: int = 0
    width: int = 0
    instances: list = field(default_factory=list)


def _unused(**fields: Any) -> Any:
    raise AssertionError("not built by these tests")


def _numpy_view(values: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array as a uint8 view, as a rosbags uint8[] field holds them."""
    return values.reshape(-1).view(np.uint8)


# The 3D classes: the masks and images here never build them.
NOT_BUILT = (
    "point_cloud2",
    "point_field",
    "pose",
    "point",
    "quaternion",
    "vector3",
    "color_rgba",
    "marker",
    "marker_array",
)
STAND_INS = MessageTypes(
    image=Image,
    region_of_interest=RegionOfInterest,
    instance_mask=InstanceMask,
    instance_mask_array=InstanceMaskArray,
    byte_data=_numpy_view,
    **dict.fromkeys(NOT_BUILT, _unused),
)


@pytest.mark.parametrize("kind", DATA_KINDS)
def test_raw_and_compressed_images_decode_from_every_data_kind(kind: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3), np.uint8)
    raw = Image(height=6, width=5, encoding="rgb8", step=16)
    raw.data = DATA_KINDS[kind](np.pad(pixels.reshape(6, 15), ((0, 0), (0, 1))).tobytes())
    decoded = decode_image_message(raw)
    assert decoded.channel_order == "rgb"
    np.testing.assert_array_equal(decoded.pixels, pixels)
    png = cv2.imencode(".png", pixels)[1].tobytes()
    compressed = CompressedImage(format="png", data=DATA_KINDS[kind](png))
    decoded = decode_image_message(compressed)
    assert decoded.channel_order == "bgr"
    np.testing.assert_array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("kind", DATA_KINDS)
def test_depth_reads_from_every_data_kind(kind: str) -> None:
    millimetres = np.array([[0, 1000, 2500], [500, 0, 65535]], np.uint16)
    message = Image(height=2, width=3, encoding="16UC1", step=6)
    message.data = DATA_KINDS[kind](millimetres.astype("<u2").tobytes())
    depth = depth_from_message(message)
    np.testing.assert_array_equal(depth.raw, millimetres)
    assert depth.scale == 0.001


def test_camera_info_reads_k_as_a_numpy_array() -> None:
    k = np.array([500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0])
    info = type("CameraInfo", (), {"k": k, "width": 640, "height": 480})()
    camera = camera_from_info(info)
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (500.0, 510.0, 320.0, 240.0)


@pytest.mark.parametrize("kind", DATA_KINDS)
def test_masks_built_with_numpy_data_read_back_from_every_data_kind(kind: str) -> None:
    mask = np.zeros((12, 20), bool)
    mask[3:9, 5:16] = True
    result = PromptMask.from_mask(Prompt(id="p0", class_id="cup"), mask, 0.9, None)
    array_message = instance_mask_array(STAND_INS, "header", [result], mask.shape)
    (instance,) = array_message.instances
    assert isinstance(instance.mask.data, np.ndarray) and instance.mask.data.dtype == np.uint8
    assert (instance.id, instance.class_id, instance.label) == ("p0", "cup", 1)
    assert (instance.roi.x_offset, instance.roi.y_offset) == (5, 3)
    instance.mask.data = DATA_KINDS[kind](bytes(instance.mask.data))
    np.testing.assert_array_equal(instance_full_mask(instance, 12, 20), mask)


def test_image_message_keeps_uint16_pixels_as_their_bytes() -> None:
    labels = np.arange(12, dtype=np.uint16).reshape(3, 4)
    message = image_message(STAND_INS, "header", labels, "mono16")
    assert (message.height, message.width, message.step) == (3, 4, 8)
    np.testing.assert_array_equal(message.data.view("<u2").reshape(3, 4), labels)
