"""`DevicePipeline`: the PyTorch CUDA path's encode and decode calls, tying the device buffers,
the FP16 modules and the CUDA-graph programs together, with CUDA-event stage times."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilesam_ros.core.backends.base import DecoderInputs
from mobilesam_ros.core.backends.torch_device.precision import (
    MixedPrecisionDecoder,
    reduced_precision_encoder,
)
from mobilesam_ros.core.backends.torch_device.programs import (
    DecoderProgram,
    FrameProgram,
    GraphProgram,
    TransferBuffer,
    prompt_bucket,
)
from mobilesam_ros.core.model.constants import EMBEDDING_CHANNELS, EMBEDDING_SIZE, IMAGE_SIZE
from mobilesam_ros.core.model.modules import PromptDecoder
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.processing.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    FrameGeometry,
    validate_image,
)

MAX_DECODER_GRAPHS = 16  # least recently used ones are dropped beyond this


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
        self._frame: FrameProgram | None = None
        self._staging_free: Any = None  # event: the last image copy has left the staging buffer
        self._decoder_programs: OrderedDict[tuple[Any, ...], DecoderProgram] = OrderedDict()
        self._transfer: TransferBuffer | None = None
        self._threshold_value: float | None = None
        with self._on_device(), torch.inference_mode():
            self.graph_pool = torch.cuda.graph_pool_handle() if cuda_graph and on_cuda else None
            self.side_stream = torch.cuda.Stream() if self.graph_pool is not None else None
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
            self._encoder_program = GraphProgram(
                lambda: self.encoder(self.model_input), self.graph_pool, self.side_stream
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

    def _upload(self, image: np.ndarray, channel_order: str) -> FrameProgram:
        key = (image.shape, channel_order)
        if self._frame is None or self._frame.key != key:
            self._frame = None  # release the old size's buffers first
            self._frame = FrameProgram(self, image.shape, channel_order)
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

    def _decoder_program(self, key: tuple[Any, ...]) -> DecoderProgram:
        program = self._decoder_programs.get(key)
        if program is not None:
            self._decoder_programs.move_to_end(key)
            return program
        geometry = key[-1]
        if any(k[-1] != geometry for k in self._decoder_programs):
            # The image size changed: drop the old graphs, and the transfer buffer sized for them.
            self._decoder_programs.clear()
            self._transfer = None
        while len(self._decoder_programs) >= MAX_DECODER_GRAPHS:
            self._decoder_programs.popitem(last=False)
        program = DecoderProgram(self, *key)
        self._decoder_programs[key] = program
        return program

    def transfer(self, nbytes: int) -> TransferBuffer:
        """The transfer buffer all decoder programs share (decodes run one at a time and each
        hands out copies before returning), grown to at least `nbytes`. Growing it drops the
        programs held, whose graphs write into the old one: they are captured again when next
        used. It grows only when a program needs more than every one before it."""
        if self._transfer is None or self._transfer.device.numel() < nbytes:
            self._decoder_programs.clear()
            self._transfer = None  # the old pair is freed before the larger one is allocated
            self._transfer = TransferBuffer(
                torch.empty(nbytes, dtype=torch.uint8, device=self.device),
                torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pinned),
            )
        return self._transfer

    def decoder_graph_keys(self) -> Iterator[tuple[Any, ...]]:
        """(bucket, tokens per prompt, multimask, hints, geometry) of the decoder programs held."""
        return iter(self._decoder_programs)

    # -- timings ---------------------------------------------------------------------------

    def stage_timings(self) -> dict[str, float] | None:
        """Device milliseconds of the last frame's stages, from CUDA events: preprocess (image
        upload and resize), encode, decode (prompt upload, decoder, scores and low-res logits
        into the transfer buffer), postprocess (masks and the transfer back). They cover the
        frame's device work end to end; decode and postprocess are 0 when the last frame was
        only encoded. None on the CPU."""
        with self._on_device():
            return self._events.timings_ms()
