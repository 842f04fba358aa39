"""Pre- and post-processing against SAM's own transforms (PyTorch used here as the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import photo

from mobilesam_ros.core.processing.postprocess import masks_from_logits
from mobilesam_ros.core.processing.preprocess import FrameGeometry, ImagePreprocessor, resized_shape

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


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_preprocessing_matches_sam(name):
    from mobile_sam.modeling import Sam  # noqa: F401  (only to be sure the oracle is present)

    image = photo(name)
    ours, geometry = ImagePreprocessor()(image)
    resized = ResizeLongestSide(1024).apply_image(image)
    assert resized.shape[:2] == geometry.input_size
    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    x = (torch.from_numpy(resized).permute(2, 0, 1).float() - mean) / std
    x = F.pad(x, (0, 1024 - x.shape[2], 0, 1024 - x.shape[1]))[None].numpy()
    assert ours.shape == x.shape == (1, 3, 1024, 1024)
    nh, nw = geometry.input_size
    assert not ours[..., nh:, :].any() and not ours[..., nw:].any()  # padding is exactly zero
    # OpenCV and PIL round bilinear weights differently: at most 1 grey level apart.
    assert np.abs(ours - x).max() <= 1.01 / 57.12
    assert np.abs(ours - x).mean() < 0.5 / 57.12


def test_preprocessor_reuses_buffers_and_handles_size_changes():
    preprocess = ImagePreprocessor()
    first, _ = preprocess(np.full((480, 640, 3), 255, np.uint8))
    second, geometry = preprocess(np.full((240, 640, 3), 255, np.uint8))
    assert second is first  # no per-frame allocation
    assert geometry.input_size == (384, 1024)
    assert not second[..., 384:, :].any()  # rows left over from the taller frame were cleared
