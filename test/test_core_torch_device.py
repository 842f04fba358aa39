"""The PyTorch device path (pre/post-processing, FP16 encoder and decoder, CUDA graphs).

On the CPU the same code runs eagerly without pinned memory and is checked against the
numpy/OpenCV path, Pillow and the FP32 modules (FP16 pieces run on the CPU too, where PyTorch has
the kernels); the CUDA-graph, device-selection and synchronization checks need a CUDA GPU and skip
without one (scripts/gpu_check.sh runs them).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from helpers import photo

torch = pytest.importorskip("torch")

from mobilesam_ros.core.backends.base import DecoderInputs  # noqa: E402
from mobilesam_ros.core.backends.torch_device import DevicePipeline  # noqa: E402
from mobilesam_ros.core.backends.torch_device.precision import (  # noqa: E402
    MixedPrecisionDecoder,
    reduced_precision_encoder,
)
from mobilesam_ros.core.backends.torch_device.programs import (  # noqa: E402
    PROMPT_BUCKETS,
    prompt_bucket,
)
from mobilesam_ros.core.backends.torch_device.resize import (  # noqa: E402
    resize_like_pillow,
    upscale_logits,
)
from mobilesam_ros.core.model.modules import load_modules  # noqa: E402
from mobilesam_ros.core.model.tiny_vit import LayerNorm2d, TinyViTBlock  # noqa: E402
from mobilesam_ros.core.processing.postprocess import MaskCrop, masks_from_logits  # noqa: E402
from mobilesam_ros.core.processing.preprocess import (  # noqa: E402
    PIXEL_MEAN,
    PIXEL_STD,
    FrameGeometry,
    encode_prompts,
)


def needs_cuda(test):
    """A test of the CUDA path itself: marked gpu, skipped without a CUDA GPU."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    return pytest.mark.gpu(skip(test))


BOXES = np.array([[40, 30, 300, 380], [250, 50, 590, 390], [10, 200, 200, 395]], float)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).norm() / want.norm())


@pytest.fixture(scope="module")
def modules(random_checkpoint):
    return load_modules(random_checkpoint)


@pytest.fixture(scope="module")
def fp32_pipeline(modules):
    decoders = {m: modules.decoder(m) for m in (False, True)}
    return DevicePipeline(modules.encoder, "cpu", decoders=decoders, fp16=False)


# -- prompt buckets ----------------------------------------------------------------------------


def test_prompt_buckets():
    assert [prompt_bucket(n) for n in (1, 2, 3, 5, 10, 16, 17, 64)] == [1, 2, 4, 8, 16, 16, 32, 64]
    assert prompt_bucket(65) == prompt_bucket(128) == 128
    assert prompt_bucket(129) == 192
    for count in range(1, 200):
        bucket = prompt_bucket(count)
        assert bucket >= count and (bucket in PROMPT_BUCKETS or bucket % PROMPT_BUCKETS[-1] == 0)
    with pytest.raises(ValueError, match="at least 1"):
        prompt_bucket(0)


def test_padded_prompts_do_not_change_results(fp32_pipeline, modules):
    """3 prompts run in the 4-prompt program; rows left over from a 4-prompt frame are ignored."""
    image = photo("coffee")
    embedding, geometry = fp32_pipeline.encode(image)
    boxes4 = np.vstack([BOXES, [[100, 100, 500, 300]]])
    fp32_pipeline.decode(embedding, DecoderInputs(*encode_prompts(geometry, boxes4, None, None)),
                         False, geometry, 0.0)  # fmt: skip
    coords, labels = encode_prompts(geometry, BOXES, None, None)
    masks, scores, low_res = fp32_pipeline.decode(
        embedding, DecoderInputs(coords, labels), False, geometry, 0.0
    )
    assert (4, 2, False, False, geometry) in set(fp32_pipeline.decoder_graph_keys())
    with torch.inference_mode():
        want_low_res, want_iou = modules.decoder(False)(
            embedding,
            torch.from_numpy(coords),
            torch.from_numpy(labels),
            torch.zeros(1, 1, 256, 256),
            torch.zeros(1),
        )
    assert masks.shape == (3, 1, *image.shape[:2]) and scores.shape == (3, 1)
    np.testing.assert_allclose(low_res, want_low_res.numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, want_iou.numpy(), atol=1e-5)
    assert (masks == masks_from_logits(low_res, geometry, 0.0)).mean() > 0.9999
    _, _, skipped = fp32_pipeline.decode(
        embedding, DecoderInputs(coords, labels), False, geometry, 0.0, low_res=False
    )
    assert skipped is None


def test_mask_hints_match_reference(fp32_pipeline, modules):
    image = photo("coffee")
    embedding, geometry = fp32_pipeline.encode(image)
    coords, labels = encode_prompts(geometry, BOXES[:2], None, None)
    rng = np.random.default_rng(0)
    hints = rng.standard_normal((2, 1, 256, 256)).astype(np.float32)
    flags = np.array([1.0, 0.0], np.float32)
    _, scores, low_res = fp32_pipeline.decode(
        embedding, DecoderInputs(coords, labels, hints, flags), True, geometry, 0.0
    )
    with torch.inference_mode():
        want_low_res, want_iou = modules.decoder(True)(
            embedding, *(torch.from_numpy(a) for a in (coords, labels, hints, flags))
        )
    np.testing.assert_allclose(low_res, want_low_res.numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, want_iou.numpy(), atol=1e-5)


# -- pre- and post-processing ------------------------------------------------------------------


@pytest.mark.parametrize("size", [(480, 640), (640, 480), (300, 451), (1080, 1920)])
def test_device_masks_match_host_postprocessing(size):
    geometry = FrameGeometry.for_image(*size)
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 1, 24, 24)).astype(np.float32)
    logits = torch.nn.functional.interpolate(torch.from_numpy(logits), (256, 256), mode="bilinear")
    device_masks = (upscale_logits(logits, geometry) > 0).numpy()
    host_masks = masks_from_logits(logits.numpy(), geometry, 0.0)
    assert device_masks.shape == host_masks.shape == (2, 1, *size)
    assert (device_masks != host_masks).mean() < 1e-4  # only threshold ties may differ


def _photo_at(name: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    height, width = size
    return np.array(Image.fromarray(photo(name)).resize((width, height), Image.BICUBIC))


@pytest.mark.parametrize("size", [(1080, 1920), (720, 1280), (300, 451)])
@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_resize_matches_pillow(name, size):
    """The official pipeline resizes with PIL bilinear (antialiased when shrinking)."""
    from PIL import Image

    image = _photo_at(name, size)
    geometry = FrameGeometry.for_image(*size)
    nh, nw = geometry.input_size
    want = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR)).astype(np.int16)
    chw = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float()
    got = resize_like_pillow(chw, (nh, nw))[0].permute(1, 2, 0).numpy().astype(np.int16)
    assert np.abs(got - want).max() <= 1
    # Plain bilinear (no antialiasing) is what this test must tell apart when shrinking.
    if nh < size[0]:
        plain = torch.nn.functional.interpolate(chw, (nh, nw), mode="bilinear")
        plain = plain.round()[0].permute(1, 2, 0).numpy().astype(np.int16)
        assert np.abs(plain - want).max() > 1


@pytest.mark.parametrize("order", ["rgb", "bgr", "rgba"])
def test_device_preprocessing_matches_pillow(order):
    from PIL import Image

    image = _photo_at("astronaut", (720, 1280))
    nh, nw = FrameGeometry.for_image(720, 1280).input_size
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), np.float32)
    want = np.zeros((1, 3, 1024, 1024), np.float32)
    want[0, :, :nh, :nw] = ((resized - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
    if order == "bgr":
        image = np.ascontiguousarray(image[..., ::-1])
    elif order == "rgba":
        image = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    pipeline = DevicePipeline(torch.nn.Identity(), "cpu", fp16=False)
    embedding, geometry = pipeline.encode(image, order)
    assert geometry.input_size == (nh, nw)
    assert np.abs(embedding.numpy() - want).max() <= 1.01 / 57.12  # at most one grey level


def test_device_path_matches_reference_on_cpu(segmenters, fp32_pipeline):
    reference = segmenters["torch"]
    image = photo("coffee")
    embedding, geometry = fp32_pipeline.encode(image)
    expected = reference.segment(image, boxes=BOXES)
    inputs = DecoderInputs(*encode_prompts(geometry, BOXES, None, None))
    masks, _, _ = fp32_pipeline.decode(embedding, inputs, False, geometry, 0.0)
    for got, want in zip(masks[:, 0], expected.masks, strict=True):
        assert _iou(got, want) >= 0.99


def test_device_crops_are_the_full_masks_cropped_and_owned(fp32_pipeline):
    """crops=True: the tight crops of the full masks, copied out of the reused transfer
    buffer; low_res=False: no logits come back."""
    image = photo("coffee")
    embedding, geometry = fp32_pipeline.encode(image)
    inputs = DecoderInputs(*encode_prompts(geometry, BOXES, None, None))
    masks, scores, low_res = fp32_pipeline.decode(embedding, inputs, True, geometry, 0.0)
    crops, crop_scores, no_low_res = fp32_pipeline.decode(
        embedding, inputs, True, geometry, 0.0, low_res=False, crops=True
    )
    assert low_res is not None and no_low_res is None
    np.testing.assert_array_equal(crop_scores, scores)
    assert len(crops) == masks.shape[0] * masks.shape[1] == 9  # prompt-major, K = 3 each
    for crop, mask in zip(crops, masks.reshape(-1, *masks.shape[-2:]), strict=True):
        want = MaskCrop.from_mask(mask)
        assert (crop.x0, crop.y0, crop.image_size) == (want.x0, want.y0, want.image_size)
        np.testing.assert_array_equal(crop.mask, want.mask)
    # The next frame reuses the host buffer: the crops must not change with it.
    kept = [c.mask.copy() for c in crops]
    fp32_pipeline.decode(
        embedding,
        DecoderInputs(*encode_prompts(geometry, BOXES[::-1], None, None)),
        True,
        geometry,
        0.0,
        crops=True,
    )
    for crop, before in zip(crops, kept, strict=True):
        np.testing.assert_array_equal(crop.mask, before)


# -- FP16 on the CPU -----------------------------------------------------------------------------


def test_fp16_layer_norm_2d_survives_large_activations():
    """|x - mean| beyond 256 squares past FP16's range; the norm must compute in FP32."""
    norm = LayerNorm2d(256)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.1, 0.1)
    x = torch.randn(1, 256, 16, 16) * 3000
    centered = (x - x.mean(1, keepdim=True)).half()
    assert torch.isinf(centered * centered).any()  # the stress case really overflows FP16
    with torch.inference_mode():
        want = norm(x)
        got = norm.half()(x.half())
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    assert _relative_error(got, want) < 2e-3


@pytest.mark.slow
@pytest.mark.parametrize("fused_attention", [False, True])
def test_fp16_encoder_pieces_agree_with_fp32_under_large_activations(modules, fused_attention):
    """One 64x64 attention block and the neck of the real encoder, with the neck's input scaled
    so that LayerNorm2d sees deviations far beyond 256 (the full FP16 encoder is too slow on a
    CPU: the GPU test runs it)."""
    encoder = copy.deepcopy(modules.encoder)
    with torch.no_grad():
        encoder.neck[0].weight.mul_(400.0)
    half = reduced_precision_encoder(encoder, torch.float16, fused_attention)
    block = encoder.layers[3].blocks[0]
    half_block = half.layers[3].blocks[0]
    assert isinstance(block, TinyViTBlock)
    tokens = torch.randn(1, 64 * 64, 320, generator=torch.Generator().manual_seed(0)) * 4
    with torch.inference_mode():
        features = block(tokens)
        half_features = half_block(tokens.half())
        neck_input = features.reshape(1, 64, 64, 320).permute(0, 3, 1, 2)
        deviation = encoder.neck[0](neck_input)
        assert (deviation - deviation.mean(1, keepdim=True)).abs().max() > 1000
        want = encoder.neck(neck_input)
        got = half.neck(half_features.reshape(1, 64, 64, 320).permute(0, 3, 1, 2))
    assert torch.isfinite(half_features).all() and torch.isfinite(got).all()
    assert _relative_error(half_features, features) < 5e-3
    assert _relative_error(got, want) < 5e-3


def test_fp16_decoder_agrees_with_fp32(fp32_pipeline, modules):
    image = photo("coffee")
    embedding, geometry = fp32_pipeline.encode(image)
    coords, labels = encode_prompts(geometry, BOXES[:1], None, None)
    prompts = (torch.from_numpy(coords), torch.from_numpy(labels))
    decoder = modules.decoder(False)
    half = MixedPrecisionDecoder(decoder, torch.float16)
    assert half.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.float32
    with torch.inference_mode():
        want_low_res, want_iou = decoder(embedding, *prompts, torch.zeros(1, 1, 256, 256),
                                         torch.zeros(1))  # fmt: skip
        low_res, iou = half(embedding.half(), *prompts, None, None)
    assert low_res.dtype == torch.float16
    assert _relative_error(low_res, want_low_res) < 5e-3
    assert (iou.float() - want_iou).abs().max() < 5e-3
    assert _iou((low_res > 0).numpy(), (want_low_res > 0).numpy()) > 0.99


# -- CUDA ------------------------------------------------------------------------------------------


def _cuda_pipeline(modules, device="cuda", encoder=None):
    decoders = {m: modules.decoder(m) for m in (False, True)}
    encoder = modules.encoder if encoder is None else encoder
    return DevicePipeline(encoder, device, decoders=decoders, fp16=True)


def _patch_encoder() -> torch.nn.Module:
    """A stand-in encoder whose embedding follows its input closely (random TinyViT weights
    give nearly the same embedding for every photo: 0.1 % apart), so a replay of the capture
    frame's graph cannot pass for a fresh encoding."""
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 256, kernel_size=16, stride=16)  # 1024 -> 64x64 patches


def _reference_embedding(encoder: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
    embedding, _ = DevicePipeline(copy.deepcopy(encoder), "cpu", fp16=False).encode(image)
    return embedding


@needs_cuda
def test_cuda_graph_replays_follow_the_input(modules):
    """Each replay encodes the current frame (not the capture frame)."""
    encoder = _patch_encoder()
    pipeline = _cuda_pipeline(modules, encoder=copy.deepcopy(encoder))
    assert pipeline._encoder_program.graph is not None  # captured at construction
    images = [photo(name) for name in ("coffee", "astronaut", "coffee")]
    wants = [_reference_embedding(encoder, image) for image in images]
    assert _relative_error(wants[0], wants[1]) > 0.2  # the check below can tell them apart
    for image, want in zip(images, wants, strict=True):
        got, _ = pipeline.encode(image)
        assert _relative_error(got.cpu(), want) < 1e-2


@needs_cuda
def test_runs_on_the_chosen_device(modules):
    """The last GPU (cuda:1 with two), called from a thread whose current device is 0."""
    index = torch.cuda.device_count() - 1
    encoder = _patch_encoder()
    pipeline = _cuda_pipeline(modules, f"cuda:{index}", encoder=copy.deepcopy(encoder))
    torch.cuda.set_device(0)
    first, geometry = pipeline.encode(photo("coffee"))
    first = first.clone()
    second, _ = pipeline.encode(photo("astronaut"))
    assert first.device == torch.device("cuda", index)
    assert _relative_error(first.cpu(), _reference_embedding(encoder, photo("coffee"))) < 1e-2
    assert _relative_error(second.cpu(), _reference_embedding(encoder, photo("astronaut"))) < 1e-2
    inputs = DecoderInputs(*encode_prompts(geometry, BOXES, None, None))
    masks, scores, _ = pipeline.decode(first, inputs, False, geometry, 0.0)
    assert masks.shape == (3, 1, *geometry.original_size) and np.isfinite(scores).all()


@needs_cuda
def test_size_change_and_encode_only_sequences(modules):
    encoder = _patch_encoder()
    pipeline = _cuda_pipeline(modules, encoder=copy.deepcopy(encoder))
    cpu = DevicePipeline(encoder, "cpu", {False: modules.decoder(False)}, fp16=False)
    images = [photo("coffee"), _photo_at("astronaut", (720, 1280)), photo("coffee")]
    embeddings = [pipeline.encode(image) for image in images]  # no decode in between
    for image, (embedding, geometry) in zip(images, embeddings, strict=True):
        boxes = BOXES * np.array([image.shape[1] / 600, image.shape[0] / 400] * 2)
        inputs = DecoderInputs(*encode_prompts(geometry, boxes, None, None))
        masks, _, _ = pipeline.decode(embedding, inputs, False, geometry, 0.0)
        want_embedding, _ = cpu.encode(image)
        want, _, _ = cpu.decode(want_embedding, inputs, False, geometry, 0.0)
        assert min(_iou(a, b) for a, b in zip(masks, want, strict=True)) >= 0.98


@needs_cuda
def test_hot_path_has_no_hidden_synchronization_or_allocation(modules):
    pipeline = _cuda_pipeline(modules)
    image = photo("coffee")
    embedding, geometry = pipeline.encode(image)
    inputs = DecoderInputs(*encode_prompts(geometry, BOXES, None, None))
    pipeline.decode(embedding, inputs, False, geometry, 0.0, low_res=False)  # captures
    reserved = torch.cuda.memory_reserved()
    segments = torch.cuda.memory_stats()["segment.all.allocated"]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for crops in (False, True, True):  # full masks, and crops as the node asks
            embedding, geometry = pipeline.encode(image)
            pipeline.decode(embedding, inputs, False, geometry, 0.0, low_res=False, crops=crops)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.cuda.memory_reserved() == reserved
    assert torch.cuda.memory_stats()["segment.all.allocated"] == segments  # no cudaMalloc
    timings = pipeline.stage_timings()
    assert set(timings) == {"preprocess_ms", "encode_ms", "decode_ms", "postprocess_ms"}
    assert all(v > 0 for v in timings.values())


@needs_cuda
def test_graph_pool_of_64_multimask_prompts_at_full_hd(modules):
    """Measured where test_core_torch_device_memory.py accounts it on the CPU: at most 1.5 GB."""
    pipeline = _cuda_pipeline(modules)
    embedding, _ = pipeline.encode(photo("coffee"))
    geometry = FrameGeometry.for_image(1080, 1920)
    corners = np.random.default_rng(0).uniform(0, [1920, 1080], size=(64, 2, 2))
    boxes = np.hstack([corners.min(1), corners.max(1)])
    inputs = DecoderInputs(*encode_prompts(geometry, boxes, None, None))
    masks, _, _ = pipeline.decode(embedding, inputs, True, geometry, 0.0, low_res=False)
    assert masks.shape == (64, 3, 1080, 1920)
    pool = sum(
        segment["total_size"]
        for segment in torch.cuda.memory_snapshot()
        if tuple(segment["segment_pool_id"]) == tuple(pipeline.graph_pool)
    )
    assert 0 < pool <= 1.5e9, f"graph pool {pool / 1e6:.0f} MB"


@needs_cuda
def test_compiled_decoder_matches_the_eager_one(modules):
    decoders = {False: modules.decoder(False)}
    eager = DevicePipeline(modules.encoder, "cuda", decoders, fp16=True)
    compiled = DevicePipeline(modules.encoder, "cuda", decoders, fp16=True, compile_decoder=True)
    embedding, geometry = eager.encode(photo("coffee"))
    inputs = DecoderInputs(*encode_prompts(geometry, BOXES, None, None))
    want, want_scores, _ = eager.decode(embedding, inputs, False, geometry, 0.0)
    for _ in range(2):  # the second call replays the captured graph of the compiled decoder
        got, scores, _ = compiled.decode(embedding, inputs, False, geometry, 0.0)
    assert min(_iou(a, b) for a, b in zip(got, want, strict=True)) >= 0.99
    np.testing.assert_allclose(scores, want_scores, atol=1e-2)


@needs_cuda
@pytest.mark.parametrize("size", [None, (1080, 1920)])
@pytest.mark.parametrize("name", ["coffee", "astronaut", "chelsea"])
def test_fp16_cuda_graph_masks_match_fp32(random_checkpoint, cache_dir, name, size):
    from mobilesam_ros.core import Segmenter

    fp32 = Segmenter(random_checkpoint, "torch", cache_dir, "cpu", progress=False)
    gpu = Segmenter(random_checkpoint, "torch", cache_dir, "cuda", progress=False)
    assert gpu.backend.name == "torch-fp16"
    image = photo(name) if size is None else _photo_at(name, size)
    height, width = image.shape[:2]
    boxes = BOXES * [width / 600, height / 400, width / 600, height / 400]
    for _ in range(2):  # the second call replays the captured graphs
        result = gpu.segment(image, boxes=boxes)
    expected = fp32.segment(image, boxes=boxes)
    ious = [_iou(a, b) for a, b in zip(result.masks, expected.masks, strict=True)]
    assert min(ious) >= 0.98, ious
    relative = np.linalg.norm(result.low_res_logits - expected.low_res_logits)
    assert relative / np.linalg.norm(expected.low_res_logits) < 1e-2
