"""The interface every inference runtime implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Backend(ABC):
    """Runs the exported graphs: encoder once per image, decoder once per batch of prompts.

    Inputs and outputs are numpy arrays in the layouts of `export.py`; the image embedding is
    whatever the runtime keeps natively (a device tensor stays on the device) and only this
    backend reads it back.
    """

    name: str = "base"
    device: str = "cpu"

    @abstractmethod
    def encode(self, image: np.ndarray) -> Any:
        """(1, 3, 1024, 1024) float32 normalized image -> opaque image embedding."""

    @abstractmethod
    def decode(
        self,
        embedding: Any,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        mask_input: np.ndarray,
        has_mask_input: np.ndarray,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode N prompts -> (low-res logits (N, K, 256, 256), predicted IoU (N, K))."""

    def encode_image(self, image: np.ndarray, channel_order: str) -> tuple[Any, Any] | None:
        """Pre-process and encode on the device: (embedding, FrameGeometry), or None when this
        backend takes the host-side pre-processing (the default)."""
        return None

    def decode_masks(
        self,
        embedding: Any,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        mask_input: np.ndarray,
        has_mask_input: np.ndarray,
        multimask: bool,
        geometry: Any,
        threshold: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Decode and post-process on the device: (masks, scores, low-res logits) as numpy, or
        None when this backend leaves post-processing to the host (the default)."""
        return None

    @abstractmethod
    def embedding_to_numpy(self, embedding: Any) -> np.ndarray:
        """The embedding as a (1, 256, 64, 64) float32 array (copied off the device if needed)."""

    def describe(self) -> str:
        return f"{self.name} on {self.device}"
