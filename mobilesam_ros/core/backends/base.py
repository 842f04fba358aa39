"""The interface every inference runtime implements, and the decoder's inputs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mobilesam_ros.core.model.constants import LOW_RES_SIZE
from mobilesam_ros.core.processing.postprocess import MaskCrop

# The decoder's "no mask prompt" inputs, shared by every call without mask hints (never written).
_NO_MASK = np.zeros((1, 1, LOW_RES_SIZE, LOW_RES_SIZE), dtype=np.float32)
_NO_MASK_FLAG = np.zeros(1, dtype=np.float32)

DecoderOutputs = tuple[np.ndarray, np.ndarray]  # low-res logits (N, K, 256, 256), IoU (N, K)


@dataclass(frozen=True)
class DecoderInputs:
    """The prompt side of the decoder graph for N prompts (export.DECODER_INPUTS after the
    image embedding), float32:

      point_coords   (N, T, 2) in the 1024x1024 model frame
      point_labels   (N, T): 1 foreground, 0 background, 2/3 box corners, -1 padding
      mask_input     (M, 1, 256, 256) low-res logit hints, M = 1 (shared) or N
      has_mask_input (M,): 1 where the hint is used, else 0
    """

    point_coords: np.ndarray
    point_labels: np.ndarray
    mask_input: np.ndarray = field(default_factory=lambda: _NO_MASK)
    has_mask_input: np.ndarray = field(default_factory=lambda: _NO_MASK_FLAG)

    def __len__(self) -> int:
        return len(self.point_coords)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.point_coords, self.point_labels, self.mask_input, self.has_mask_input

    def chunks(self, size: int) -> Iterator[DecoderInputs]:
        """Consecutive pieces of at most `size` prompts (this object itself when it fits)."""
        if len(self) <= size:
            yield self
            return
        per_prompt = len(self.mask_input) == len(self)  # else one hint row shared by all
        for start in range(0, len(self), size):
            rows = slice(start, start + size)
            yield DecoderInputs(
                self.point_coords[rows],
                self.point_labels[rows],
                self.mask_input[rows] if per_prompt else self.mask_input,
                self.has_mask_input[rows] if per_prompt else self.has_mask_input,
            )


def decode_in_chunks(
    decode: Callable[[DecoderInputs], DecoderOutputs], inputs: DecoderInputs, size: int
) -> DecoderOutputs:
    """Run `decode` on pieces of at most `size` prompts and join the outputs in order."""
    outputs = [decode(chunk) for chunk in inputs.chunks(size)]
    if len(outputs) == 1:  # the usual case: no copy of the outputs
        return outputs[0]
    return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])


class Backend(ABC):
    """Runs the exported graphs: encoder once per image, decoder once per batch of prompts.

    Inputs and outputs are numpy arrays in the layouts of `export.py`; the image embedding is
    whatever the runtime keeps natively (a device tensor stays on the device) and only this
    backend reads it back.
    """

    name: str = "base"
    device: str = "cpu"
    # Set by create_backend("auto") when it passed over TensorRT: why (else None).
    fallback_reason: str | None = None

    @abstractmethod
    def encode(self, image: np.ndarray) -> Any:
        """(1, 3, 1024, 1024) float32 normalized image -> opaque image embedding."""

    @abstractmethod
    def decode(self, embedding: Any, inputs: DecoderInputs, multimask: bool) -> DecoderOutputs:
        """Decode N prompts -> (low-res logits (N, K, 256, 256), predicted IoU (N, K))."""

    def encode_image(self, image: np.ndarray, channel_order: str) -> tuple[Any, Any] | None:
        """Pre-process and encode on the device: (embedding, FrameGeometry), or None when this
        backend takes the host-side pre-processing (the default)."""
        return None

    def decode_masks(
        self,
        embedding: Any,
        inputs: DecoderInputs,
        multimask: bool,
        geometry: Any,
        threshold: float,
        low_res: bool = True,
        crops: bool = False,
    ) -> tuple[np.ndarray | list[MaskCrop], np.ndarray, np.ndarray | None] | None:
        """Decode and post-process on the device: (masks, scores, low-res logits) as numpy, or
        None when this backend leaves post-processing to the host (the default). The logits
        come back only when `low_res` (else None); with `crops`, the masks come as a flat list
        of N x K tight `MaskCrop`s (prompt-major) instead of (N, K, H, W)."""
        return None

    @abstractmethod
    def embedding_to_numpy(self, embedding: Any) -> np.ndarray:
        """The embedding as a (1, 256, 64, 64) float32 array (copied off the device if needed)."""

    def describe(self) -> str:
        return f"{self.name} on {self.device}"
