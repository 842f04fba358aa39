"""The PyTorch device path (GPU pre/post-processing, FP16 encoder in a CUDA graph).

On the CPU the same code runs without graphs, FP16 and pinned memory and is checked against the
numpy/OpenCV path; the FP16 and CUDA-graph checks need a CUDA GPU and skip without one.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import photo

torch = pytest.importorskip("torch")

from mobilesam_ros.core.backends.base import DecoderInputs  # noqa: E402
from mobilesam_ros.core.backends.torch_device import DevicePipeline  # noqa: E402
from mobilesam_ros.core.processing.postprocess import masks_from_logits  # noqa: E402
from mobilesam_ros.core.processing.preprocess import FrameGeometry, ImagePreprocessor  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
BOXES = np.array([[40, 30, 300, 380], [250, 50, 590, 390], [10, 200, 200, 395]], float)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


@pytest.mark.parametrize("size", [(480, 640), (640, 480), (300, 451), (1080, 1920)])
def test_device_masks_match_host_postprocessing(size):
    pipeline = DevicePipeline(torch.nn.Identity(), "cpu")
    geometry = FrameGeometry.for_image(*size)
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 1, 24, 24)).astype(np.float32)
    logits = torch.nn.functional.interpolate(torch.from_numpy(logits), (256, 256), mode="bilinear")
    device_masks = pipeline.masks(logits, geometry, 0.0)
    host_masks = masks_from_logits(logits.numpy(), geometry, 0.0)
    assert device_masks.shape == host_masks.shape == (2, 1, *size)
    assert (device_masks != host_masks).mean() < 1e-4  # only threshold ties may differ


@pytest.mark.parametrize("order", ["rgb", "bgr", "rgba"])
def test_device_preprocessing_matches_opencv(order):
    image = photo("coffee")
    if order == "bgr":
        image = np.ascontiguousarray(image[..., ::-1])
    elif order == "rgba":
        image = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    pipeline = DevicePipeline(torch.nn.Identity(), "cpu")
    pipeline._upload(image, order)
    host, _ = ImagePreprocessor()(image, order)
    # Both resize bilinearly and round to whole grey levels; rounding may differ by one level.
    assert np.abs(pipeline._input.numpy() - host).max() <= 1.01 / 57.12


def test_device_path_matches_reference_on_cpu(segmenters):
    reference = segmenters["torch"]
    backend = reference.backend
    pipeline = DevicePipeline(backend._encoder, "cpu")
    image = photo("coffee")
    embedding, geometry = pipeline.encode(image)
    expected = reference.segment(image, boxes=BOXES)
    low_res, _ = backend._decode_tensors(embedding, DecoderInputs(*_prompt_arrays(geometry)), False)
    masks = pipeline.masks(low_res, geometry, 0.0)[:, 0]
    for got, want in zip(masks, expected.masks, strict=True):
        assert _iou(got, want) >= 0.99


def _prompt_arrays(geometry):
    from mobilesam_ros.core.processing.preprocess import encode_prompts

    return encode_prompts(geometry, BOXES, None, None)


@needs_cuda
@pytest.mark.parametrize("name", ["coffee", "astronaut", "chelsea"])
def test_fp16_cuda_graph_masks_match_fp32(random_checkpoint, cache_dir, name):
    from mobilesam_ros.core import Segmenter

    fp32 = Segmenter(random_checkpoint, "torch", cache_dir, "cpu", progress=False)
    gpu = Segmenter(random_checkpoint, "torch", cache_dir, "cuda", progress=False)
    assert gpu.backend.name == "torch-fp16"
    image = photo(name)
    height, width = image.shape[:2]
    boxes = BOXES * [width / 600, height / 400, width / 600, height / 400]
    for _ in range(2):  # the second call replays the captured graph
        result = gpu.segment(image, boxes=boxes)
    expected = fp32.segment(image, boxes=boxes)
    ious = [_iou(a, b) for a, b in zip(result.masks, expected.masks, strict=True)]
    assert min(ious) >= 0.98, ious
