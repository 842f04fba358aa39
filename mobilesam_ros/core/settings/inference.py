"""The model and its decoding: checkpoint, runtime, device, precision, thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from mobilesam_ros.core.choices import (
    BACKENDS,
    DEFAULT_PRECISION,
    DEVICE_FORMS,
    PRECISIONS,
    check_device,
)
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.settings.fields import Settings, setting


@dataclass(frozen=True)
class ModelSettings(Settings):
    checkpoint: str = setting(
        "", "Path of mobile_sam.pt; empty downloads the official checkpoint once into cache_dir."
    )
    backend: str = setting("auto", "Inference runtime.", choices=BACKENDS)
    device: str = setting(
        "auto",
        "Where inference runs: cuda[:N] is an NVIDIA GPU, gpu an Intel GPU (with OpenVINO).",
        forms=", ".join(DEVICE_FORMS),
    )
    precision: str = setting(
        DEFAULT_PRECISION,
        "Arithmetic: fp16 or fp32 on NVIDIA GPUs (layers that lose accuracy stay FP32); CPUs "
        "compute FP32 unless bf16 asks OpenVINO for BF16 (CPUs with AMX or AVX-512 BF16).",
        choices=PRECISIONS,
    )
    compile_decoder: bool = setting(
        False,
        "PyTorch on CUDA only: compile the decoder with torch.compile (needs Triton): about 2x "
        "faster decoding, but 10-20 s of compiling the first time each prompt count bucket "
        "(1, 2, 4, 8, 16, ...) comes up.",
    )
    force_rebuild: bool = setting(
        False, "Build the TensorRT engines again at start even when valid ones are cached."
    )
    cache_dir: str = setting(
        "",
        "Folder for the checkpoint and exported graphs; empty means $XDG_CACHE_HOME/mobilesam_ros.",
    )
    decoder_memory_mb: int = setting(
        256,
        "Working memory of one decoder call on the CPU path, in MB (about 40 MB per prompt); "
        "more prompts are decoded in several calls of that size, so memory stays flat however "
        "many prompts a frame has.",
        minimum=1,
        maximum=65536,
    )

    def check(self) -> None:
        try:
            check_device(self.device)
        except InvalidInputError as exc:
            raise InvalidInputError(f"parameter {exc}") from None


@dataclass(frozen=True)
class DecodeSettings(Settings):
    mask_threshold: float = setting(
        0.0,
        "Mask logit above which a pixel belongs to the object (0 = probability 0.5).",
        minimum=-20.0,
        maximum=20.0,
        dynamic=True,
    )
    max_prompts: int = setting(
        100,
        "Most prompts answered per message; further prompts are dropped and counted.",
        minimum=1,
        maximum=1000,
        dynamic=True,
    )
