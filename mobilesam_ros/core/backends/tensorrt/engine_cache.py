"""TensorRT engine cache, FP32 layer policy and trtexec command, without TensorRT.

Everything here is plain Python, so that tests run on any machine:

- `EngineSpec`: what an engine is built from (ONNX hash, TensorRT version, GPU, precision,
  optimization profile, FP32 policy version); its `key` names the cache entry.
- The engine file: magic bytes `MSAMTRT1`, a 4-byte little-endian length, that many bytes of
  JSON metadata, then the serialized engine. `read_engine` validates all of it (key, sizes,
  SHA-256 of the engine bytes) before any byte reaches TensorRT; `needs_rebuild` says why an
  engine must be rebuilt. `write_engine` takes a file lock and renames a finished temp file
  into place, so concurrent builders never leave a partial file.
- `fp32_layer_names`: which layers an FP16 build pins to FP32, by escalation level.
- `trtexec_command`: the equivalent `trtexec` build, for comparison and profiling.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mobilesam_ros.core.choices import PRECISIONS
from mobilesam_ros.core.errors import InvalidInputError, MobileSamError
from mobilesam_ros.core.files import exclusive_lock, write_bytes_atomically
from mobilesam_ros.core.model.constants import LOW_RES_SIZE
from mobilesam_ros.core.model.export import DECODER_INPUTS

ENGINE_FILE_MAGIC = b"MSAMTRT1"
_LENGTH = struct.Struct("<I")
_HEADER_SIZE = len(ENGINE_FILE_MAGIC) + _LENGTH.size
# The JSON metadata is a few kilobytes (the pinned layer names are the largest part).
_MAX_METADATA_BYTES = 16 << 20

GRAPHS = ("encoder", "decoder_single", "decoder_multi")
# Same as the Segmenter's default max_batch: one decoder call per frame for up to 64 prompts.
# The decoder contexts and the backend's buffers are sized for it (create_backend's
# max_prompts option makes it smaller where GPU memory is tight).
DEFAULT_MAX_PROMPTS = 64
# Prompt tokens per prompt: points plus the two box corners (or SAM's one padding point).
DEFAULT_MAX_POINTS = 32
DEFAULT_WORKSPACE_MIB = 2048
# Bump when what an FP16 build keeps in FP32 changes, so engines built by older rules are
# rebuilt. 2: constants folded, strongly typed mixed-precision graphs on TensorRT >= 10, TF32
# off, decoders escalate to FP32 like the encoder.
FP32_POLICY_VERSION = 2

# What each escalation level keeps in FP32 in an FP16 build.
FP32_LEVELS = (
    "LayerNorm, softmax and the residual sums feeding LayerNorm",
    "level 0 plus GELU (erf) and the attention matrix products",
    "every graph in FP32",
)
MAX_FP32_LEVEL = len(FP32_LEVELS) - 1


class EngineCacheError(MobileSamError):
    """A cached engine that must not be loaded; `reason` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"engine {os.fspath(path)!r}: {reason}")
        self.path = path
        self.reason = reason


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InvalidInputError(
            f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}"
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
class EngineSpec:
    """Everything an engine depends on; `key` changes when any of it changes."""

    graph: str
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
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


# ---------------------------------------------------------------------------------------------
# Engine files


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


# ---------------------------------------------------------------------------------------------
# FP32 layer policy


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a parsed network, as plain strings.

    kind: TensorRT's LayerType name ("SOFTMAX", "LayerType.SOFTMAX") or an ONNX op type.
    floating: False for layers whose outputs are integer, boolean or shape tensors; those
      are never pinned (a precision on them would only constrain shape computations).
    """

    name: str
    kind: str
    floating: bool = True


_ONNX_KINDS = {
    "LayerNormalization": "NORMALIZATION",
    "GroupNormalization": "NORMALIZATION",
    "InstanceNormalization": "NORMALIZATION",
    "Softmax": "SOFTMAX",
    "ReduceMean": "REDUCE",
    "MatMul": "MATRIX_MULTIPLY",
    "Gemm": "MATRIX_MULTIPLY",
    "Constant": "CONSTANT",
    "Shape": "SHAPE",
}
_NEVER_PINNED = frozenset({"CONSTANT", "SHAPE", "ASSERTION", "CONDITION", "FILL"})
# ONNX ops whose outputs are integers or booleans in these graphs.
_NON_FLOAT_ONNX_OPS = frozenset(
    {"Shape", "Constant", "ConstantOfShape", "Equal", "Not", "Mod", "NonZero", "Range", "Less"}
)


def normalized_kind(kind: str) -> str:
    """'LayerType.SOFTMAX', 'SOFTMAX' or ONNX 'Softmax' -> 'SOFTMAX'."""
    kind = kind.rsplit(".", 1)[-1]
    return _ONNX_KINDS.get(kind, kind.upper())


def _scope(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


def _op(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def graph_runs_fp32(graph: str, precision: str, level: int) -> bool:
    """True when this graph is built without FP16 at all (then nothing needs pinning)."""
    if graph not in GRAPHS:
        raise InvalidInputError(f"graph must be one of {', '.join(GRAPHS)}; got {graph!r}")
    return check_precision(precision) == "fp32" or level >= 2


def fp32_layer_names(layers: Sequence[LayerInfo], level: int, graph: str = "encoder") -> list[str]:
    """Names of the layers an FP16 build pins to FP32, in network order.

    Level 0: normalization layers (TensorRT NORMALIZATION, ONNX LayerNormalization, and the
    hand-written LayerNorm2d of the neck: a name scope holding ReduceMean and Sqrt, pinned
    whole) and softmax. Level 1 adds GELU (a scope holding Erf, pinned whole) and the matrix
    products that share a scope with a softmax (q @ k and attn @ v). Level 2 pins every
    floating layer (builds then leave FP16 off altogether).
    """
    if not 0 <= level <= MAX_FP32_LEVEL:
        raise InvalidInputError(f"FP32 level must be 0 to {MAX_FP32_LEVEL}, got {level}")
    candidates = [
        layer
        for layer in layers
        if layer.floating and normalized_kind(layer.kind) not in _NEVER_PINNED
    ]
    if level >= 2:
        return [layer.name for layer in candidates]
    scopes: dict[str, list[LayerInfo]] = {}
    for layer in candidates:
        scopes.setdefault(_scope(layer.name), []).append(layer)

    def is_softmax(layer: LayerInfo) -> bool:
        return normalized_kind(layer.kind) == "SOFTMAX" or _op(layer.name).startswith("Softmax")

    def has_op(members: list[LayerInfo], op: str) -> bool:
        return any(_op(m.name).startswith(op) for m in members)

    pinned: set[str] = set()
    for layer in candidates:
        kind = normalized_kind(layer.kind)
        if kind == "NORMALIZATION" or "LayerNormalization" in layer.name or is_softmax(layer):
            pinned.add(layer.name)
    for scope, members in scopes.items():
        # Whole-scope rules only below the root: the root scope mixes unrelated operations.
        named = bool(scope)
        if named and has_op(members, "ReduceMean") and has_op(members, "Sqrt"):
            pinned.update(m.name for m in members)
        if level >= 1:
            if named and has_op(members, "Erf"):
                pinned.update(m.name for m in members)
            if any(is_softmax(m) for m in members):
                pinned.update(
                    m.name for m in members if normalized_kind(m.kind) == "MATRIX_MULTIPLY"
                )
    return [layer.name for layer in candidates if layer.name in pinned]


def onnx_layers(onnx_path: str | os.PathLike[str]) -> list[LayerInfo]:
    """LayerInfo of every node of an ONNX graph (needs the onnx package).

    TensorRT's ONNX parser names each node's main layer after the node, so these names are
    what `--layerPrecisions` of trtexec expects when TensorRT itself is not at hand.
    """
    import onnx

    model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    return [
        LayerInfo(node.name, node.op_type, node.op_type not in _NON_FLOAT_ONNX_OPS)
        for node in model.graph.node
    ]


# ---------------------------------------------------------------------------------------------
# trtexec


def _shape_list(ranges: Sequence[ShapeRange], which: str) -> str:
    return ",".join(f"{r.name}:{'x'.join(map(str, getattr(r, which)))}" for r in ranges)


def trtexec_command(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    fp16: bool,
    profile: Sequence[ShapeRange] = (),
    fp32_layers: Sequence[str] = (),
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    strongly_typed: bool = False,
) -> str:
    """The trtexec command line that builds the same engine as the Python builder.

    strongly_typed: TensorRT >= 10 builds; `onnx_path` is then the prepared graph (FP16 with
    its FP32 islands as casts), and the precision flags are left out.
    trtexec writes a bare engine without this package's metadata header; it is for
    comparison and profiling, not for the cache.
    """
    parts = [
        "trtexec",
        f"--onnx={os.fspath(onnx_path)}",
        f"--saveEngine={os.fspath(engine_path)}",
        f"--memPoolSize=workspace:{workspace_mib}",
        "--noTF32",
    ]
    if strongly_typed:
        parts.append("--stronglyTyped")
        if profile:
            parts += [f"--{w}Shapes={_shape_list(profile, w)}" for w in ("min", "opt", "max")]
        return " ".join(shlex.quote(part) for part in parts)
    if fp16:
        parts.append("--fp16")
    if profile:
        parts += [f"--{w}Shapes={_shape_list(profile, w)}" for w in ("min", "opt", "max")]
    if fp16 and fp32_layers:
        spec = ",".join(f"{name}:fp32" for name in fp32_layers)
        parts += [
            f"--layerPrecisions={spec}",
            f"--layerOutputTypes={spec}",
            "--precisionConstraints=obey",
        ]
    return " ".join(shlex.quote(part) for part in parts)


def planned_fp32_layers(
    onnx_path: str | os.PathLike[str], graph: str, precision: str, level: int = 0
) -> list[str] | None:
    """The layers a build at `level` would pin, read from the ONNX graph without TensorRT.

    None when the onnx package is not installed (the names cannot be read then).
    """
    if graph_runs_fp32(graph, precision, level):
        return []
    try:
        layers = onnx_layers(onnx_path)
    except ImportError:
        return None
    return fp32_layer_names(layers, level, graph)
