"""FP32 layer policy: which layers an FP16 build keeps in FP32, by escalation level.

Plain Python that reads layer names and kinds, from a parsed TensorRT network (`compat`) or
from an ONNX graph, so tests and the trtexec command need no TensorRT. Changing what is
pinned means bumping `engine_cache.FP32_POLICY_VERSION`, so older engines are rebuilt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mobilesam_ros.core.backends.tensorrt.engine_cache import GRAPHS, check_precision
from mobilesam_ros.core.errors import InvalidInputError

# What each escalation level keeps in FP32 in an FP16 build.
FP32_LEVELS = (
    "LayerNorm, softmax and the residual sums feeding LayerNorm",
    "level 0 plus GELU (erf) and the attention matrix products",
    "every graph in FP32",
)
MAX_FP32_LEVEL = len(FP32_LEVELS) - 1


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


def onnx_graph_layers(model: Any) -> list[LayerInfo]:
    """LayerInfo of every node of a loaded ONNX model.

    TensorRT's ONNX parser names each node's main layer after the node, so these names are
    what `--layerPrecisions` of trtexec expects when TensorRT itself is not at hand.
    """
    return [
        LayerInfo(node.name, node.op_type, node.op_type not in _NON_FLOAT_ONNX_OPS)
        for node in model.graph.node
    ]


def onnx_layers(onnx_path: str | os.PathLike[str]) -> list[LayerInfo]:
    """`onnx_graph_layers` of an ONNX file (needs the onnx package)."""
    import onnx

    return onnx_graph_layers(onnx.load(os.fspath(onnx_path), load_external_data=False))


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
