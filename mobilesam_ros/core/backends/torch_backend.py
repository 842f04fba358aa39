"""PyTorch backend: the reference implementation, on CPU or CUDA."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError
from .base import Backend


def torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint: str | os.PathLike[str], device: str = "auto") -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend 'torch' needs PyTorch (pip install torch)"
            ) from exc
        from ..model import load_modules

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r}: this PyTorch sees no CUDA device")
        if device != "cpu" and not device.startswith("cuda"):
            raise BackendUnavailableError(
                f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}"
            )
        self._torch = torch
        self.device = device
        modules = load_modules(checkpoint)
        self._encoder = modules.encoder.to(device)
        self._decoders = {m: modules.decoder(m).to(device) for m in (False, True)}

    def encode(self, image: np.ndarray) -> Any:
        torch = self._torch
        with torch.inference_mode():
            return self._encoder(torch.from_numpy(image).to(self.device))

    def decode(
        self,
        embedding: Any,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        mask_input: np.ndarray,
        has_mask_input: np.ndarray,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        inputs = [
            torch.from_numpy(a).to(self.device)
            for a in (point_coords, point_labels, mask_input, has_mask_input)
        ]
        with torch.inference_mode():
            masks, iou = self._decoders[multimask](embedding, *inputs)
        return masks.cpu().numpy(), iou.cpu().numpy()

    def embedding_to_numpy(self, embedding: Any) -> np.ndarray:
        return embedding.cpu().numpy()
