"""The per-frame device work as programs replayed from CUDA graphs, with the static buffers the
graphs read and write: one program per image layout (pre-processing) and per decoder key
(prompt bucket, tokens per prompt, multimask, mask hints, geometry)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from mobilesam_ros.core.backends.base import DecoderInputs
from mobilesam_ros.core.backends.torch_device.resize import resize_like_pillow, upscale_logits
from mobilesam_ros.core.model.constants import IMAGE_SIZE, LOW_RES_SIZE
from mobilesam_ros.core.processing.preprocess import FrameGeometry

if TYPE_CHECKING:
    from mobilesam_ros.core.backends.torch_device.pipeline import DevicePipeline

# Prompt counts decoder graphs are captured for; a frame's prompts are padded up to the next one.
PROMPT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_SECTION_ALIGNMENT = 16  # bytes: where each section of a transfer buffer starts
# FP32 bytes the mask post-processing upscales at once: all 192 maps of 64 multimask prompts at
# 1920x1080 together would take 2 GB of graph pool.
_UPSCALE_CHUNK_BYTES = 64 << 20


def prompt_bucket(count: int) -> int:
    """Prompts a decoder graph runs for `count` prompts: the next of PROMPT_BUCKETS, above the
    largest the next multiple of it."""
    if count < 1:
        raise ValueError(f"prompt count must be at least 1, got {count}")
    for bucket in PROMPT_BUCKETS:
        if count <= bucket:
            return bucket
    return -(-count // PROMPT_BUCKETS[-1]) * PROMPT_BUCKETS[-1]


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _SECTION_ALIGNMENT) * _SECTION_ALIGNMENT


def _upscale_chunks(
    low_res: torch.Tensor, masks: torch.Tensor, geometry: FrameGeometry
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, masks) views of a few maps each, so that their FP32 upscaling holds at most about
    _UPSCALE_CHUNK_BYTES at once (each map is upscaled on its own: same results as all at once)."""
    height, width = geometry.original_size
    # Per map: the model-frame step (at most IMAGE_SIZE squared) and the frame-size step.
    step = max(1, _UPSCALE_CHUNK_BYTES // (4 * (IMAGE_SIZE * IMAGE_SIZE + height * width)))
    logits = low_res.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE)
    flat_masks = masks.reshape(-1, height, width)
    return [
        (logits[start : start + step], flat_masks[start : start + step])
        for start in range(0, len(logits), step)
    ]


class GraphProgram:
    """A piece of per-frame device work: replayed from a CUDA graph when `pool` is given (call
    inside the device's context), else run eagerly. Returns the body's outputs.

    The warm-up runs before the capture take memory from PyTorch's ordinary cache, which keeps
    it for the stream that freed it: one `side_stream` for all programs keeps that to the largest
    warm-up, not one per program."""

    def __init__(self, body: Callable[[], Any], pool: Any = None, side_stream: Any = None) -> None:
        self.body = body
        self.graph: Any = None
        self.outputs: Any = None
        if pool is None:
            return
        side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side_stream):
            for _ in range(2):  # kernel selection and lazy initialization outside the graph
                body()
        torch.cuda.current_stream().wait_stream(side_stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = body()

    def __call__(self) -> Any:
        if self.graph is None:
            return self.body()
        self.graph.replay()
        return self.outputs


class FrameProgram:
    """Pinned staging, device pixels and the pre-processing program for one image layout."""

    def __init__(self, pipeline: DevicePipeline, shape: tuple[int, ...], order: str) -> None:
        height, width = shape[:2]
        self.key = (shape, order)
        self.geometry = FrameGeometry.for_image(height, width)
        self.staging = torch.empty(shape, dtype=torch.uint8, pin_memory=pipeline.pinned)
        self.staging_array = self.staging.numpy()
        self.pixels = torch.empty(shape, dtype=torch.uint8, device=pipeline.device)
        nh, nw = self.geometry.input_size
        model_input = pipeline.model_input
        model_input.zero_()  # padding is 0 after normalization, as in SAM

        def preprocess() -> None:
            chw = self.pixels.permute(2, 0, 1)[:3]
            if order.startswith("bgr"):
                chw = chw.flip(0)
            chw = chw.unsqueeze(0).float()
            if (nh, nw) != (height, width):
                chw = resize_like_pillow(chw, (nh, nw))
            model_input[:, :, :nh, :nw] = (chw - pipeline.pixel_mean) * pipeline.pixel_scale

        self.program = GraphProgram(preprocess, pipeline.graph_pool, pipeline.side_stream)


class TransferBuffer(NamedTuple):
    """The bytes the decoder programs write their results into on the device, and the pinned
    host bytes they are copied to: one pair for all programs (see DevicePipeline.transfer)."""

    device: torch.Tensor
    host: torch.Tensor


class DecoderProgram:
    """Static prompt buffers and the decoder and post-processing programs of one decoder key,
    writing into the pipeline's transfer buffer. Transfer layout: scores | masks | low-res
    logits, so one copy of a prefix brings back what the caller asked for."""

    def __init__(
        self,
        pipeline: DevicePipeline,
        bucket: int,
        tokens: int,
        multimask: bool,
        hints: bool,
        geometry: FrameGeometry,
    ) -> None:
        device, pinned = pipeline.device, pipeline.pinned
        outputs = 3 if multimask else 1
        height, width = geometry.original_size
        self.bucket = bucket
        # Padding prompts are single "not a point" tokens; their outputs are never read.
        self.coords_host = torch.zeros(bucket, tokens, 2, pin_memory=pinned)
        self.labels_host = torch.full((bucket, tokens), -1.0, pin_memory=pinned)
        self.coords = self.coords_host.to(device)
        self.labels = self.labels_host.to(device)
        self.hints_host = self.flags_host = self.hints = self.flags = None
        if hints:
            self.hints_host = torch.zeros(bucket, 1, LOW_RES_SIZE, LOW_RES_SIZE, pin_memory=pinned)
            self.flags_host = torch.zeros(bucket, pin_memory=pinned)
            self.hints = self.hints_host.to(device)
            self.flags = self.flags_host.to(device)

        self.mask_bytes_per_prompt = outputs * height * width
        self.low_res_bytes_per_prompt = outputs * LOW_RES_SIZE * LOW_RES_SIZE * 4
        self.masks_offset = _aligned(bucket * outputs * 4)
        self.low_res_offset = self.masks_offset + _aligned(bucket * self.mask_bytes_per_prompt)
        self.nbytes = self.low_res_offset + bucket * self.low_res_bytes_per_prompt
        self.device_bytes, self.host_bytes = pipeline.transfer(self.nbytes)
        scores, masks, low_res = self._sections(self.device_bytes, outputs, height, width)
        self.host_scores, self.host_masks, self.host_low_res = (
            t.numpy() for t in self._sections(self.host_bytes, outputs, height, width)
        )

        decoder = pipeline.decoder_calls[multimask]

        def decode() -> None:
            prompts = (self.coords, self.labels, self.hints, self.flags)
            logits, iou = decoder(pipeline.embedding, *prompts)
            # Copied out inside this graph, the decoder's outputs are not held in the graph pool.
            scores.copy_(iou)
            low_res.copy_(logits)  # FP32: for the caller and for interpolation

        chunks = _upscale_chunks(low_res, masks, geometry)

        def postprocess() -> None:
            for logits, chunk_masks in chunks:  # each chunk's FP32 maps freed before the next
                torch.gt(upscale_logits(logits, geometry), pipeline.threshold, out=chunk_masks)

        self.decode_program = GraphProgram(decode, pipeline.graph_pool, pipeline.side_stream)
        self.postprocess_program = GraphProgram(
            postprocess, pipeline.graph_pool, pipeline.side_stream
        )

    def _sections(
        self, buffer: torch.Tensor, outputs: int, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bucket = self.bucket
        scores = buffer[: bucket * outputs * 4].view(torch.float32).view(bucket, outputs)
        masks_end = self.masks_offset + bucket * self.mask_bytes_per_prompt
        masks = buffer[self.masks_offset : masks_end].view(torch.bool)
        low_res = buffer[self.low_res_offset : self.nbytes].view(torch.float32)
        return (
            scores,
            masks.view(bucket, outputs, height, width),
            low_res.view(bucket, outputs, LOW_RES_SIZE, LOW_RES_SIZE),
        )

    def upload(self, inputs: DecoderInputs) -> None:
        """Stage the prompts (the previous frame's copies from these buffers have completed: each
        decode waits for its own transfer) and copy them to the device."""
        count = len(inputs)
        np.copyto(self.coords_host[:count].numpy(), inputs.point_coords)
        np.copyto(self.labels_host[:count].numpy(), inputs.point_labels)
        self.coords[:count].copy_(self.coords_host[:count], non_blocking=True)
        self.labels[:count].copy_(self.labels_host[:count], non_blocking=True)
        if self.hints is not None:
            np.copyto(self.hints_host[:count].numpy(), inputs.mask_input)  # (1, ...) broadcasts
            np.copyto(self.flags_host[:count].numpy(), inputs.has_mask_input)
            self.hints[:count].copy_(self.hints_host[:count], non_blocking=True)
            self.flags[:count].copy_(self.flags_host[:count], non_blocking=True)

    def run(self) -> None:
        self.decode_program()

    def transfer_bytes(self, count: int, low_res: bool) -> int:
        if low_res:
            return self.low_res_offset + count * self.low_res_bytes_per_prompt
        return self.masks_offset + count * self.mask_bytes_per_prompt
