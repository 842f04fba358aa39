"""The device path's memory: masks upscaled a few at a time, one transfer buffer for all decoder
programs, and the graph pool a camera-sized frame needs, accounted on the CPU (`memory` runs the
programs' own code on the meta device). The same measured on a GPU is in
test_core_torch_device.py."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import photo

torch = pytest.importorskip("torch")

from mobilesam_ros.core.backends.base import DecoderInputs  # noqa: E402
from mobilesam_ros.core.backends.torch_device import DevicePipeline  # noqa: E402
from mobilesam_ros.core.backends.torch_device.memory import (  # noqa: E402
    AllocationTracker,
    decoder_program_memory,
    meta_pipeline,
)
from mobilesam_ros.core.backends.torch_device.resize import upscale_logits  # noqa: E402
from mobilesam_ros.core.model.modules import load_modules  # noqa: E402
from mobilesam_ros.core.processing.postprocess import masks_from_logits  # noqa: E402
from mobilesam_ros.core.processing.preprocess import FrameGeometry, encode_prompts  # noqa: E402

FULL_HD = (1080, 1920)
GRAPH_POOL_BUDGET = 1.5e9  # bytes: what a 64-prompt multimask 1920x1080 frame may take
BOXES = np.array([[40, 30, 300, 380], [250, 50, 590, 390], [10, 200, 200, 395]], float)


@pytest.fixture(scope="module")
def pipeline(random_checkpoint):
    modules = load_modules(random_checkpoint)
    decoders = {m: modules.decoder(m) for m in (False, True)}
    return DevicePipeline(modules.encoder, "cpu", decoders=decoders, fp16=False)


def _inputs(geometry: FrameGeometry, boxes: np.ndarray) -> DecoderInputs:
    height, width = geometry.original_size
    scaled = boxes * np.array([width / 600, height / 400] * 2)
    return DecoderInputs(*encode_prompts(geometry, scaled, None, None))


def test_masks_upscaled_in_chunks_are_those_of_all_at_once(pipeline):
    """12 maps at 1920x1080 are upscaled 5 at a time: the same bits as in one go."""
    embedding, _ = pipeline.encode(photo("coffee"))
    geometry = FrameGeometry.for_image(*FULL_HD)
    boxes = np.vstack([BOXES, [[100, 100, 500, 300]]])  # 4 prompts x 3 masks
    masks, _, low_res = pipeline.decode(embedding, _inputs(geometry, boxes), True, geometry, 0.0)
    assert masks.shape == (4, 3, *FULL_HD)
    whole = upscale_logits(torch.from_numpy(low_res), geometry) > 0.0
    np.testing.assert_array_equal(masks, whole.numpy())
    assert (masks == masks_from_logits(low_res, geometry, 0.0)).mean() > 0.9999


def test_a_larger_program_replaces_the_transfer_buffer_and_the_programs(pipeline):
    embedding, geometry = pipeline.encode(photo("coffee"))
    one = _inputs(geometry, BOXES[:1])
    first = pipeline.decode(embedding, one, False, geometry, 0.0)
    small = pipeline.transfer(0)
    pipeline.decode(embedding, _inputs(geometry, BOXES), True, geometry, 0.0)  # needs more
    assert pipeline.transfer(0).device.numel() > small.device.numel()
    assert list(pipeline.decoder_graph_keys()) == [(4, 2, True, False, geometry)]
    again = pipeline.decode(embedding, one, False, geometry, 0.0)  # captured again, same bits
    for got, want in zip(again, first, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(list(pipeline.decoder_graph_keys())) == 2


@pytest.mark.parametrize("hints", [False, True])
def test_64_multimask_prompts_at_full_hd_fit_the_graph_pool(hints):
    usage = decoder_program_memory(meta_pipeline(), FULL_HD, 64, True, hints=hints)
    assert usage.graph_pool <= GRAPH_POOL_BUDGET, usage
    assert usage.graph_outputs == 0  # the decoder's outputs go into the transfer buffer


def test_decoder_programs_share_one_transfer_buffer():
    """Eight programs (multimask or not, 1-4 points per prompt): one device and one host
    allocation of the transfer buffer, sized by the largest program."""
    pipeline = meta_pipeline()
    geometry = FrameGeometry.for_image(*FULL_HD)
    keys = [(8, tokens, multimask, False, geometry) for multimask in (True, False)
            for tokens in (1, 2, 3, 4)]  # fmt: skip
    with torch.inference_mode(), AllocationTracker() as tracker:
        programs = [pipeline._decoder_program(key) for key in keys]
    assert list(pipeline.decoder_graph_keys()) == keys
    transfer = programs[0].nbytes
    assert all(p.device_bytes is programs[0].device_bytes for p in programs)
    large = [allocation for allocation in tracker.allocations if allocation[1] >= transfer]
    assert large == [("meta", transfer), ("cpu", transfer)]
    assert sum(nbytes for _, nbytes in tracker.allocations) < 2.01 * transfer


def test_meta_accounting_is_what_the_cpu_allocates(random_checkpoint):
    """The meta device's kernels create the storages the CPU's do, of the same sizes (the
    static buffers differ: on the CPU the device copies of the prompts are the host ones)."""
    modules = load_modules(random_checkpoint)
    decoders = {m: modules.decoder(m) for m in (False, True)}
    cpu = DevicePipeline(torch.nn.Identity(), "cpu", decoders=decoders)
    want = decoder_program_memory(cpu, (480, 640), 2, True, hints=True)
    got = decoder_program_memory(meta_pipeline(), (480, 640), 2, True, hints=True)
    assert (got.graph_pool, got.graph_outputs) == (want.graph_pool, want.graph_outputs)
    assert got.graph_pool > 0
