"""Pre- and post-processing against SAM's own transforms (PyTorch used here as the reference)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from helpers import camera_frame, photo
from PIL import Image

from mobilesam_ros.core.processing.image_codec import decode_raw_image
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
from mobilesam_ros.core.processing.resample import PeriodicShrink, pillow_bilinear_weights


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


def _pillow_resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Pillow's bilinear resize of each channel on its own (mode L runs the filter of RGB)."""
    planes = [
        Image.fromarray(np.ascontiguousarray(image[..., c])).resize(size_hw[::-1], Image.BILINEAR)
        for c in range(image.shape[2])
    ]
    return np.stack([np.asarray(plane) for plane in planes], axis=2)


# A shrink in block form is within 1 grey level of Pillow's (it skips Pillow's rounding between
# the passes); measured on photos and noise: 9-18 % of the values differ, by 1 (so the mean
# difference in grey levels is that fraction too).
BLOCK_SHRINK_DIFFERING = 0.2


@pytest.mark.parametrize("size", FRAME_SIZES)
@pytest.mark.parametrize("order", ["rgb", "bgr", "rgba", "bgra"])
def test_resize_matches_pillow_in_every_channel_order(size, order):
    rgb = camera_frame(*size)
    target = resized_shape(*size)
    reference = np.asarray(Image.fromarray(rgb).resize(target[::-1], Image.BILINEAR))
    alpha = np.arange(rgb.size // 3, dtype=np.uint8).reshape(*size, 1)  # alpha must not leak
    layout = {"rgb": rgb, "bgr": rgb[..., ::-1], "rgba": np.concatenate([rgb, alpha], 2)}
    layout["bgra"] = np.concatenate([rgb[..., ::-1], alpha], 2)
    resized = resize_like_sam(layout[order], target)
    picked = resized[..., [order.index(c) for c in "rgb"]].astype(np.int16)
    difference = np.abs(picked - reference)
    if size[1] < 1024:  # enlarged: OpenCV rounds bilinear weights its own way
        mean_limit = 0.3
    elif PeriodicShrink.for_sizes(size, target) is not None:
        mean_limit = BLOCK_SHRINK_DIFFERING
    else:  # shrunk by Pillow itself
        mean_limit = 0.0
    assert difference.max() <= 1 and difference.mean() <= mean_limit, (
        difference.max(),
        difference.mean(),
    )
    if order.endswith("a"):
        expected_alpha = _pillow_resize(alpha, target)[..., 0].astype(np.int16)
        assert np.abs(resized[..., 3] - expected_alpha).max() <= 1


# Camera frames that shrink by ratios of short period (H, W): 1920 -> 1024 is 15/8, 1280 -> 1024
# 5/4, 2560 -> 1024 5/2, 3840 -> 1024 15/4, 1440 -> 1024 45/32; one portrait frame.
CAMERA_SHRINKS = [(1080, 1920), (720, 1280), (1920, 1080), (1440, 2560), (2160, 3840), (1080, 1440)]


def _upscaled_photos(height: int, width: int) -> np.ndarray:
    """Four photos scaled up with OpenCV into the quarters of a frame: smooth photographic
    content, as a camera sees a scene close up."""
    names = ("astronaut", "coffee", "chelsea", "rocket")
    half_h, half_w = height // 2, width // 2
    tiles = [
        cv2.resize(photo(name), (half_w, half_h), interpolation=cv2.INTER_CUBIC) for name in names
    ]
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:half_h, :half_w], frame[:half_h, half_w:][:, :half_w] = tiles[0], tiles[1]
    frame[half_h:][:half_h, :half_w], frame[half_h:, half_w:][:half_h, :half_w] = tiles[2:]
    return frame


def _content(kind: str, height: int, width: int) -> np.ndarray:
    if kind == "tiled":
        return camera_frame(height, width)
    if kind == "upscaled":
        return _upscaled_photos(height, width)
    return np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8)


@pytest.mark.parametrize("kind", ["tiled", "upscaled", "noise"])
@pytest.mark.parametrize("size", CAMERA_SHRINKS, ids=[f"{w}x{h}" for h, w in CAMERA_SHRINKS])
def test_camera_shrinks_stay_within_a_grey_level_of_pillow(size, kind):
    target = resized_shape(*size)
    assert PeriodicShrink.for_sizes(size, target) is not None  # the block form, not Pillow
    rgb = _content(kind, *size)
    alpha = np.random.default_rng(7).integers(0, 256, (*size, 1), np.uint8)
    reference = _pillow_resize(np.concatenate([rgb, alpha], 2), target).astype(np.int16)
    for image in (np.ascontiguousarray(rgb[..., ::-1]), np.concatenate([rgb[..., ::-1], alpha], 2)):
        resized = resize_like_sam(image, target)  # BGR and BGRA
        expected = reference[..., [2, 1, 0, 3][: image.shape[2]]]
        difference = np.abs(resized - expected)
        differing = np.count_nonzero(difference) / difference.size
        assert difference.max() <= 1, difference.max()
        assert differing <= BLOCK_SHRINK_DIFFERING, f"{differing:.3f} of the values differ"


def _filtered_exactly(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Pillow's weights on both axes in float64, without rounding in between or at the end."""
    result = image.astype(np.float64)
    for axis, out_size in enumerate(size_hw):
        in_size = result.shape[axis]
        if in_size == out_size:
            continue
        first, weights = pillow_bilinear_weights(in_size, out_size)
        taps = np.minimum(first[:, None] + np.arange(weights.shape[1]), in_size - 1)
        moved = np.moveaxis(result, axis, -1)  # filter along the last axis
        filtered = np.einsum("...it,it->...i", moved[..., taps], weights / 2**22)
        result = np.moveaxis(filtered, -1, axis)
    return result


@pytest.mark.parametrize(
    ("size", "target"),
    [
        ((1080, 1920), (576, 1024)),
        ((1920, 1080), (1024, 576)),
        ((720, 1280), (576, 1024)),
        ((1080, 1440), (768, 1024)),
        ((1080, 1920), (1080, 1024)),  # rows kept: Pillow filters only horizontally
        ((30, 1920), (16, 1024)),  # two row blocks, both at the border
        ((45, 15), (24, 8)),  # a single column block
        ((768, 1024), (576, 768)),  # 4/3: a scale that is no binary fraction
    ],
)
def test_block_shrink_equals_the_filter_it_computes(size, target):
    """Blocks, their neighbour taps, border blocks and row bands put together give the float
    result of the whole filter: equal after rounding wherever that is not within 1e-3 of
    k + 0.5 (float32 rounding may go either way there; the weights' rational ratios put a few
    percent of the sums exactly on k + 0.5)."""
    image = camera_frame(*size)
    image = np.concatenate([image, image[..., :1]], 2)  # four channels
    exact = _filtered_exactly(image, target)
    resized = resize_like_sam(image, target)
    ties = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
    assert ties.mean() < 0.05
    assert np.array_equal(resized[~ties], np.rint(exact[~ties]))
    assert np.all(np.abs(resized[ties] - exact[ties]) <= 0.501)


@pytest.mark.parametrize("width", [5, 37, 720, 1080, 1280, 1440, 1501, 1920, 2560, 3840])
def test_weights_are_pillows(width):
    """One row resized horizontally (Pillow skips the vertical pass) from the weights in
    integer arithmetic, rounded as Pillow rounds: equal to Pillow's result."""
    row = np.random.default_rng(width).integers(0, 256, (1, width), np.uint8)
    for out_width in sorted({1, 3, width // 3 or 1, width // 2 or 1, min(width, 1024), width - 1}):
        first, weights = pillow_bilinear_weights(width, out_width)
        taps = np.minimum(first[:, None] + np.arange(weights.shape[1]), width - 1)
        sums = (row[0, taps].astype(np.int64) * weights.astype(np.int64)).sum(axis=1)
        expected = np.asarray(Image.fromarray(row).resize((out_width, 1), Image.BILINEAR))[0]
        assert np.array_equal(np.clip((sums + (1 << 21)) >> 22, 0, 255), expected)


def test_block_form_only_for_short_periods():
    assert PeriodicShrink.for_sizes((1079, 1919), resized_shape(1079, 1919)) is None
    assert PeriodicShrink.for_sizes((1080, 810), resized_shape(1080, 810)) is None  # 135/128
    # 47/32: a short period, but its dense block products are slower than Pillow's filter.
    assert PeriodicShrink.for_sizes((1128, 1504), resized_shape(1128, 1504)) is None
    assert PeriodicShrink.for_sizes((480, 640), resized_shape(480, 640)) is None  # enlarged
    image = camera_frame(1079, 1919)  # falls back to Pillow itself
    target = resized_shape(1079, 1919)
    reference = np.asarray(Image.fromarray(image).resize(target[::-1], Image.BILINEAR))
    assert np.abs(resize_like_sam(image, target).astype(np.int16) - reference).max() <= 1


def test_resize_into_a_strided_buffer():
    image = camera_frame(1080, 1920)
    expected = resize_like_sam(image, (576, 1024))
    buffer = np.zeros((576, 1024, 4), np.uint8)
    assert np.array_equal(resize_like_sam(image, (576, 1024), buffer[..., :3]), expected)
    assert np.array_equal(buffer[..., :3], expected) and not buffer[..., 3].any()


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
    # Same filter as SAM's: at most 1 grey level apart; equal where Pillow itself shrinks.
    grey_level = 1.0 / 57.12
    if max(image.shape[:2]) < 1024:  # enlarged by OpenCV
        mean_limit = 0.3
    elif PeriodicShrink.for_sizes(image.shape[:2], geometry.input_size) is not None:
        mean_limit = BLOCK_SHRINK_DIFFERING
    else:
        mean_limit = 0.001
    assert np.abs(ours - x).max() <= 1.01 * grey_level
    assert np.abs(ours - x).mean() <= mean_limit * grey_level


def test_preprocessor_reuses_buffers_and_handles_size_changes():
    preprocess = ImagePreprocessor()
    first, _ = preprocess(np.full((480, 640, 3), 255, np.uint8))
    second, geometry = preprocess(np.full((240, 640, 3), 255, np.uint8))
    assert second is first  # no per-frame allocation
    assert geometry.input_size == (384, 1024)
    assert not second[..., 384:, :].any()  # rows left over from the taller frame were cleared


def test_preprocessor_reads_camera_layouts_in_place_when_shrinking():
    rgb = camera_frame(1080, 1920)
    alpha = np.full((1080, 1920, 1), 200, np.uint8)
    expected = ImagePreprocessor()(rgb)[0].copy()
    preprocess = ImagePreprocessor()
    for image, order in (
        (np.ascontiguousarray(rgb[..., ::-1]), "bgr"),
        (np.concatenate([rgb[..., ::-1], alpha], 2), "bgra"),
        (np.concatenate([rgb, alpha], 2), "rgba"),
        (camera_frame(720, 1280), "rgb"),  # another size in between: buffers are rebuilt
        (rgb, "rgb"),
    ):
        ours, geometry = preprocess(image, order)
        if geometry.original_size == (1080, 1920):
            assert np.array_equal(ours, expected), order
    # A bgr8 message whose rows are padded (step > width * 3), read in place.
    step = 1920 * 3 + 64
    padded = np.zeros((1080, step), np.uint8)
    padded[:, : 1920 * 3] = rgb[..., ::-1].reshape(1080, -1)
    pixels = decode_raw_image(padded.tobytes(), 1080, 1920, step, "bgr8").pixels
    assert pixels.strides[0] == step
    assert np.array_equal(preprocess(pixels, "bgr")[0], expected)


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

    def device_masks(embedding, inputs, multimask, geometry, threshold, low_res=True, crops=False):
        logits, scores = backend.decode(embedding, inputs, multimask)
        masks = masks_from_logits(logits, geometry, threshold)
        if crops:
            masks = [MaskCrop.from_mask(mask) for mask in masks.reshape(-1, *masks.shape[-2:])]
        return masks, scores, logits if low_res else None

    image = photo("coffee")
    embedding = segmenter.encode(image)
    boxes = [[10, 10, 300, 200], [0, 0, image.shape[1], image.shape[0]]]
    host = segmenter.decode(embedding, boxes=boxes, crops=True)
    monkeypatch.setattr(backend, "decode_masks", device_masks)
    device = segmenter.decode(embedding, boxes=boxes, crops=True)
    assert device.masks is None and len(device.mask_crops) == 2
    for expected, crop in zip(host.mask_crops, device.mask_crops, strict=True):
        assert crop.box == expected.box and np.array_equal(crop.mask, expected.mask)
    np.testing.assert_array_equal(device.low_res_logits, host.low_res_logits)
    # The device's stage times (CUDA events there) replace the wall-clock launch times.
    device_times = {"preprocess_ms": 0.5, "encode_ms": 2.5, "decode_ms": 1.5, "postprocess_ms": 0.2}
    monkeypatch.setattr(backend, "stage_timings", lambda: device_times, raising=False)
    segmenter.decode(embedding, boxes=boxes, crops=True)
    assert vars(segmenter.timings) == device_times
    # Without tracking nobody reads the logits: neither path returns them.
    for result in (
        segmenter.decode(embedding, boxes=boxes, crops=True, low_res_logits=False),
        segmenter.decode(embedding, boxes=boxes, low_res_logits=False),
    ):
        assert result.low_res_logits is None and len(result) == 2
    monkeypatch.undo()
    assert segmenter.decode(embedding, boxes=boxes, low_res_logits=False).low_res_logits is None
