"""Pre- and post-processing against SAM's own transforms (PyTorch used here as the reference)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import camera_frame, photo
from PIL import Image

from mobilesam_ros.core.processing.postprocess import (
    MaskCrop,
    mask_box,
    mask_crops_from_logits,
    masks_from_logits,
)
from mobilesam_ros.core.processing.preprocess import (
    FrameGeometry,
    ImagePreprocessor,
    resize_like_sam,
    resized_shape,
    shrink_rows,
)


@pytest.fixture
def torch():
    """PyTorch, the reference of SAM's transforms (tests using it skip without it)."""
    return pytest.importorskip("torch")


@pytest.fixture
def resize_longest_side(torch):
    pytest.importorskip("segment_anything")
    from segment_anything.utils.transforms import ResizeLongestSide

    return ResizeLongestSide


GEOMETRIES = [(480, 640), (640, 480), (300, 451), (1024, 1024), (1080, 1920), (17, 5), (1, 1)]


def _sam_upscale(logits: np.ndarray, geometry: FrameGeometry, torch) -> np.ndarray:
    """SAM's postprocess_masks: 256 -> 1024, crop the padding, resize to the original size."""
    x = torch.from_numpy(logits)[None]
    x = torch.nn.functional.interpolate(x, (1024, 1024), mode="bilinear", align_corners=False)
    nh, nw = geometry.input_size
    x = torch.nn.functional.interpolate(
        x[..., :nh, :nw], geometry.original_size, mode="bilinear", align_corners=False
    )
    return x[0].numpy()


@pytest.mark.parametrize("size", GEOMETRIES)
def test_masks_match_sam_postprocessing(size, torch):
    rng = np.random.default_rng(1)
    geometry = FrameGeometry.for_image(*size)
    # Smooth logits with sign changes everywhere, like real mask logits.
    logits = rng.standard_normal((3, 32, 32)).astype(np.float32)
    upscale = torch.nn.functional.interpolate
    logits = upscale(torch.from_numpy(logits)[None], (256, 256), mode="bilinear")[0].numpy()
    reference = _sam_upscale(logits, geometry, torch)
    masks = masks_from_logits(logits, geometry, threshold=0.0)
    assert masks.shape == (3, *size) and masks.dtype == bool
    differ = masks != (reference > 0)
    # Disagreement only where the reference is on the threshold within float rounding.
    assert np.all(np.abs(reference[differ]) < 1e-4), np.abs(reference[differ]).max()
    masks = masks_from_logits(logits, geometry, threshold=0.5)
    assert np.all(np.abs(reference[masks != (reference > 0.5)] - 0.5) < 1e-4)


@pytest.mark.parametrize("size", GEOMETRIES)
def test_resized_shape_matches_sam(size, resize_longest_side):
    assert resized_shape(*size) == resize_longest_side.get_preprocess_shape(*size, 1024)


def test_prompt_scale_matches_sam(resize_longest_side):
    transform = resize_longest_side(1024)
    coords = np.array([[10.0, 20.0], [639.0, 479.0]])
    geometry = FrameGeometry.for_image(480, 640)
    np.testing.assert_allclose(
        coords * geometry.scale_xy, transform.apply_coords(coords, (480, 640))
    )


# Camera sizes (downscaled, antialiased) and photos of at most 1024 px (upscaled).
FRAME_SIZES = [(720, 1280), (1080, 1920), (1080, 810), (960, 1280), (480, 640)]


def _official_resize(image: np.ndarray, resize_longest_side) -> np.ndarray:
    return resize_longest_side(1024).apply_image(image)


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


@pytest.mark.parametrize("size", [(1080, 1920), (720, 1280), (1079, 1919), (1501, 2000)])
@pytest.mark.parametrize("bands", [2, 3, 7])
def test_shrink_in_row_bands_matches_one_pillow_call(size, bands):
    rgb = camera_frame(*size)
    target = resized_shape(*size)
    reference = np.asarray(Image.fromarray(rgb).resize(target[::-1], Image.BILINEAR))
    edges = [target[0] * k // bands for k in range(bands + 1)]
    pieces = [shrink_rows(rgb, target, y0, y1) for y0, y1 in itertools.pairwise(edges)]
    difference = np.abs(np.concatenate(pieces).astype(np.int16) - reference)
    if size in ((1080, 1920), (720, 1280)):  # scale 15/8 and 5/4: the band boxes are exact
        assert not difference.any()
    # Elsewhere a band's box moves Pillow's weights by float rounding: rarely 1 grey level.
    assert difference.max() <= 1 and np.count_nonzero(difference) <= 1e-3 * difference.size


@pytest.mark.parametrize(
    "image",
    [photo("astronaut"), photo("coffee"), *(camera_frame(*s) for s in FRAME_SIZES)],
    ids=["astronaut", "coffee", *(f"{w}x{h}" for h, w in FRAME_SIZES)],
)
def test_preprocessing_matches_sam(image, torch, resize_longest_side):
    ours, geometry = ImagePreprocessor()(image)
    resized = _official_resize(image, resize_longest_side)
    assert resized.shape[:2] == geometry.input_size
    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    x = (torch.from_numpy(resized).permute(2, 0, 1).float() - mean) / std
    x = torch.nn.functional.pad(x, (0, 1024 - x.shape[2], 0, 1024 - x.shape[1]))[None].numpy()
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


# -- cropped masks: equal to the crops of the full-frame masks, pixel for pixel ----------------

CROP_GEOMETRIES = [*GEOMETRIES, (720, 1280), (1000, 999), (1500, 2000)]


def _crop_test_logits(rng: np.random.Generator) -> np.ndarray:
    """Mask logits of every kind: large, small blobs, empty, full, touching the borders."""
    rows, cols = np.mgrid[0:256, 0:256]
    logits = []
    for n in (4, 16, 32):  # blocky noise: nearest-neighbour upscaling of an n x n grid
        cells = (np.arange(256) * n) // 256
        logits.append(rng.standard_normal((n, n)).astype(np.float32)[np.ix_(cells, cells)])
    for cy, cx, radius in ((128, 128, 3.0), (40, 200, 12.0), (0, 0, 20.0), (255, 255, 9.0)):
        logits.append((radius - np.hypot(rows - cy, cols - cx)).astype(np.float32))
    logits.append(np.full((256, 256), -4.0, np.float32))  # empty
    logits.append(np.full((256, 256), 4.0, np.float32))  # the whole frame
    edges = np.full((256, 256), -2.0, np.float32)
    edges[:, :3] = edges[-2:, :] = 2.0  # along the left and bottom borders
    logits.append(edges)
    return np.stack(logits)


@pytest.fixture(params=[True, False], ids=["ipp", "opencv"])
def opencv_resize(request):
    """Both of OpenCV's float resize implementations (IPP where the build has it)."""
    cv2 = pytest.importorskip("cv2")
    if request.param and not cv2.ipp.useIPP():
        pytest.skip("this OpenCV build has no IPP")
    before = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(request.param)
    yield
    cv2.ipp.setUseIPP(before)


@pytest.mark.parametrize("size", CROP_GEOMETRIES)
def test_mask_crops_equal_crops_of_full_masks(size, opencv_resize):
    geometry = FrameGeometry.for_image(*size)
    logits = _crop_test_logits(np.random.default_rng(2))
    for threshold in (0.0, 0.7, -1.5):
        full = masks_from_logits(logits, geometry, threshold)
        crops = mask_crops_from_logits(logits, geometry, threshold)
        assert len(crops) == len(full)
        for index, (mask, crop) in enumerate(zip(full, crops, strict=True)):
            expected = MaskCrop.from_mask(mask)
            assert crop.box == mask_box(mask) == expected.box, (index, threshold)
            assert crop.mask.dtype == bool and crop.image_size == size
            assert np.array_equal(crop.mask, expected.mask), (index, threshold)
            assert np.array_equal(crop.to_full(), mask), (index, threshold)


def test_mask_crop_of_empty_and_border_masks():
    mask = np.zeros((5, 7), bool)
    empty = MaskCrop.from_mask(mask)
    assert empty.empty and empty.box is None and empty.mask.shape == (0, 0)
    assert np.array_equal(empty.to_full(), mask)
    mask[4, 0] = mask[2, 6] = True
    crop = MaskCrop.from_mask(mask)
    assert crop.box == (0, 2, 6, 4) and crop.mask.shape == (3, 7)
    assert crop.slices == (slice(2, 5), slice(0, 7))
    assert np.array_equal(crop.to_full(), mask)


def test_mask_crops_refuse_bad_logits():
    from mobilesam_ros.core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="low_res_logits must have shape"):
        mask_crops_from_logits(np.zeros((256, 256), np.float32), FrameGeometry.for_image(4, 4))


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_segmenter_crops_equal_full_masks_on_photos(segmenters, name):
    segmenter = segmenters["onnxruntime"]
    image = photo(name)
    height, width = image.shape[:2]
    embedding = segmenter.encode(image)
    rng = np.random.default_rng(3)
    xs = np.sort(rng.uniform(0, width, (8, 2)), axis=1)
    ys = np.sort(rng.uniform(0, height, (8, 2)), axis=1)
    boxes = np.concatenate(
        [
            np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1),
            [[0, 0, width, height], [0, 0, 20, 20]],
        ]
    )
    for multimask in (False, True):
        full = segmenter.decode(embedding, boxes=boxes, multimask=multimask)
        cropped = segmenter.decode(embedding, boxes=boxes, multimask=multimask, crops=True)
        assert cropped.masks is None and len(cropped) == len(full) == 10
        np.testing.assert_array_equal(cropped.scores, full.scores)
        masks = full.masks.reshape(-1, height, width)
        crops = cropped.mask_crops
        flat = [c for group in crops for c in group] if multimask else crops
        assert len(flat) == len(masks)
        for mask, crop in zip(masks, flat, strict=True):
            assert crop.box == mask_box(mask)
            assert np.array_equal(crop.mask, MaskCrop.from_mask(mask).mask)


def test_segmenter_crops_from_device_masks(segmenters, monkeypatch):
    """Where the backend post-processes on the device, crops=True crops its full masks."""
    segmenter = segmenters["onnxruntime"]
    backend = segmenter.backend

    def device_masks(embedding, inputs, multimask, geometry, threshold):
        low_res, scores = backend.decode(embedding, inputs, multimask)
        return masks_from_logits(low_res, geometry, threshold), scores, low_res

    image = photo("coffee")
    embedding = segmenter.encode(image)
    boxes = [[10, 10, 300, 200], [0, 0, image.shape[1], image.shape[0]]]
    host = segmenter.decode(embedding, boxes=boxes, crops=True)
    monkeypatch.setattr(backend, "decode_masks", device_masks)
    device = segmenter.decode(embedding, boxes=boxes, crops=True)
    assert device.masks is None and len(device.mask_crops) == 2
    for expected, crop in zip(host.mask_crops, device.mask_crops, strict=True):
        assert crop.box == expected.box and np.array_equal(crop.mask, expected.mask)
