"""The accepted values of the options that the node, the CLI, `Segmenter` and the backends share.

One place, so a parameter, a CLI flag and a backend cannot disagree on what is accepted.
"""

from __future__ import annotations

import re

from mobilesam_ros.core.errors import InvalidInputError

BACKENDS = ("auto", "onnxruntime", "openvino", "torch", "tensorrt")
PRECISIONS = ("fp16", "fp32", "bf16")
# What the NVIDIA GPU backends (TensorRT, PyTorch on CUDA) compute in; BF16 is OpenVINO's, on
# CPUs with AMX or AVX-512 BF16.
GPU_PRECISIONS = ("fp16", "fp32")
DEFAULT_PRECISION = "fp16"
SYNC_POLICIES = ("exact", "nearest", "latest")
DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N", "gpu")
# "gpu" is an Intel GPU, through OpenVINO; "cuda[:N]" an NVIDIA GPU.

_CUDA_DEVICE = re.compile(r"cuda(?::(\d+))?")


def check_choice(what: str, value: object, accepted: tuple[str, ...]) -> str:
    """`value` if it is one of `accepted`, else InvalidInputError naming them."""
    if value not in accepted:
        raise InvalidInputError(f"{what} must be one of {', '.join(accepted)}; got {value!r}")
    return str(value)


def check_device(device: object) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N', else InvalidInputError naming the accepted forms."""
    if isinstance(device, str) and (
        device in ("auto", "cpu", "gpu") or _CUDA_DEVICE.fullmatch(device)
    ):
        return device
    raise InvalidInputError(f"device must be one of {', '.join(DEVICE_FORMS)}; got {device!r}")


def is_cuda(device: str) -> bool:
    return _CUDA_DEVICE.fullmatch(device) is not None


def cuda_index(device: str) -> int:
    """The N of 'cuda:N' (0 for 'cuda' and 'auto'); InvalidInputError for 'cpu' or bad forms."""
    if device == "auto":
        return 0
    match = _CUDA_DEVICE.fullmatch(check_device(device))
    if match is None:
        raise InvalidInputError(f"device {device!r} is not a CUDA device (cuda or cuda:N)")
    return int(match.group(1) or 0)
