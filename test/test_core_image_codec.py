"""Raw and compressed camera buffers -> pixels the model reads, and clear errors for bad ones."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import photo

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.image_codec import (
    check_raw_image,
    decode_compressed_image,
    decode_raw_image,
)
from mobilesam_ros.core.processing.preprocess import ImagePreprocessor

RGB = np.ascontiguousarray(photo("coffee")[:120, :160])  # a real photo crop, 160x120


def test_rgb_and_bgr_are_views_and_preprocess_identically():
    bgr = np.ascontiguousarray(RGB[..., ::-1])
    rgb_image = decode_raw_image(RGB.tobytes(), 120, 160, 480, "rgb8")
    bgr_image = decode_raw_image(bgr.tobytes(), 120, 160, 480, "bgr8")
    assert rgb_image.channel_order == "rgb" and bgr_image.channel_order == "bgr"
    buffer = bytearray(RGB.tobytes())
    view = decode_raw_image(buffer, 120, 160, 480, "rgb8").pixels
    buffer[0] = 7
    assert view[0, 0, 0] == 7  # no copy of the message data
    a, _ = ImagePreprocessor()(rgb_image.pixels, "rgb")
    b, _ = ImagePreprocessor()(bgr_image.pixels, "bgr")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(bgr_image.to_bgr(), bgr)


def test_padded_rows_and_alpha():
    step = 160 * 4 + 64
    rows = np.zeros((120, step), np.uint8)
    rgba = np.dstack([RGB, np.full((120, 160), 255, np.uint8)])
    rows[:, : 160 * 4] = rgba.reshape(120, -1)
    image = decode_raw_image(rows.tobytes(), 120, 160, step, "rgba8")
    np.testing.assert_array_equal(image.pixels[..., :3], RGB)
    a, _ = ImagePreprocessor()(image.pixels, "rgba")
    b, _ = ImagePreprocessor()(RGB, "rgb")
    np.testing.assert_array_equal(a, b)


def test_mono_and_yuv_encodings():
    gray = cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)
    mono = decode_raw_image(gray.tobytes(), 120, 160, 160, "mono8")
    np.testing.assert_array_equal(mono.pixels[..., 0], gray)
    wide = (gray.astype(np.uint16) * 4).astype(">u2")
    mono16 = decode_raw_image(wide.tobytes(), 120, 160, 320, "mono16", is_bigendian=True)
    assert mono16.pixels.shape == (120, 160, 3) and mono16.pixels.max() == 255
    # Flat grey in YUYV (Y=128, U=V=128) and UYVY byte orders.
    grey = np.full((120, 80, 4), 128, np.uint8)
    for encoding in ("yuv422_yuy2", "yuv422"):
        decoded = decode_raw_image(grey.tobytes(), 120, 160, 320, encoding)
        assert decoded.pixels.shape == (120, 160, 3) and decoded.channel_order == "bgr"
        assert np.abs(decoded.pixels.astype(int) - 128).max() <= 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((100, 120, 160, 480, "rgb8"), "fewer than step x height"),
        ((57600, 120, 160, 480, "rgb16"), "unsupported image encoding"),
        ((0, 0, 160, 480, "rgb8"), "empty"),
        ((57600, 120, 160, 100, "rgb8"), "step 100 is smaller"),
        ((38400, 120, 159, 320, "yuv422"), "even width"),
    ],
)
def test_bad_buffers_are_explained(args, message):
    with pytest.raises(InvalidInputError, match=message):
        check_raw_image(*args)
    with pytest.raises(InvalidInputError, match=message):
        decode_raw_image(bytes(args[0]), *args[1:])


def test_compressed_images():
    _, jpeg = cv2.imencode(".jpg", RGB[..., ::-1])
    image = decode_compressed_image(jpeg.tobytes())
    assert image.pixels.shape == (120, 160, 3) and image.channel_order == "bgr"
    assert np.abs(image.pixels.astype(int) - RGB[..., ::-1]).mean() < 8
    with pytest.raises(InvalidInputError, match="cannot decode"):
        decode_compressed_image(b"not an image at all")
    with pytest.raises(InvalidInputError, match="empty"):
        decode_compressed_image(b"")
