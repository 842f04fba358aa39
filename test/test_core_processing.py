"""Pre- and post-processing against SAM's own transforms (PyTorch used here as the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import camera_frame, photo
from PIL import Image

from mobilesam_ros.core.processing.postprocess import masks_from_logits
from mobilesam_ros.core.processing.preprocess import (
    FrameGeometry,
    ImagePreprocessor,
    resize_like_sam,
    resized_shape,
)

torch = pytest.importorskip("torch")
segment_anything = pytest.importorskip("segment_anything")
F = torch.nn.functional
from segment_anything.utils.transforms import ResizeLongestSide  # noqa: E402

GEOMETRIES = [(480, 640), (640, 480), (300, 451), (1024, 1024), (1080, 1920), (17, 5), (1, 1)]


def _sam_upscale(logits: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """SAM's postprocess_masks: 256 -> 1024, crop the padding, resize to the original size."""
    x = torch.from_numpy(logits)[None]
    x = F.interpolate(x, (1024, 1024), mode="bilinear", align_corners=False)
    nh, nw = geometry.input_size
    x = F.interpolate(
        x[..., :nh, :nw], geometry.original_size, mode="bilinear", align_corners=False
    )
    return x[0].numpy()


@pytest.mark.parametrize("size", GEOMETRIES)
def test_masks_match_sam_postprocessing(size):
    rng = np.random.default_rng(1)
    geometry = FrameGeometry.for_image(*size)
    # Smooth logits with sign changes everywhere, like real mask logits.
    logits = rng.standard_normal((3, 32, 32)).astype(np.float32)
    logits = F.interpolate(torch.from_numpy(logits)[None], (256, 256), mode="bilinear")[0].numpy()
    reference = _sam_upscale(logits, geometry)
    masks = masks_from_logits(logits, geometry, threshold=0.0)
    assert masks.shape == (3, *size) and masks.dtype == bool
    differ = masks != (reference > 0)
    # Disagreement only where the reference is on the threshold within float rounding.
    assert np.all(np.abs(reference[differ]) < 1e-4), np.abs(reference[differ]).max()
    masks = masks_from_logits(logits, geometry, threshold=0.5)
    assert np.all(np.abs(reference[masks != (reference > 0.5)] - 0.5) < 1e-4)


@pytest.mark.parametrize("size", GEOMETRIES)
def test_resized_shape_matches_sam(size):
    assert resized_shape(*size) == ResizeLongestSide.get_preprocess_shape(*size, 1024)


def test_prompt_scale_matches_sam():
    transform = ResizeLongestSide(1024)
    coords = np.array([[10.0, 20.0], [639.0, 479.0]])
    geometry = FrameGeometry.for_image(480, 640)
    np.testing.assert_allclose(
        coords * geometry.scale_xy, transform.apply_coords(coords, (480, 640))
    )


# Camera sizes (downscaled, antialiased) and photos of at most 1024 px (upscaled).
FRAME_SIZES = [(720, 1280), (1080, 1920), (1080, 810), (960, 1280), (480, 640)]


def _official_resize(image: np.ndarray) -> np.ndarray:
    return ResizeLongestSide(1024).apply_image(image)


@pytest.mark.parametrize("size", FRAME_SIZES)
@pytest.mark.parametrize("order", ["rgb", "bgr", "rgba", "bgra"])
def test_resize_matches_pillow_in_every_channel_order(size, order):
    rgb = camera_frame(*size)
    reference = np.asarray(Image.fromarray(rgb).resize(resized_shape(*size)[::-1], Image.BILINEAR))
    alpha = np.arange(rgb.size // 3, dtype=np.uint8).reshape(*size, 1)  # alpha must not leak
    layout = {"rgb": rgb, "bgr": rgb[..., ::-1], "rgba": np.concatenate([rgb, alpha], 2)}
    layout["bgra"] = np.concatenate([rgb[..., ::-1], alpha], 2)
    resized = resize_like_sam(layout[order], resized_shape(*size))
    picked = resized[..., [order.index(c) for c in "rgb"]].astype(np.int16)
    difference = np.abs(picked - reference)
    # Shrinking is Pillow itself; enlarging rounds bilinear weights as OpenCV does.
    mean_limit = 0.3 if size[1] < 1024 else 0.0
    assert difference.max() <= 1 and difference.mean() <= mean_limit, (
        difference.max(),
        difference.mean(),
    )


@pytest.mark.parametrize(
    "image",
    [photo("astronaut"), photo("coffee"), *(camera_frame(*s) for s in FRAME_SIZES)],
    ids=["astronaut", "coffee", *(f"{w}x{h}" for h, w in FRAME_SIZES)],
)
def test_preprocessing_matches_sam(image):
    ours, geometry = ImagePreprocessor()(image)
    resized = _official_resize(image)
    assert resized.shape[:2] == geometry.input_size
    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    x = (torch.from_numpy(resized).permute(2, 0, 1).float() - mean) / std
    x = F.pad(x, (0, 1024 - x.shape[2], 0, 1024 - x.shape[1]))[None].numpy()
    assert ours.shape == x.shape == (1, 3, 1024, 1024)
    nh, nw = geometry.input_size
    assert not ours[..., nh:, :].any() and not ours[..., nw:].any()  # padding is exactly zero
    # Same filter as SAM's: at most 1 grey level apart; equal where the image is shrunk.
    grey_level = 1.0 / 57.12
    enlarged = max(image.shape[:2]) < 1024
    assert np.abs(ours - x).max() <= 1.01 * grey_level
    assert np.abs(ours - x).mean() <= (0.3 if enlarged else 0.001) * grey_level


def test_preprocessor_reuses_buffers_and_handles_size_changes():
    preprocess = ImagePreprocessor()
    first, _ = preprocess(np.full((480, 640, 3), 255, np.uint8))
    second, geometry = preprocess(np.full((240, 640, 3), 255, np.uint8))
    assert second is first  # no per-frame allocation
    assert geometry.input_size == (384, 1024)
    assert not second[..., 384:, :].any()  # rows left over from the taller frame were cleared
