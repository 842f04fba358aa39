"""`Segmenter`: the public, ROS-free entry point (image in, one mask per prompt out)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mobilesam_ros.core.backends import Backend, create_backend
from mobilesam_ros.core.backends.base import DecoderInputs, decode_in_chunks
from mobilesam_ros.core.choices import DEFAULT_PRECISION, PRECISIONS, check_choice
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.jetson import default_decoder_batch
from mobilesam_ros.core.model.checkpoint import default_cache_dir, resolve_checkpoint
from mobilesam_ros.core.model.constants import LOW_RES_SIZE
from mobilesam_ros.core.processing.postprocess import (
    MaskCrop,
    mask_crops_from_logits,
    masks_from_logits,
)
from mobilesam_ros.core.processing.preprocess import (
    FrameGeometry,
    ImagePreprocessor,
    encode_prompts,
)
from mobilesam_ros.core.settings import ModelSettings

DEFAULT_MAX_BATCH = default_decoder_batch()  # 16 on a Jetson, else 64
# Working memory of one decoder call on the CPU path, and what each prompt in a call adds to
# it (the image embedding repeated per prompt, attention and upscaling buffers), measured with
# ONNX Runtime on the CPU (docs/BENCHMARKS.md, `make bench-memory`).
DEFAULT_DECODER_MEMORY_MB = 256
DECODER_MB_PER_PROMPT = 40


@dataclass(frozen=True)
class ImageEmbedding:
    """One encoded image: the backend's embedding plus the geometry needed to decode on it."""

    data: Any
    geometry: FrameGeometry
    backend: Backend = field(repr=False)

    @property
    def original_size(self) -> tuple[int, int]:
        return self.geometry.original_size


@dataclass(frozen=True)
class SegmentationResult:
    """Masks for N prompts, in prompt order. K = 3 with multimask, else the K axis is absent.

    `decode(..., crops=True)` gives `mask_crops` instead of `masks` (which is then None): each
    mask as its tight bounding-box crop, equal pixel for pixel to the crop of the full mask.
    """

    masks: np.ndarray | None  # (N, H, W) or (N, 3, H, W) bool
    scores: np.ndarray  # (N,) or (N, 3) float32 predicted IoU
    low_res_logits: np.ndarray | None  # (N, 256, 256) or (N, 3, 256, 256); None if not asked
    mask_crops: list[MaskCrop] | list[list[MaskCrop]] | None = None  # N, or N lists of 3

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class StageTimings:
    """Wall time of the last call of each stage, in milliseconds."""

    preprocess_ms: float = 0.0
    encode_ms: float = 0.0
    decode_ms: float = 0.0
    postprocess_ms: float = 0.0


class Segmenter:
    """MobileSAM: `encode` an image once, then `decode` any number of prompts on it.

    Args:
      checkpoint: path of mobile_sam.pt; None downloads the official file into `cache_dir`.
      backend: "auto", "onnxruntime", "openvino", "torch" or "tensorrt".
      cache_dir: folder for the downloaded checkpoint and exported graphs (default: XDG cache).
      device: "auto", "cpu", "cuda[:N]" (an NVIDIA GPU) or "gpu" (an Intel GPU, OpenVINO).
      mask_threshold: logit above which a pixel belongs to the mask.
      max_batch: prompts per decoder call (default 64, 16 on a Jetson); larger N are decoded
        in several calls. The TensorRT decoders' optimization profile is 1 to this.
      decoder_memory_mb: working memory one decoder call may take on the CPU path, in MB
        (about 40 MB per prompt); prompts are decoded in chunks that fit, at least one prompt
        per call, so memory stays flat however many prompts a frame has.
      progress: show download and export progress on stderr.
      precision: "fp16" or "fp32" for the NVIDIA GPU backends (tensorrt engines, torch on
        CUDA); CPUs compute FP32 unless "bf16" asks OpenVINO for BF16 (AMX or AVX-512 BF16).
      force_rebuild: build TensorRT engines again even when a valid one is cached.
      compile_decoder: on the PyTorch CUDA path, run the decoder through `torch.compile`
        (needs Triton; about 2x faster decoder on an H100, 10-20 s of compiling the first time
        each prompt-count bucket 1, 2, 4, 8, 16, ... is met). Ignored elsewhere.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
        device: str = "auto",
        mask_threshold: float = 0.0,
        max_batch: int = DEFAULT_MAX_BATCH,
        decoder_memory_mb: int = DEFAULT_DECODER_MEMORY_MB,
        progress: bool = True,
        precision: str = DEFAULT_PRECISION,
        force_rebuild: bool = False,
        compile_decoder: bool = False,
    ) -> None:
        if max_batch < 1:
            raise InvalidInputError(f"max_batch must be at least 1, got {max_batch}")
        whole = isinstance(decoder_memory_mb, (int, np.integer)) and not isinstance(
            decoder_memory_mb, bool
        )
        if not whole or decoder_memory_mb < 1:
            raise InvalidInputError(
                f"decoder_memory_mb must be a whole number of MB, at least 1; got "
                f"{decoder_memory_mb!r}"
            )
        check_choice("precision", precision, PRECISIONS)
        if not np.isfinite(mask_threshold):
            raise InvalidInputError(f"mask_threshold must be finite, got {mask_threshold}")
        cache = os.fspath(cache_dir) if cache_dir else os.fspath(default_cache_dir())
        self.checkpoint = resolve_checkpoint(checkpoint, cache, progress=progress)
        options = {
            "precision": precision,
            "max_prompts": int(max_batch),
            "force_rebuild": bool(force_rebuild),
            "fp16": precision == "fp16",
            "compile_decoder": bool(compile_decoder),
        }
        self.backend = create_backend(
            backend, self.checkpoint, cache, device, progress=progress, options=options
        )
        self.mask_threshold = float(mask_threshold)
        self.max_batch = int(max_batch)
        self.decoder_memory_mb = int(decoder_memory_mb)
        # Prompts per decoder call on the host path: what the budget holds, at least one.
        self.decode_chunk_size = min(
            self.max_batch, max(1, self.decoder_memory_mb // DECODER_MB_PER_PROMPT)
        )
        self.timings = StageTimings()
        self._preprocess = ImagePreprocessor()

    @classmethod
    def from_settings(
        cls, model: ModelSettings, mask_threshold: float = 0.0, progress: bool = True
    ) -> Segmenter:
        """A Segmenter as the node's parameters describe it."""
        return cls(
            checkpoint=model.checkpoint or None,
            backend=model.backend,
            cache_dir=model.cache_dir or None,
            device=model.device,
            mask_threshold=mask_threshold,
            decoder_memory_mb=model.decoder_memory_mb,
            progress=progress,
            precision=model.precision,
            force_rebuild=model.force_rebuild,
            compile_decoder=model.compile_decoder,
        )

    def encode(self, image: np.ndarray, channel_order: str = "rgb") -> ImageEmbedding:
        """Encode an HxWx3 uint8 RGB image (or BGR, RGBA, BGRA as `channel_order` says)."""
        started = time.perf_counter()
        on_device = self.backend.encode_image(image, channel_order)
        if on_device is not None:  # the GPU path pre-processes on the device too
            data, geometry = on_device
            self.timings.preprocess_ms = 0.0
            self.timings.encode_ms = (time.perf_counter() - started) * 1e3
            return ImageEmbedding(data, geometry, self.backend)
        model_input, geometry = self._preprocess(image, channel_order)
        encode_started = time.perf_counter()
        data = self.backend.encode(model_input)
        self.timings.preprocess_ms = (encode_started - started) * 1e3
        self.timings.encode_ms = (time.perf_counter() - encode_started) * 1e3
        return ImageEmbedding(data, geometry, self.backend)

    def decode(
        self,
        embedding: ImageEmbedding,
        boxes: Any = None,
        points: Any = None,
        point_labels: Any = None,
        multimask: bool = False,
        mask_input: Any = None,
        crops: bool = False,
        low_res_logits: bool = True,
    ) -> SegmentationResult:
        """Masks for N prompts on an encoded image, decoded in batched calls of
        `decode_chunk_size` prompts (one call on the GPU backends up to `max_batch`).

        boxes: (N, 4) x_min, y_min, x_max, y_max in original-image pixels.
        points: (N, K, 2) x, y pixels; point_labels: (N, K), 1 foreground, 0 background,
          -1 ignored (default: all foreground). Prompt i uses boxes[i] and points[i].
        mask_input: optional (N, 256, 256) low-res logits of an earlier result, one per prompt;
          a list with None for prompts that have no such hint.
        N = 0 (an empty boxes or points array) returns empty arrays.
        crops: return `mask_crops` (tight `MaskCrop`s) instead of full-frame `masks`; on the
          host only the masks' boxes are upscaled, so the cost follows the masks' sizes.
        low_res_logits: also return the (256, 256) logits (the tracker's mask hints); else
          `low_res_logits` is None and the GPU path does not copy them off the device.
        """
        if not isinstance(embedding, ImageEmbedding) or embedding.backend is not self.backend:
            raise InvalidInputError("embedding must come from this Segmenter's encode()")
        geometry = embedding.geometry
        started = time.perf_counter()
        coords, labels = encode_prompts(geometry, boxes, points, point_labels)
        num_prompts = len(coords)
        inputs = DecoderInputs(coords, labels)
        if mask_input is not None:
            inputs = DecoderInputs(coords, labels, *self._mask_prompts(mask_input, num_prompts))
        on_device = None
        if 0 < num_prompts <= self.max_batch:
            on_device = self.backend.decode_masks(
                embedding.data,
                inputs,
                multimask,
                geometry,
                self.mask_threshold,
                low_res=low_res_logits,
                crops=crops,
            )
        if on_device is not None:  # decoded and post-processed on the GPU
            masks_or_crops, scores, low_res = on_device
            self._device_stage_timings()
        elif num_prompts == 0:
            outputs = 3 if multimask else 1
            low_res = np.empty((0, outputs, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
            scores = np.empty((0, outputs), np.float32)
        else:
            low_res, scores = decode_in_chunks(
                lambda chunk: self.backend.decode(embedding.data, chunk, multimask),
                inputs,
                self.decode_chunk_size,
            )
        if on_device is None:
            decoded = time.perf_counter()
            if crops:
                flat = mask_crops_from_logits(
                    low_res.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE), geometry, self.mask_threshold
                )
            else:
                masks = masks_from_logits(low_res, geometry, self.mask_threshold)
            self.timings.decode_ms = (decoded - started) * 1e3
            self.timings.postprocess_ms = (time.perf_counter() - decoded) * 1e3
        elif crops:
            flat = masks_or_crops
        else:
            masks = masks_or_crops
        if not low_res_logits:
            low_res = None
        elif not multimask:
            low_res = low_res[:, 0]
        if crops:
            outputs = scores.shape[1]
            nested = [flat[i * outputs : (i + 1) * outputs] for i in range(len(scores))]
            if not multimask:
                return SegmentationResult(None, scores[:, 0], low_res, [c[0] for c in nested])
            return SegmentationResult(None, scores, low_res, nested)
        if not multimask:
            return SegmentationResult(masks[:, 0], scores[:, 0], low_res)
        return SegmentationResult(masks, scores, low_res)

    def decode_logits(
        self, embedding: ImageEmbedding, points: Any, point_labels: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The three masks' low-res logits (N, 3, 256, 256) and predicted IoUs (N, 3) of N
        point prompts, without post-processing, in chunks of `decode_chunk_size`: for callers
        that filter before they upscale (segment everything)."""
        if not isinstance(embedding, ImageEmbedding) or embedding.backend is not self.backend:
            raise InvalidInputError("embedding must come from this Segmenter's encode()")
        coords, labels = encode_prompts(embedding.geometry, None, points, point_labels)
        return decode_in_chunks(
            lambda chunk: self.backend.decode(embedding.data, chunk, True),
            DecoderInputs(coords, labels),
            self.decode_chunk_size,
        )

    def _device_stage_timings(self) -> None:
        """Stage times of a GPU frame from its CUDA events (wall-clock times there would show
        launch times, not work); read after the decode, whose transfer waited for them."""
        read = getattr(self.backend, "stage_timings", None)
        timings = read() if read is not None else None
        for field_name, milliseconds in (timings or {}).items():  # e.g. "encode_ms"
            setattr(self.timings, field_name, float(milliseconds))

    def segment(self, rgb: np.ndarray, **prompts: Any) -> SegmentationResult:
        """`encode` then `decode` in one call."""
        return self.decode(self.encode(rgb), **prompts)

    def _mask_prompts(self, mask_input: Any, num_prompts: int) -> tuple[np.ndarray, np.ndarray]:
        """mask_input as the decoder takes it: (N, 1, 256, 256) hints and (N,) use flags."""
        if isinstance(mask_input, (list, tuple)) and any(m is None for m in mask_input):
            # Hints for some prompts only: zeros and a 0 flag for the others (same call).
            if len(mask_input) != num_prompts:
                raise InvalidInputError(
                    f"mask_input has {len(mask_input)} entries for {num_prompts} prompts"
                )
            given = [i for i, m in enumerate(mask_input) if m is not None]
            masks = np.zeros((num_prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
            flags = np.zeros(num_prompts, np.float32)
            if given:
                masks[given], _ = self._mask_prompts([mask_input[i] for i in given], len(given))
                flags[given] = 1.0
            return masks, flags
        masks = np.asarray(mask_input, dtype=np.float32)
        if masks.ndim == 3:
            masks = masks[:, None]
        expected = (num_prompts, 1, LOW_RES_SIZE, LOW_RES_SIZE)
        if masks.shape != expected:
            raise InvalidInputError(
                f"mask_input must have shape ({num_prompts}, {LOW_RES_SIZE}, {LOW_RES_SIZE}), "
                f"one low-res logit map per prompt; got {np.shape(mask_input)}"
            )
        if not np.all(np.isfinite(masks)):
            raise InvalidInputError("mask_input contains NaN or infinite values")
        return np.ascontiguousarray(masks), np.ones(num_prompts, dtype=np.float32)
