"""TensorRT engine cache: what an engine is built from, and its file, without TensorRT.

Everything here is plain Python, so that tests run on any machine:

- `EngineSpec`: what an engine is built from (ONNX hash, TensorRT version, GPU with its SM
  count, memory and CUDA versions, precision, optimization profile, FP32 policy version); its
  `key` names the cache entry.
- The engine file: magic bytes `MSAMTRT1`, a 4-byte little-endian length, that many bytes of
  JSON metadata, then the serialized engine. `read_engine` validates all of it (key, sizes,
  SHA-256 of the engine bytes) before any byte reaches TensorRT; `needs_rebuild` says why an
  engine must be rebuilt. `write_engine` takes a file lock and renames a finished temp file
  into place, so concurrent builders never leave a partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mobilesam_ros.core.choices import GPU_PRECISIONS
from mobilesam_ros.core.errors import InvalidInputError, MobileSamError
from mobilesam_ros.core.files import exclusive_lock, write_bytes_atomically
from mobilesam_ros.core.jetson import default_decoder_batch
from mobilesam_ros.core.model.constants import LOW_RES_SIZE
from mobilesam_ros.core.model.export import DECODER_INPUTS

ENGINE_FILE_MAGIC = b"MSAMTRT1"
_LENGTH = struct.Struct("<I")
_HEADER_SIZE = len(ENGINE_FILE_MAGIC) + _LENGTH.size
# The JSON metadata is a few kilobytes (the pinned layer names are the largest part).
_MAX_METADATA_BYTES = 16 << 20

GRAPHS = ("encoder", "decoder_single", "decoder_multi")
# The Segmenter's default max_batch (64, or 16 on a Jetson): the decoder profile, contexts and
# the backend's buffers are sized for it (create_backend's max_prompts option sets it).
DEFAULT_MAX_PROMPTS = default_decoder_batch()
# Prompt tokens per prompt: points plus the two box corners (or SAM's one padding point).
DEFAULT_MAX_POINTS = 32
DEFAULT_WORKSPACE_MIB = 2048
# Bump when what an FP16 build keeps in FP32 changes, so engines built by older rules are
# rebuilt. 2: constants folded, strongly typed mixed-precision graphs on TensorRT >= 10, TF32
# off, decoders escalate to FP32 like the encoder. 3: the point prompts' Fourier features FP32.
FP32_POLICY_VERSION = 3


class EngineCacheError(MobileSamError):
    """A cached engine that must not be loaded; `reason` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"engine {os.fspath(path)!r}: {reason}")
        self.path = path
        self.reason = reason


def check_precision(precision: str) -> str:
    if precision not in GPU_PRECISIONS:
        raise InvalidInputError(
            f"precision must be one of {', '.join(GPU_PRECISIONS)} on TensorRT; got {precision!r}"
        )
    return precision


@dataclass(frozen=True)
class ShapeRange:
    """Min, opt and max shape of one dynamic input in an optimization profile."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class DecoderProfile:
    """Prompt counts one decoder engine accepts: all prompts of a frame run in one call.

    max_prompts: largest N per call (larger N are split by the backend).
    max_points: largest number of prompt tokens per prompt (points + 2 box corners).
    """

    max_prompts: int = DEFAULT_MAX_PROMPTS
    max_points: int = DEFAULT_MAX_POINTS

    def __post_init__(self) -> None:
        for name in ("max_prompts", "max_points"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"{name} must be an integer of at least 1, got {value!r}")

    @property
    def opt_prompts(self) -> int:
        # Tuned for a handful of tracked objects per frame; any N up to the max runs.
        return min(self.max_prompts, 8)

    @property
    def opt_points(self) -> int:
        return min(self.max_points, 2)  # one box prompt = two corner tokens

    def shape_ranges(self) -> tuple[ShapeRange, ...]:
        """Profile of the decoder's dynamic inputs (image_embeddings is static)."""
        coords, labels, masks, has_mask = DECODER_INPUTS[1:]
        mask_hw = (LOW_RES_SIZE, LOW_RES_SIZE)
        low = (1, 1)
        opt = (self.opt_prompts, self.opt_points)
        high = (self.max_prompts, self.max_points)
        # mask_input and has_mask_input carry M = 1 (no mask prompt) or M = N.
        return (
            ShapeRange(coords, (*low, 2), (*opt, 2), (*high, 2)),
            ShapeRange(labels, low, opt, high),
            ShapeRange(masks, (1, 1, *mask_hw), (1, 1, *mask_hw), (self.max_prompts, 1, *mask_hw)),
            ShapeRange(has_mask, (1,), (1,), (self.max_prompts,)),
        )


def graph_profile(graph: str, decoder_profile: DecoderProfile) -> tuple[ShapeRange, ...]:
    """The optimization profile of one graph: none for the static encoder."""
    if graph not in GRAPHS:
        raise InvalidInputError(f"graph must be one of {', '.join(GRAPHS)}; got {graph!r}")
    return () if graph == "encoder" else decoder_profile.shape_ranges()


@dataclass(frozen=True)
class GpuIdentity:
    """The GPU an engine's kernels are chosen for, as CUDA reports it.

    The name and compute capability alone do not tell boards apart: every Jetson Orin reports
    "Orin", 8.7, from the 8-SM Orin Nano to the 16-SM AGX Orin. The CUDA versions are the
    driver's (cudaDriverGetVersion, 12060 for 12.6) and the runtime's.
    """

    name: str
    compute_capability: str
    sm_count: int = 0
    total_memory_mib: int = 0
    driver_cuda_version: int = 0
    runtime_cuda_version: int = 0

    def describe(self) -> str:
        return (
            f"{self.name} (compute {self.compute_capability}, {self.sm_count} SMs, "
            f"{self.total_memory_mib} MiB)"
        )


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine depends on; `key` changes when any of it changes."""

    graph: str
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    sm_count: int = 0
    total_memory_mib: int = 0
    driver_cuda_version: int = 0
    runtime_cuda_version: int = 0
    profile: tuple[ShapeRange, ...] = ()
    fp32_policy_version: int = FP32_POLICY_VERSION
    workspace_mib: int = DEFAULT_WORKSPACE_MIB

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.graph not in GRAPHS:
            raise InvalidInputError(f"graph must be one of {', '.join(GRAPHS)}; got {self.graph!r}")

    def components(self) -> dict[str, Any]:
        """The key's inputs as JSON values (stored in the metadata to explain mismatches)."""
        values = asdict(self)
        values["profile"] = [
            {"name": r.name, "min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
            for r in self.profile
        ]
        return values

    @property
    def key(self) -> str:
        text = json.dumps(self.components(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def file_name(self) -> str:
        return f"{self.graph}-{self.precision}-{self.key[:16]}.engine"

    def timing_cache_name(self) -> str:
        """The timing cache this engine's build shares with every build for the same
        TensorRT and GPU, whatever the graph, precision, profile or FP32 level."""
        fields = (
            "tensorrt_version",
            "gpu_name",
            "compute_capability",
            "sm_count",
            "total_memory_mib",
            "driver_cuda_version",
            "runtime_cuda_version",
        )
        text = json.dumps([getattr(self, name) for name in fields])
        return f"timing-{hashlib.sha256(text.encode()).hexdigest()[:16]}.cache"


# ---------------------------------------------------------------------------------------------
# Engine files


def engine_folder(cache_dir: str | os.PathLike[str]) -> Path:
    """Where the engines (and the graphs prepared for them) of a cache folder live."""
    return Path(cache_dir) / "tensorrt"


def encode_engine_file(key: str, engine: bytes, metadata: Mapping[str, Any]) -> bytes:
    """Header (magic, length, JSON metadata) followed by the engine bytes."""
    reserved = {"format", "key", "engine_size", "engine_sha256"}
    clash = reserved & set(metadata)
    if clash:
        raise ValueError(f"metadata must not set {sorted(clash)}; they are computed here")
    header = {
        "format": ENGINE_FILE_MAGIC.decode(),
        "key": key,
        "engine_size": len(engine),
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **metadata,
    }
    text = json.dumps(header, sort_keys=True).encode()
    return ENGINE_FILE_MAGIC + _LENGTH.pack(len(text)) + text + engine


def write_engine(
    path: str | os.PathLike[str], key: str, engine: bytes, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """Store an engine with its metadata; returns the metadata as written.

    Holds `<path>.lock` while writing and renames a complete temp file into place, so a reader
    sees the old file or the new one, never a partial one, and two writers do not interleave.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_engine_file(key, engine, metadata)
    with exclusive_lock(f"{path}.lock"):
        write_bytes_atomically(path, data)
    return _parse_header(path, data)[0]


def _parse_header(path: Path, data: bytes) -> tuple[dict[str, Any], int]:
    if len(data) < _HEADER_SIZE:
        raise EngineCacheError(path, f"truncated: {len(data)} bytes, shorter than the header")
    if not data.startswith(ENGINE_FILE_MAGIC):
        raise EngineCacheError(path, "not an engine cache file (wrong magic bytes)")
    (length,) = _LENGTH.unpack_from(data, len(ENGINE_FILE_MAGIC))
    if length > _MAX_METADATA_BYTES:
        raise EngineCacheError(path, f"corrupt header: metadata length {length} is implausible")
    end = _HEADER_SIZE + length
    if len(data) < end:
        raise EngineCacheError(path, f"truncated: metadata needs {end} bytes, file has {len(data)}")
    try:
        metadata = json.loads(data[_HEADER_SIZE:end])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineCacheError(path, f"corrupt metadata: {exc}") from None
    if not isinstance(metadata, dict):
        raise EngineCacheError(path, "corrupt metadata: not a JSON object")
    for name, kind in (("key", str), ("engine_size", int), ("engine_sha256", str)):
        if not isinstance(metadata.get(name), kind):
            raise EngineCacheError(path, f"corrupt metadata: no valid {name!r}")
    return metadata, end


def _key_mismatch(metadata: Mapping[str, Any], expected: EngineSpec | str) -> str:
    if isinstance(expected, str):
        return f"built for another configuration (key {metadata['key'][:16]}, want {expected[:16]})"
    stored = metadata.get("components")
    if not isinstance(stored, dict):
        return "built for another configuration (no key components recorded)"
    wanted = expected.components()
    changes = [
        f"{name} {stored.get(name)!r} -> {wanted[name]!r}"
        for name in wanted
        if stored.get(name) != wanted[name]
    ]
    return "built for another configuration: " + ("; ".join(changes) or "key differs")


def read_engine(
    path: str | os.PathLike[str], expected: EngineSpec | str
) -> tuple[dict[str, Any], bytes]:
    """Metadata and engine bytes of a cache file, after checking every part of it.

    Raises EngineCacheError with the reason when the file is missing, truncated, corrupt,
    failed its self-check or was built for another key; such bytes are never returned.
    """
    path = Path(path)
    expected_key = expected if isinstance(expected, str) else expected.key
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EngineCacheError(path, "no cached engine") from None
    except OSError as exc:
        raise EngineCacheError(path, f"unreadable: {exc}") from None
    metadata, start = _parse_header(path, data)
    if metadata["key"] != expected_key:
        raise EngineCacheError(path, _key_mismatch(metadata, expected))
    engine = data[start:]
    if len(engine) != metadata["engine_size"]:
        raise EngineCacheError(
            path, f"truncated: engine has {len(engine)} of {metadata['engine_size']} bytes"
        )
    if hashlib.sha256(engine).hexdigest() != metadata["engine_sha256"]:
        raise EngineCacheError(path, "corrupt: the engine bytes do not match their SHA-256")
    iou, minimum = metadata.get("self_check_iou"), metadata.get("self_check_min_iou")
    if isinstance(iou, (int, float)) and isinstance(minimum, (int, float)) and iou < minimum:
        raise EngineCacheError(path, f"failed its self-check (mask IoU {iou:.4f} < {minimum})")
    return metadata, engine


def engine_problem(path: str | os.PathLike[str], expected: EngineSpec | str) -> str | None:
    """Why the cached engine at `path` cannot be used, or None when it can."""
    try:
        read_engine(path, expected)
    except EngineCacheError as exc:
        return exc.reason
    return None


def needs_rebuild(
    path: str | os.PathLike[str], expected: EngineSpec | str, force: bool = False
) -> str | None:
    """The reason to (re)build the engine at `path`, or None to load the cached one."""
    if force:
        return "rebuild forced (force_rebuild)"
    return engine_problem(path, expected)
