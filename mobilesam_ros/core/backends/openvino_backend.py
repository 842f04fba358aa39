"""OpenVINO backend: Intel CPUs at their speed (FP32, or BF16 on CPUs with AMX or AVX-512
BF16), and Intel GPUs.

The graphs are the exported ONNX files (the single source of every runtime), compiled once per
device and precision and kept in OpenVINO's model cache under `cache_dir/openvino`, so a second
start loads the compiled blobs. The decoder keeps its dynamic prompt count. Requests run with
the latency hint: all cores on one inference, as the node runs one frame at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mobilesam_ros.core.backends.base import Backend, DecoderInputs, DecoderOutputs
from mobilesam_ros.core.errors import BackendUnavailableError
from mobilesam_ros.core.model.export import DECODER_INPUTS, DECODER_OUTPUTS, OnnxModels

# The node's device names -> OpenVINO's.
DEVICES = {"cpu": "CPU", "gpu": "GPU"}
# precision -> OpenVINO's inference precision hint, per device. A CPU computes FP32 unless asked
# for BF16; "fp16", the GPU backends' default, means FP32 there (said in the backend's
# description). An Intel GPU computes FP16 by default.
PRECISION_HINTS = {
    "CPU": {"fp16": "f32", "fp32": "f32", "bf16": "bf16"},
    "GPU": {"fp16": "f16", "fp32": "f32"},
}


def openvino_available() -> bool:
    """Whether the openvino package imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_has_bf16(core: Any) -> bool:
    """Whether OpenVINO computes BF16 natively on this CPU (AMX or AVX-512 BF16)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(
        self, models: OnnxModels, cache_dir: Path, device: str = "cpu", precision: str = "fp32"
    ) -> None:
        try:
            import openvino
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend 'openvino' needs the openvino package (pip install openvino)"
            ) from exc
        core = openvino.Core()
        device = "cpu" if device == "auto" else device
        if device not in DEVICES:
            raise BackendUnavailableError(
                f"backend 'openvino' runs on device 'cpu' or 'gpu' (an Intel GPU), not {device!r}"
            )
        target = DEVICES[device]
        if target not in core.available_devices:
            raise BackendUnavailableError(
                f"OpenVINO sees no {target} here (it sees {', '.join(core.available_devices)})"
            )
        hint = PRECISION_HINTS[target].get(precision)
        if hint is None:
            raise BackendUnavailableError(
                f"precision {precision!r} is not offered by OpenVINO on {target}; use "
                f"{' or '.join(PRECISION_HINTS[target])}"
            )
        if hint == "bf16" and not cpu_has_bf16(core):
            name = core.get_property("CPU", "FULL_DEVICE_NAME")
            raise BackendUnavailableError(
                f"precision 'bf16' needs a CPU with AMX or AVX-512 BF16; this one ({name}) "
                "offers "
                + ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
                + ": use precision fp32"
            )
        core.set_property({"CACHE_DIR": str(Path(cache_dir) / "openvino")})
        self._config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
        self._core = core
        self._target = target
        self._models = models
        self.device = device
        self.precision = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}[hint]
        self._encoder = self._compile(models.encoder).create_infer_request()
        self._decoders: dict[bool, Any] = {}

    def _compile(self, path: Path) -> Any:
        return self._core.compile_model(str(path), self._target, self._config)

    def _decoder(self, multimask: bool) -> Any:
        request = self._decoders.get(multimask)
        if request is None:  # the multimask graph is compiled on first use
            request = self._compile(self._models.decoder(multimask)).create_infer_request()
            self._decoders[multimask] = request
        return request

    def describe(self) -> str:
        return f"openvino on {self._target} ({self.precision})"

    def encode(self, image: np.ndarray) -> np.ndarray:
        # The request's output buffer is reused by the next call: the frame keeps a copy.
        return np.array(self._encoder.infer({0: image})[0], copy=True)

    def decode(
        self, embedding: np.ndarray, inputs: DecoderInputs, multimask: bool
    ) -> DecoderOutputs:
        request = self._decoder(multimask)
        feeds = dict(zip(DECODER_INPUTS, (embedding, *inputs.arrays()), strict=True))
        outputs = request.infer(feeds)
        masks, iou = (np.array(outputs[name], copy=True) for name in DECODER_OUTPUTS)
        return masks, iou

    def embedding_to_numpy(self, embedding: np.ndarray) -> np.ndarray:
        return embedding
