"""The PyTorch fast path for a CUDA GPU: pre-processing, FP16 encoder and decoder, and mask
post-processing on the device, each replayed from a CUDA graph, with pinned-memory transfers.

Per frame: one host-to-device copy of the camera image and one of the prompts (from pinned
staging buffers), graph replays for pre-processing, encoder, decoder and post-processing, and one
device-to-host copy of what the caller needs (scores and masks, the low-res logits only when
asked), waited for with an event. The encoder graph is captured at construction; pre-processing
graphs when an image size first appears; decoder graphs per (prompt bucket, tokens per prompt,
multimask, mask hints) when first used, prompts padded to the bucket. All graphs share one memory
pool: they replay one after the other on one stream, and every output read later lives in a
buffer allocated outside the graphs. The same code runs eagerly on the CPU (no graphs, no pinned
memory), which is how the tests check it where no GPU is present.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobilesam_ros.core.backends.base import DecoderInputs
from mobilesam_ros.core.model.constants import (
    EMBEDDING_CHANNELS,
    EMBEDDING_SIZE,
    IMAGE_SIZE,
    LOW_RES_SIZE,
)
from mobilesam_ros.core.model.modules import PromptDecoder
from mobilesam_ros.core.model.tiny_vit import Attention, LayerNorm, LayerNorm2d
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.processing.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    FrameGeometry,
    validate_image,
)

_UPSCALE = IMAGE_SIZE // LOW_RES_SIZE
# Prompt counts decoder graphs are captured for; a frame's prompts are padded up to the next one.
PROMPT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
MAX_DECODER_GRAPHS = 16  # least recently used ones are dropped beyond this
_ALIGN = 16  # bytes / elements: alignment of transfer sections and attention-bias rows


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
    return -(-nbytes // _ALIGN) * _ALIGN


def _reduced_precision_copy(
    module: nn.Module, dtype: torch.dtype, keep_fp32: tuple[type, ...]
) -> nn.Module:
    """A copy of `module` in `dtype`, converted once, except submodules of the `keep_fp32` types,
    whose parameters keep their exact FP32 values."""
    converted = copy.deepcopy(module).to(dtype)
    originals = dict(module.named_modules())
    for name, submodule in converted.named_modules():
        if isinstance(submodule, keep_fp32):
            submodule.float().load_state_dict(originals[name].state_dict())
    return converted.eval()


def reduced_precision_encoder(
    encoder: nn.Module, dtype: torch.dtype = torch.float16, fused_attention: bool = True
) -> nn.Module:
    """The TinyViT encoder in `dtype` with LayerNorm, LayerNorm2d and the attention softmax in
    FP32 (see tiny_vit.py); attention through scaled_dot_product_attention when
    `fused_attention`. Call on the encoder already on its device."""
    converted = _reduced_precision_copy(encoder, dtype, (nn.LayerNorm, LayerNorm2d))
    for module in converted.modules():
        if isinstance(module, Attention):
            module.use_sdpa = fused_attention
            table = module.bias_table
            if table.numel():
                # Rows padded to 16 elements: the fused kernels want an aligned mask stride and
                # would otherwise pad a copy on every call.
                tokens = table.shape[-1]
                padded = table.new_zeros(*table.shape[:-1], -(-tokens // _ALIGN) * _ALIGN)
                padded[..., :tokens] = table
                module.bias_table = padded[..., :tokens]
    return converted


def _swap_layer_norms(module: nn.Module) -> None:
    """Replace every nn.LayerNorm by tiny_vit.LayerNorm (FP32 inside for FP16 input)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.LayerNorm:
                norm = LayerNorm(child.normalized_shape, child.eps, device=child.weight.device)
                norm.load_state_dict(child.state_dict())
                setattr(parent, name, norm)


class MixedPrecisionDecoder(PromptDecoder):
    """PromptDecoder in `dtype` with its sensitive parts in FP32: the prompt encoder (Fourier
    features of the coordinates, mask hints through LayerNorm2d) and the transformer's
    LayerNorms. `mask_input=None` means no hints: the constant no-mask embedding, kept on the
    device, replaces the mask branch."""

    def __init__(self, decoder: PromptDecoder, dtype: torch.dtype = torch.float16) -> None:
        mask_decoder = copy.deepcopy(decoder.mask_decoder)
        _swap_layer_norms(mask_decoder)
        mask_decoder = _reduced_precision_copy(mask_decoder, dtype, (nn.LayerNorm,))
        prompt_encoder = copy.deepcopy(decoder.prompt_encoder).float()
        super().__init__(prompt_encoder, mask_decoder, decoder.multimask)
        self.compute_dtype = dtype
        self.image_pe = self.image_pe.to(dtype)
        no_mask = prompt_encoder.no_mask_embed.weight.detach().reshape(1, -1, 1, 1)
        self.register_buffer("no_mask_dense", no_mask.to(dtype), persistent=False)
        self.eval()

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super()._embed_points(coords, labels).to(self.compute_dtype)

    def _embed_masks(
        self, mask_input: torch.Tensor | None, has_mask_input: torch.Tensor | None
    ) -> torch.Tensor:
        if mask_input is None:
            return self.no_mask_dense
        return super()._embed_masks(mask_input, has_mask_input).to(self.compute_dtype)


def upscale_logits(low_res_logits: torch.Tensor, geometry: FrameGeometry) -> torch.Tensor:
    """(N, K, 256, 256) logits -> (N, K, H, W) logits in the original frame, the two bilinear
    steps of postprocess.masks_from_logits (only the low-res rows/cols the crop keeps)."""
    height, width = geometry.original_size
    nh, nw = geometry.input_size
    lead = low_res_logits.shape[:-2]
    rows = min(LOW_RES_SIZE, -(-nh // _UPSCALE) + 1)
    cols = min(LOW_RES_SIZE, -(-nw // _UPSCALE) + 1)
    x = low_res_logits.reshape(1, -1, LOW_RES_SIZE, LOW_RES_SIZE)[..., :rows, :cols]
    x = F.interpolate(x, (rows * _UPSCALE, cols * _UPSCALE), mode="bilinear", align_corners=False)
    x = x[..., :nh, :nw]
    if (nh, nw) != (height, width):
        x = F.interpolate(x, (height, width), mode="bilinear", align_corners=False)
    return x.reshape(*lead, height, width)


def resize_like_pillow(chw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 3, H, W) float pixels -> (1, 3, h, w), as the official pipeline's PIL bilinear resize
    (antialiased when shrinking) followed by its rounding to uint8."""
    resized = F.interpolate(chw, size, mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255)


class _Program:
    """A piece of per-frame device work: replayed from a CUDA graph when `pool` is given (call
    inside the device's context), else run eagerly. Returns the body's outputs."""

    def __init__(self, body: Callable[[], Any], pool: Any = None) -> None:
        self.body = body
        self.graph: Any = None
        self.outputs: Any = None
        if pool is None:
            return
        side_stream = torch.cuda.Stream()
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


class _FrameProgram:
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

        self.program = _Program(preprocess, pipeline.graph_pool)


class _DecoderProgram:
    """Static prompt buffers, the decoder and post-processing programs, and the transfer buffer
    of one decoder key. Transfer layout: scores | masks | low-res logits, so one copy of a
    prefix brings back what the caller asked for."""

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
        total = self.low_res_offset + bucket * self.low_res_bytes_per_prompt
        self.device_bytes = torch.empty(total, dtype=torch.uint8, device=device)
        self.host_bytes = torch.empty(total, dtype=torch.uint8, pin_memory=pinned)
        scores, masks, low_res = self._sections(self.device_bytes, outputs, height, width)
        self.host_scores, self.host_masks, self.host_low_res = (
            t.numpy() for t in self._sections(self.host_bytes, outputs, height, width)
        )

        decoder = pipeline.decoder_calls[multimask]
        self._decoded: Any = None

        def decode() -> Any:
            return decoder(pipeline.embedding, self.coords, self.labels, self.hints, self.flags)

        def postprocess() -> None:
            logits, iou = self._decoded
            scores.copy_(iou)
            low_res.copy_(logits)  # FP32: for the caller and for interpolation
            torch.gt(upscale_logits(low_res, geometry), pipeline.threshold, out=masks)

        self.decode_program = _Program(decode, pipeline.graph_pool)
        self._decoded = self.decode_program.outputs
        self.postprocess_program = _Program(postprocess, pipeline.graph_pool)

    def _sections(
        self, buffer: torch.Tensor, outputs: int, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bucket = self.bucket
        scores = buffer[: bucket * outputs * 4].view(torch.float32).view(bucket, outputs)
        masks_end = self.masks_offset + bucket * self.mask_bytes_per_prompt
        masks = buffer[self.masks_offset : masks_end].view(torch.bool)
        low_res = buffer[self.low_res_offset :].view(torch.float32)
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
        self._decoded = self.decode_program()

    def transfer_bytes(self, count: int, low_res: bool) -> int:
        if low_res:
            return self.low_res_offset + count * self.low_res_bytes_per_prompt
        return self.masks_offset + count * self.mask_bytes_per_prompt


class _StageEvents:
    """CUDA events at the stage boundaries of the last frame (none on the CPU)."""

    NAMES = ("start", "preprocessed", "encoded", "decode_start", "decoded", "done")

    def __init__(self, enabled: bool) -> None:
        self.events = (
            {name: torch.cuda.Event(enable_timing=True) for name in self.NAMES} if enabled else {}
        )
        self.encoded = False  # a frame was recorded (elapsed times exist)
        self.decoded_last_frame = False

    def record(self, name: str) -> None:
        if self.events:
            self.events[name].record()

    def wait(self, name: str) -> None:
        if self.events:
            self.events[name].synchronize()

    def timings_ms(self) -> dict[str, float] | None:
        if not (self.events and self.encoded):
            return None
        ev = self.events
        last = "done" if self.decoded_last_frame else "encoded"
        ev[last].synchronize()
        timings = {
            "preprocess_ms": ev["start"].elapsed_time(ev["preprocessed"]),
            "encode_ms": ev["preprocessed"].elapsed_time(ev["encoded"]),
            "decode_ms": 0.0,
            "postprocess_ms": 0.0,
        }
        if self.decoded_last_frame:
            timings["decode_ms"] = ev["decode_start"].elapsed_time(ev["decoded"])
            timings["postprocess_ms"] = ev["decoded"].elapsed_time(ev["done"])
        return timings


class DevicePipeline:
    """Device-side pre-processing, encoder, batched decoder and post-processing.

    Args:
      encoder: the fused TinyViT encoder (FP32); converted once to `fp16` precision.
      device: "cpu", "cuda" or "cuda:N"; every CUDA call runs in that device's context (the
        calling thread's current device does not matter).
      decoders: PromptDecoder per multimask flag; `decode` needs them.
      fp16: FP16 encoder and decoder (sensitive parts in FP32); on the CPU for tests only.
      cuda_graph: replay CUDA graphs (CUDA only).
      fused_attention: encoder attention through scaled_dot_product_attention (with fp16).
      compile_decoder: run the decoders through `torch.compile` (fuses their element-wise
        work; compiles once per prompt bucket, 10-20 s each on an H100's host).
    """

    def __init__(
        self,
        encoder: nn.Module,
        device: str,
        decoders: Mapping[bool, PromptDecoder] | None = None,
        fp16: bool = True,
        cuda_graph: bool = True,
        fused_attention: bool = True,
        compile_decoder: bool = False,
    ) -> None:
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"
        if on_cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dtype = torch.float16 if fp16 else torch.float32
        self.pinned = on_cuda
        self._events = _StageEvents(on_cuda)
        self._frame: _FrameProgram | None = None
        self._staging_free: Any = None  # event: the last image copy has left the staging buffer
        self._decoder_programs: OrderedDict[tuple[Any, ...], _DecoderProgram] = OrderedDict()
        self._threshold_value: float | None = None
        with self._on_device(), torch.inference_mode():
            self.graph_pool = torch.cuda.graph_pool_handle() if cuda_graph and on_cuda else None
            encoder = encoder.to(self.device).eval()
            if fp16:
                encoder = reduced_precision_encoder(encoder, self.dtype, fused_attention)
            self.encoder = encoder
            self.decoders = {
                multimask: MixedPrecisionDecoder(decoder.to(self.device), self.dtype)
                for multimask, decoder in (decoders or {}).items()
            }
            self.decoder_calls: dict[bool, Callable[..., Any]] = {
                multimask: torch.compile(decoder, dynamic=False) if compile_decoder else decoder
                for multimask, decoder in self.decoders.items()
            }
            shape = (1, 3, IMAGE_SIZE, IMAGE_SIZE)
            self.model_input = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self.pixel_mean = torch.tensor(PIXEL_MEAN, device=self.device).view(1, 3, 1, 1)
            self.pixel_scale = 1.0 / torch.tensor(PIXEL_STD, device=self.device).view(1, 3, 1, 1)
            # The decoder graphs read the frame's embedding from here.
            shape = (1, EMBEDDING_CHANNELS, EMBEDDING_SIZE, EMBEDDING_SIZE)
            self.embedding = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self.threshold = torch.zeros((), device=self.device)
            # Captured now, so the first frame pays no warm-up or capture.
            self._encoder_program = _Program(
                lambda: self.encoder(self.model_input), self.graph_pool
            )

    def _on_device(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda":
            return torch.cuda.device(self.device)
        return contextlib.nullcontext()

    # -- encoder ---------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(
        self, image: np.ndarray, channel_order: str = "rgb"
    ) -> tuple[torch.Tensor, FrameGeometry]:
        """HxWxC uint8 image -> (embedding (1, 256, 64, 64) on the device, geometry)."""
        image = validate_image(image, channel_order)
        with self._on_device():
            self._events.record("start")
            frame = self._upload(image, channel_order)
            frame.program()
            self._events.record("preprocessed")
            output = self._encoder_program()
            self._events.record("encoded")
            self._events.encoded = True
            self._events.decoded_last_frame = False
            # The encoder's output buffer is overwritten by the next frame: hand out a copy.
            return output.clone(), frame.geometry

    def _upload(self, image: np.ndarray, channel_order: str) -> _FrameProgram:
        key = (image.shape, channel_order)
        if self._frame is None or self._frame.key != key:
            self._frame = None  # release the old size's buffers first
            self._frame = _FrameProgram(self, image.shape, channel_order)
        frame = self._frame
        if self._staging_free is not None:
            self._staging_free.synchronize()  # the previous image has left the staging buffer
        np.copyto(frame.staging_array, image)
        frame.pixels.copy_(frame.staging, non_blocking=True)
        if self.pinned:
            if self._staging_free is None:
                self._staging_free = torch.cuda.Event()
            self._staging_free.record()
        return frame

    # -- decoder ---------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(
        self,
        embedding: torch.Tensor,
        inputs: DecoderInputs,
        multimask: bool,
        geometry: FrameGeometry,
        threshold: float,
        low_res: bool = True,
        crops: bool = False,
    ) -> tuple[np.ndarray | list[MaskCrop], np.ndarray, np.ndarray | None]:
        """Decode N prompts on an embedding from `encode` and post-process them: (masks
        (N, K, H, W) bool, scores (N, K), low-res logits (N, K, 256, 256) or None unless
        `low_res`), as numpy arrays the caller owns. With `crops`, the masks come as N x K
        tight `MaskCrop`s (prompt-major): only their boxes are copied out of the transfer
        buffer, not whole frames."""
        if not self.decoders:
            raise ValueError("this DevicePipeline was built without decoders")
        count = len(inputs)
        tokens = inputs.point_coords.shape[1]
        hints = bool(np.any(inputs.has_mask_input))
        with self._on_device():
            self._events.record("decode_start")
            program = self._decoder_program(
                (prompt_bucket(count), tokens, bool(multimask), hints, geometry)
            )
            program.upload(inputs)
            self.embedding.copy_(embedding)
            if threshold != self._threshold_value:
                self.threshold.fill_(threshold)
                self._threshold_value = threshold
            program.run()
            self._events.record("decoded")
            program.postprocess_program()
            nbytes = program.transfer_bytes(count, low_res)
            program.host_bytes[:nbytes].copy_(program.device_bytes[:nbytes], non_blocking=True)
            self._events.record("done")
            self._events.wait("done")
            self._events.decoded_last_frame = True
        # The host buffer is reused by the next frame: the caller gets copies.
        if crops:
            masks = program.host_masks[:count]
            views = (MaskCrop.from_mask(mask) for mask in masks.reshape(-1, *masks.shape[-2:]))
            taken: np.ndarray | list[MaskCrop] = [
                dataclasses.replace(view, mask=view.mask.copy()) for view in views
            ]
        else:
            taken = program.host_masks[:count].copy()
        return (
            taken,
            program.host_scores[:count].copy(),
            program.host_low_res[:count].copy() if low_res else None,
        )

    def _decoder_program(self, key: tuple[Any, ...]) -> _DecoderProgram:
        program = self._decoder_programs.get(key)
        if program is not None:
            self._decoder_programs.move_to_end(key)
            return program
        geometry = key[-1]
        if any(k[-1] != geometry for k in self._decoder_programs):
            self._decoder_programs.clear()  # the image size changed: drop the old graphs
        while len(self._decoder_programs) >= MAX_DECODER_GRAPHS:
            self._decoder_programs.popitem(last=False)
        program = _DecoderProgram(self, *key)
        self._decoder_programs[key] = program
        return program

    def decoder_graph_keys(self) -> Iterator[tuple[Any, ...]]:
        """(bucket, tokens per prompt, multimask, hints, geometry) of the decoder programs held."""
        return iter(self._decoder_programs)

    # -- timings ---------------------------------------------------------------------------

    def stage_timings(self) -> dict[str, float] | None:
        """Device milliseconds of the last frame's stages, from CUDA events: preprocess (image
        upload and resize), encode, decode (prompt upload and decoder), postprocess (masks and
        the transfer back). They cover the frame's device work end to end; decode and
        postprocess are 0 when the last frame was only encoded. None on the CPU."""
        with self._on_device():
            return self._events.timings_ms()
