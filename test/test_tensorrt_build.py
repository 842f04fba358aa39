"""The TensorRT build path for real, without a GPU: TensorRT-RTX's builder and ONNX parser.

TensorRT-RTX (pip wheels, module `tensorrt_rtx_bindings`) parses ONNX and builds serialized
engines on a machine without a GPU; it builds strongly typed networks, the same API that
TensorRT 10.x/11.x builds take here. These tests run the backend's own code (version shim,
graph preparation, precision policy, builder settings, engine cache) on the three exported
graphs and inspect the parsed networks' layer types, so the FP32 islands are checked, not
assumed. Running an engine needs a GPU; those tests are in test_tensorrt_support.py.
"""

from __future__ import annotations

from collections import Counter

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxconverter_common")

from mobilesam_ros.core.backends.tensorrt.build import (  # noqa: E402
    build_engine,
    build_metadata,
    parse_network,
    prepared_graphs,
)
from mobilesam_ros.core.backends.tensorrt.compat import TrtApi, import_tensorrt  # noqa: E402
from mobilesam_ros.core.backends.tensorrt.engine_cache import (  # noqa: E402
    GRAPHS,
    DecoderProfile,
    GpuIdentity,
    read_engine,
    write_engine,
)
from mobilesam_ros.core.backends.tensorrt.engine_set import engine_specs  # noqa: E402
from mobilesam_ros.core.backends.tensorrt.graph_prep import point_embedding_nodes  # noqa: E402
from mobilesam_ros.core.errors import BackendUnavailableError  # noqa: E402
from mobilesam_ros.core.model.export import export_onnx  # noqa: E402

# The spec's GPU fields: nothing is built for a real device here.
NO_GPU = GpuIdentity("no GPU (build-only test)", "8.9", 128, 24564, 13000, 13000)


def _builder_api() -> TrtApi | None:
    try:
        return TrtApi(import_tensorrt())
    except BackendUnavailableError:
        return None


API = _builder_api()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        API is None or not API.strongly_typed,
        reason="needs a strongly typed TensorRT builder (TensorRT-RTX wheels or TensorRT >= 10)",
    ),
]


@pytest.fixture(scope="module")
def models(random_checkpoint, cache_dir):
    # Shared with the other tests' onnxruntime Segmenter: exported once per run.
    return export_onnx(random_checkpoint, cache_dir, progress=False)


@pytest.fixture(scope="module")
def prepared(models, tmp_path_factory):
    """specs and prepared graphs per precision, in one engine cache folder."""
    assert API is not None
    cache = tmp_path_factory.mktemp("trt-build")
    result = {}
    for precision in ("fp32", "fp16"):
        specs = engine_specs(API, NO_GPU, models, precision, DecoderProfile(max_prompts=8))
        result[precision] = (specs, prepared_graphs(models, specs, cache))
    return cache, result


def _precisions_by_kind(graph_path) -> dict[str, Counter]:
    """Output type names ("FLOAT", "HALF", ...) of the parsed network's layers, by layer kind."""
    assert API is not None
    network = parse_network(API, graph_path, verbose=False).network
    kinds: dict[str, Counter] = {}
    for layer in (network.get_layer(i) for i in range(network.num_layers)):
        types = [layer.get_output(i).dtype.name for i in range(layer.num_outputs)]
        kinds.setdefault(API.layer_info(layer).kind, Counter()).update(types)
    return kinds


def test_encoder_pads_are_constants_after_folding(prepared):
    _, by_precision = prepared
    graphs = by_precision["fp32"][1]
    original = onnx.load(str(graphs.sources["encoder"]))
    folded = onnx.load(str(graphs.folded("encoder")))
    constants = {init.name for init in folded.graph.initializer}
    pads = [node for node in folded.graph.node if node.op_type == "Pad"]
    assert len(pads) == 10
    assert all(node.input[1] in constants for node in pads)
    assert len(folded.graph.node) < len(original.graph.node)


@pytest.mark.parametrize("graph", GRAPHS)
def test_fp16_network_keeps_its_fp32_islands(prepared, graph):
    assert API is not None
    _, by_precision = prepared
    graphs = by_precision["fp16"][1]
    path, islands = graphs.for_build(API, graph, "fp16", level=0)
    assert islands, "an FP16 graph without FP32 islands"
    kinds = _precisions_by_kind(path)
    # LayerNorm and softmax compute in FP32 inside the FP16 network ...
    assert set(kinds["NORMALIZATION"]) == {"FLOAT"}
    assert set(kinds["SOFTMAX"]) == {"FLOAT"}
    # ... while the bulk (matrix products, convolutions) is FP16, but for the decoders' one
    # projection of the point coordinates onto the random Fourier basis.
    products = kinds["MATRIX_MULTIPLY"]
    assert products["FLOAT"] == (0 if graph == "encoder" else 1) and products["HALF"] > 10
    assert kinds["CAST"]["HALF"] > 0 and kinds["CAST"]["FLOAT"] > 0
    level2, _ = graphs.for_build(API, graph, "fp16", level=2)  # escalated to FP32 throughout
    assert "HALF" not in {t for counts in _precisions_by_kind(level2).values() for t in counts}


@pytest.mark.parametrize("graph", ["decoder_single", "decoder_multi"])
def test_fp16_decoder_computes_the_point_fourier_features_in_fp32(prepared, graph):
    """Coordinates up to 1024 pixels, projected and times 2 pi: sin and cos of arguments where
    FP16 steps by 0.5. Every layer from point_coords to Sin and Cos outputs FP32."""
    assert API is not None
    graphs = prepared[1]["fp16"][1]
    path, islands = graphs.for_build(API, graph, "fp16", level=0)
    feature_nodes = point_embedding_nodes(onnx.load(str(graphs.folded(graph))))
    assert {"Sin", "Cos", "MatMul"} <= {
        name.rsplit("/", 1)[-1].rstrip("_0123456789") for name in feature_nodes
    }
    assert set(feature_nodes) <= set(islands)
    network = parse_network(API, path, verbose=False).network
    types = {
        layer.name: {layer.get_output(i).dtype.name for i in range(layer.num_outputs)}
        for layer in (network.get_layer(i) for i in range(network.num_layers))
    }
    assert all(types[name] == {"FLOAT"} for name in feature_nodes), {
        name: types[name] for name in feature_nodes
    }


@pytest.mark.parametrize("graph", GRAPHS)
def test_fp32_network_has_no_fp16(prepared, graph):
    assert API is not None
    _, by_precision = prepared
    path, islands = by_precision["fp32"][1].for_build(API, graph, "fp32", level=0)
    assert islands == []
    kinds = _precisions_by_kind(path)
    assert "HALF" not in {t for counts in kinds.values() for t in counts}


@pytest.mark.parametrize(
    ("precision", "graphs_built"),
    # Builds take seconds each; the other FP32 and FP16 networks are parsed and inspected above.
    [("fp16", ("encoder", "decoder_multi")), ("fp32", ("encoder",))],
)
def test_engines_build_and_go_through_the_cache(prepared, precision, graphs_built):
    assert API is not None
    cache, by_precision = prepared
    specs, graphs = by_precision[precision]
    for graph in graphs_built:
        spec = specs[graph]
        record = build_engine(API, graphs, spec, 0, False, "[test]")
        assert record.fp16 == (precision == "fp16")
        assert bool(record.fp32_layers) == (precision == "fp16")
        assert len(record.engine) > 1 << 20
        path = cache / "tensorrt" / spec.file_name()
        written = write_engine(
            path,
            spec.key,
            record.engine,
            build_metadata(API, spec, graphs.sources[graph], record, 0),
        )
        metadata, engine = read_engine(path, spec)
        assert engine == record.engine and metadata == written
        assert metadata["builder"] == API.label and metadata["strongly_typed"] is True
        assert metadata["tf32"] is False and metadata["fp32_level"] == 0
        assert metadata["components"]["tensorrt_version"] == API.label
