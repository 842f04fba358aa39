"""The ONNX graphs as TensorRT gets them: constants folded, and for FP16 a mixed-precision graph.

- `fold_constants`: ONNX Runtime's basic-level optimizer (constant folding, redundant nodes
  removed; no runtime-specific fusions) saves the graph with shape arithmetic evaluated, e.g.
  the pads of the encoder's Pad nodes become constants instead of run-time computations.
- `mixed_fp16_graph`: strongly typed TensorRT (10.x, 11.x, TensorRT-RTX) takes each tensor's
  type from the graph, so FP16 means an FP16 graph whose sensitive parts (the FP32 policy's
  layers, the residual sums that feed a LayerNorm and the point prompts' Fourier features)
  stay FP32 behind explicit Casts.

Needs onnx, onnxruntime and onnxconverter-common (build time only, never at run time).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from mobilesam_ros.core.backends.tensorrt.fp32_policy import fp32_layer_names, onnx_graph_layers
from mobilesam_ros.core.errors import BackendUnavailableError

# Ops kept FP32 by the converter whatever the policy says (shape and index computations).
_ALWAYS_FP32_OPS = ("Range", "Resize", "TopK", "CumSum", "NonZero", "Min", "Max")
# Ops whose outputs are shapes, indices or booleans: a float path does not run through them.
_NON_FLOAT_OPS = frozenset({"Shape", "Equal", "Not", "Less", "Greater", "NonZero", "Size"})


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError(
            "building TensorRT engines needs the onnx package (pip install onnx); "
            f"import failed with: {exc}"
        ) from exc
    return onnx


def fold_constants(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Write `source` with its constant subgraphs folded to `target` (ONNX Runtime, CPU)."""
    import onnxruntime

    target = Path(target)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = os.fspath(target)
    onnxruntime.InferenceSession(os.fspath(source), options, providers=["CPUExecutionProvider"])
    return target


def residual_sums_into_layernorm(model: Any) -> list[str]:
    """Add nodes whose output feeds a LayerNormalization: the residual stream's sums."""
    producers = {out: node for node in model.graph.node for out in node.output}
    names = []
    for node in model.graph.node:
        if node.op_type != "LayerNormalization":
            continue
        producer = producers.get(node.input[0])
        if producer is not None and producer.op_type == "Add" and producer.name not in names:
            names.append(producer.name)
    return names


def point_embedding_nodes(model: Any) -> list[str]:
    """Nodes on the float paths from the point_coords input to the Sin and Cos of SAM's random
    Fourier features (coordinate normalization, projection, sin/cos), in graph order.

    Pixel coordinates up to 1024, projected and multiplied by 2 pi, are arguments of
    sin and cos far beyond FP16's precision (a step of 0.5 at 1000): the PyTorch path keeps
    them FP32 as well. Empty for graphs without point prompts (the encoder).
    """
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    from_coords: dict[str, Any] = {}
    frontier = ["point_coords"]
    while frontier:
        for node in consumers.get(frontier.pop(), []):
            if node.name in from_coords or node.op_type in _NON_FLOAT_OPS:
                continue
            from_coords[node.name] = node
            frontier.extend(node.output)
    producers = {out: node for node in from_coords.values() for out in node.output}
    on_path: set[str] = set()
    stack = [node for node in from_coords.values() if node.op_type in ("Sin", "Cos")]
    while stack:
        node = stack.pop()
        if node.name in on_path:
            continue
        on_path.add(node.name)
        stack.extend(producers[name] for name in node.input if name in producers)
    return [node.name for node in model.graph.node if node.name in on_path]


def untie_shared_initializers(model: Any) -> int:
    """Give every node its own copy of an initializer that several nodes read.

    The FP16 converter keeps an initializer FP32 when any FP32 node reads it, and then feeds
    that FP32 tensor to the FP16 readers too, which a strongly typed network rejects.
    Returns the number of copies made (shared constants are scalars and small tables here).
    """
    initializers = {init.name: init for init in model.graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name not in initializers:
                continue
            if name not in seen:
                seen.add(name)
                continue
            copies += 1
            copy = model.graph.initializer.add()
            copy.CopyFrom(initializers[name])
            copy.name = f"{name}__copy{copies}"
            node.input[index] = copy.name
    return copies


def _casts_to_fp16(model: Any, keep: set[str], tensor_proto: Any) -> None:
    """The graph's own Cast-to-FP32 nodes outside the FP32 islands now cast to FP16.

    The converter leaves their `to` attribute alone, so a boolean mask cast to FP32 would meet
    FP16 tensors downstream. Stale value_info is dropped; the converter infers types anew.
    """
    for node in model.graph.node:
        if node.op_type != "Cast" or node.name in keep:
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == tensor_proto.FLOAT:
                attribute.i = tensor_proto.FLOAT16
    del model.graph.value_info[:]


def topology_fp32_nodes(model: Any) -> list[str]:
    """The FP32 nodes found by the graph's connections rather than by layer kind: residual
    sums feeding a LayerNorm and the point prompts' Fourier features."""
    return residual_sums_into_layernorm(model) + point_embedding_nodes(model)


def topology_fp32_nodes_of_file(model_path: str | os.PathLike[str]) -> list[str]:
    """`topology_fp32_nodes` of an ONNX file (TensorRT names layers after nodes)."""
    onnx = _import_onnx()
    return topology_fp32_nodes(onnx.load(os.fspath(model_path), load_external_data=False))


def fp32_nodes(model: Any, graph: str, level: int) -> list[str]:
    """Names of the nodes a mixed-precision graph keeps in FP32 at this escalation level."""
    pinned = fp32_layer_names(onnx_graph_layers(model), level, graph)
    seen = set(pinned)
    return pinned + [name for name in topology_fp32_nodes(model) if name not in seen]


def mixed_fp16_graph(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    graph: str,
    level: int,
) -> tuple[Path, list[str]]:
    """Write the FP16 graph with its FP32 islands; returns (path, nodes kept in FP32).

    Inputs and outputs stay float32, so the engine's interface is the FP32 graph's.
    """
    onnx = _import_onnx()
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise BackendUnavailableError(
            "FP16 engines on TensorRT 10.x/11.x and TensorRT-RTX are built from a "
            "mixed-precision ONNX graph made with onnxconverter-common "
            f"(pip install onnxconverter-common); import failed with: {exc}"
        ) from exc
    model = onnx.load(os.fspath(source))
    keep = fp32_nodes(model, graph, level)
    untie_shared_initializers(model)
    _casts_to_fp16(model, set(keep), onnx.TensorProto)
    with warnings.catch_warnings():
        # It warns for every weight it rounds to FP16's range (tiny values to 1e-7): expected.
        warnings.filterwarnings("ignore", "the float32 number", UserWarning)
        converted = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *_ALWAYS_FP32_OPS],
            node_block_list=keep,
            check_fp16_ready=False,  # the Casts above are FP16 on purpose
        )
    target = Path(target)
    onnx.save(converted, os.fspath(target))
    return target, keep
