"""ONNX Runtime backend: the default on CPU, CUDA execution provider when installed."""

from __future__ import annotations

from typing import Any

import numpy as np

from mobilesam_ros.core.backends.base import Backend, DecoderInputs, DecoderOutputs
from mobilesam_ros.core.choices import check_device, cuda_index, is_cuda
from mobilesam_ros.core.errors import BackendUnavailableError
from mobilesam_ros.core.model.export import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUT,
    OnnxModels,
)

_shared_cpu_arena_registered = False


def _register_shared_cpu_arena(onnxruntime: Any) -> None:
    """One CPU memory arena for every session of this process (encoder and decoders).

    Each session's own arena keeps its peak for the life of the process, so the encoder's and
    the decoder's buffers would add up; sharing one arena, the decoder reuses what the encoder
    released (measured: 210 MiB less RSS, docs/BENCHMARKS.md).
    """
    global _shared_cpu_arena_registered
    if _shared_cpu_arena_registered:
        return
    memory_info = onnxruntime.OrtMemoryInfo(
        "Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT
    )
    # max_mem 0 and -1 elsewhere: ONNX Runtime's defaults (no cap, power-of-two extension).
    onnxruntime.create_and_register_allocator(memory_info, onnxruntime.OrtArenaCfg(0, -1, -1, -1))
    _shared_cpu_arena_registered = True


def cuda_provider_available() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, models: OnnxModels, device: str = "auto") -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend 'onnxruntime' needs the onnxruntime package (pip install onnxruntime)"
            ) from exc
        self._ort = onnxruntime
        if device == "auto":
            device = "cuda" if cuda_provider_available() else "cpu"
        if is_cuda(check_device(device)):
            if not cuda_provider_available():
                raise BackendUnavailableError(
                    f"device {device!r} needs onnxruntime with the CUDA execution provider "
                    "(pip install onnxruntime-gpu); this onnxruntime has "
                    f"{onnxruntime.get_available_providers()}"
                )
            device_id = cuda_index(device)
            self._providers: list[Any] = [
                ("CUDAExecutionProvider", {"device_id": device_id}),
                "CPUExecutionProvider",
            ]
        elif device == "cpu":
            self._providers = ["CPUExecutionProvider"]
            _register_shared_cpu_arena(onnxruntime)
        else:
            raise BackendUnavailableError(
                f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}"
            )
        self.device = device
        self._models = models
        self._encoder = self._session(models.encoder)
        self._decoders = {False: self._session(models.decoder_single)}

    def _session(self, path: Any) -> Any:
        options = self._ort.SessionOptions()
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.device == "cpu":
            # The arena stays on (without it every call page-faults its buffers again; its
            # size is bounded by the Segmenter's decoder chunks, decoder_memory_mb). Memory
            # patterns are off: from the second run on they allocate one block per graph next
            # to what the arena already holds (measured: encoder steady RSS 724 -> 451 MiB
            # without them, same speed; docs/BENCHMARKS.md).
            options.enable_cpu_mem_arena = True
            options.enable_mem_pattern = False
            options.add_session_config_entry("session.use_env_allocators", "1")
        return self._ort.InferenceSession(str(path), options, providers=self._providers)

    def _decoder(self, multimask: bool) -> Any:
        session = self._decoders.get(multimask)
        if session is None:  # the multimask graph is loaded on first use
            session = self._decoders[multimask] = self._session(self._models.decoder(multimask))
        return session

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self._encoder.run(None, {ENCODER_INPUT: image})[0]

    def decode(
        self, embedding: np.ndarray, inputs: DecoderInputs, multimask: bool
    ) -> DecoderOutputs:
        feeds = dict(zip(DECODER_INPUTS, (embedding, *inputs.arrays()), strict=True))
        masks, iou = self._decoder(multimask).run(list(DECODER_OUTPUTS), feeds)
        return masks, iou

    def embedding_to_numpy(self, embedding: np.ndarray) -> np.ndarray:
        return embedding
