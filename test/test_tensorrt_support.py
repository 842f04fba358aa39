"""TensorRT support: engine cache, FP32 policy, version shim, trtexec command, self-check, CLI.

Everything down to the last section runs without TensorRT or a GPU. The small fake `trt` and
CUDA namespaces below only exercise the version shim's choices; they say nothing about
whether an engine builds or runs. The tests at the end need real TensorRT and a GPU and skip
where either is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import AUTO_CPU_BACKEND

from mobilesam_ros.cli import main
from mobilesam_ros.core.backends import create_backend
from mobilesam_ros.core.backends.base import Backend, DecoderInputs
from mobilesam_ros.core.backends.tensorrt.compat import (
    CudaApi,
    TrtApi,
    import_tensorrt,
    parse_device,
    parse_version,
    tensorrt_unavailable_reason,
)
from mobilesam_ros.core.backends.tensorrt.engine_cache import (
    ENGINE_FILE_MAGIC,
    GRAPHS,
    DecoderProfile,
    EngineCacheError,
    EngineSpec,
    GpuIdentity,
    ShapeRange,
    encode_engine_file,
    engine_problem,
    graph_profile,
    needs_rebuild,
    read_engine,
    write_engine,
)
from mobilesam_ros.core.backends.tensorrt.fp32_policy import (
    MAX_FP32_LEVEL,
    LayerInfo,
    fp32_layer_names,
    graph_runs_fp32,
    normalized_kind,
    onnx_layers,
    planned_fp32_layers,
)
from mobilesam_ros.core.backends.tensorrt.self_check import (
    SELF_CHECK_BOXES,
    SELF_CHECK_MIN_IOU,
    compare_with_reference,
    mask_iou,
    reference_masks,
    run_self_check,
    self_check_photo,
)
from mobilesam_ros.core.backends.tensorrt.trtexec import trtexec_command
from mobilesam_ros.core.choices import DEFAULT_PRECISION
from mobilesam_ros.core.errors import BackendUnavailableError, InvalidInputError
from mobilesam_ros.core.model.constants import LOW_RES_SIZE


def _spec(**changes) -> EngineSpec:
    spec = EngineSpec(
        graph="decoder_single",
        onnx_sha256="ab" * 32,
        tensorrt_version="10.3.0",
        gpu_name="Orin",
        compute_capability="8.7",
        precision="fp16",
        profile=graph_profile("decoder_single", DecoderProfile(max_prompts=16)),
        sm_count=8,
        total_memory_mib=7620,
        driver_cuda_version=12060,
        runtime_cuda_version=12060,
    )
    return dataclasses.replace(spec, **changes)


def _gpu_and_tensorrt() -> bool:
    return tensorrt_unavailable_reason() is None


def needs_tensorrt_gpu(test):
    """A test that runs TensorRT engines: marked gpu, skipped without TensorRT and a GPU."""
    skip = pytest.mark.skipif(
        not _gpu_and_tensorrt(), reason="needs the tensorrt module, cuda-python and a CUDA GPU"
    )
    return pytest.mark.gpu(skip(test))


# ---------------------------------------------------------------------------------------------
# Cache keys


@pytest.mark.parametrize(
    "change",
    [
        {"graph": "decoder_multi"},
        {"onnx_sha256": "cd" * 32},
        {"tensorrt_version": "8.6.2"},
        {"gpu_name": "NVIDIA GeForce RTX 4090"},
        {"compute_capability": "8.9"},
        {"sm_count": 16},  # an AGX Orin against an Orin Nano: both "Orin", 8.7
        {"total_memory_mib": 30697},
        {"driver_cuda_version": 12020},
        {"runtime_cuda_version": 12020},
        {"precision": "fp32"},
        {"profile": graph_profile("decoder_single", DecoderProfile(max_prompts=17))},
        {"profile": graph_profile("decoder_single", DecoderProfile(16, max_points=8))},
        {"fp32_policy_version": 99},
        {"workspace_mib": 512},
    ],
    ids=lambda change: next(iter(change)),
)
def test_cache_key_changes_with_each_component(change):
    assert _spec(**change).key != _spec().key
    assert _spec(**change).file_name() != _spec().file_name()


def test_cache_key_is_stable_and_named_by_graph_and_precision():
    assert _spec().key == _spec().key
    assert len(_spec().key) == 64
    assert _spec().file_name() == f"decoder_single-fp16-{_spec().key[:16]}.engine"
    with pytest.raises(InvalidInputError, match="precision"):
        _spec(precision="int8")


def test_decoder_profile_covers_one_to_max_prompts():
    ranges = {r.name: r for r in DecoderProfile(max_prompts=5, max_points=6).shape_ranges()}
    assert ranges["point_coords"] == ShapeRange("point_coords", (1, 1, 2), (5, 2, 2), (5, 6, 2))
    assert ranges["point_labels"].max == (5, 6)
    assert ranges["mask_input"].min == (1, 1, LOW_RES_SIZE, LOW_RES_SIZE)
    assert ranges["mask_input"].max == (5, 1, LOW_RES_SIZE, LOW_RES_SIZE)
    assert ranges["has_mask_input"].max == (5,)
    assert graph_profile("encoder", DecoderProfile()) == ()
    with pytest.raises(InvalidInputError, match="max_prompts"):
        DecoderProfile(max_prompts=0)


# ---------------------------------------------------------------------------------------------
# Engine files


def test_metadata_round_trip(tmp_path):
    spec = _spec()
    engine = os.urandom(5000)
    extra = {
        "self_check_iou": 0.991,
        "self_check_min_iou": SELF_CHECK_MIN_IOU,
        "build_seconds": 12.5,
        "fp32_layers": ["/norm1/LayerNormalization", "/self_attn/Softmax"],
        "components": spec.components(),
    }
    path = tmp_path / spec.file_name()
    written = write_engine(path, spec.key, engine, extra)
    metadata, loaded = read_engine(path, spec)
    assert loaded == engine
    assert metadata == written
    assert metadata["key"] == spec.key
    assert metadata["engine_size"] == len(engine)
    assert metadata["engine_sha256"] == hashlib.sha256(engine).hexdigest()
    assert metadata["format"] == ENGINE_FILE_MAGIC.decode()
    assert metadata["created"].endswith("Z")
    for name, value in extra.items():
        assert metadata[name] == value
    assert path.read_bytes().startswith(ENGINE_FILE_MAGIC)
    assert needs_rebuild(path, spec.key) is None
    assert needs_rebuild(path, spec, force=True) == "rebuild forced (force_rebuild)"
    assert not list(tmp_path.glob("*.part"))
    with pytest.raises(ValueError, match="computed here"):
        write_engine(path, spec.key, engine, {"engine_sha256": "0"})


def _damage(kind: str, path: Path, data: bytes) -> None:
    header_end = len(data) - 4000
    if kind == "missing":
        return
    if kind == "truncated header":
        path.write_bytes(data[:10])
    elif kind == "truncated metadata":
        path.write_bytes(data[: header_end - 5])
    elif kind == "truncated engine":
        path.write_bytes(data[:-100])
    elif kind == "wrong magic":
        path.write_bytes(b"XXXXXXXX" + data[8:])
    elif kind == "corrupt engine":
        flipped = bytearray(data)
        flipped[-7] ^= 0xFF
        path.write_bytes(bytes(flipped))
    elif kind == "corrupt metadata":
        broken = bytearray(data)
        broken[12] = ord("#")
        path.write_bytes(bytes(broken))
    elif kind == "implausible length":
        path.write_bytes(data[:8] + (2**31).to_bytes(4, "little") + data[12:])
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "no cached engine"),
        ("truncated header", "truncated"),
        ("truncated metadata", "truncated"),
        ("truncated engine", "truncated: engine has 3900 of 4000 bytes"),
        ("wrong magic", "wrong magic"),
        ("corrupt engine", "SHA-256"),
        ("corrupt metadata", "corrupt metadata"),
        ("implausible length", "implausible"),
    ],
)
def test_damaged_engine_files_are_rebuilt_never_loaded(tmp_path, kind, reason):
    spec = _spec()
    path = tmp_path / spec.file_name()
    data = encode_engine_file(spec.key, os.urandom(4000), {"components": spec.components()})
    _damage(kind, path, data)
    assert reason in needs_rebuild(path, spec)
    assert reason in engine_problem(path, spec.key)
    with pytest.raises(EngineCacheError, match="engine ") as error:
        read_engine(path, spec)
    assert reason in error.value.reason


def test_engine_of_another_configuration_names_what_changed(tmp_path):
    built = _spec(tensorrt_version="8.6.2")
    path = tmp_path / "engine.engine"
    write_engine(path, built.key, b"engine", {"components": built.components()})
    reason = needs_rebuild(path, _spec())
    assert reason.startswith("built for another configuration")
    assert "tensorrt_version '8.6.2' -> '10.3.0'" in reason
    assert "built for another configuration" in needs_rebuild(path, _spec().key)
    with pytest.raises(EngineCacheError):
        read_engine(path, _spec())


def test_engine_that_failed_its_self_check_is_not_loaded(tmp_path):
    path = tmp_path / "engine.engine"
    write_engine(path, "k", b"engine", {"self_check_iou": 0.9, "self_check_min_iou": 0.97})
    assert "failed its self-check" in needs_rebuild(path, "k")


def _write_many(path: str, key: str, seed: int, rounds: int) -> None:
    payload = np.random.default_rng(seed).bytes(1 << 20)
    for _ in range(rounds):
        write_engine(path, key, payload, {"writer": seed})


def test_concurrent_writers_leave_a_valid_file(tmp_path):
    path = tmp_path / "same-key.engine"
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_write_many, args=(str(path), "key", seed, 15)) for seed in (1, 2)
    ]
    for writer in writers:
        writer.start()
    problems = set()
    while any(w.is_alive() for w in writers):
        problems.add(engine_problem(path, "key"))  # a reader never sees a partial file
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0
    assert problems <= {None, "no cached engine"}
    metadata, engine = read_engine(path, "key")
    assert engine == np.random.default_rng(metadata["writer"]).bytes(1 << 20)
    assert not list(tmp_path.glob("*.part"))


# ---------------------------------------------------------------------------------------------
# FP32 layer policy

ENCODER_LAYERS = [
    LayerInfo("/patch_embed/seq/seq.0/Conv", "CONVOLUTION"),
    LayerInfo("/layers.0/blocks.0/act1/Div", "ELEMENTWISE"),
    LayerInfo("/layers.0/blocks.0/act1/Erf", "UNARY"),
    LayerInfo("/layers.0/blocks.0/act1/Add", "ELEMENTWISE"),
    LayerInfo("/layers.0/blocks.0/act1/Mul", "ELEMENTWISE"),
    LayerInfo("/layers.1/blocks.0/attn/norm/LayerNormalization", "NORMALIZATION"),
    LayerInfo("/layers.1/blocks.0/attn/qkv/MatMul", "MATRIX_MULTIPLY"),
    LayerInfo("/layers.1/blocks.0/attn/MatMul", "MATRIX_MULTIPLY"),
    LayerInfo("/layers.1/blocks.0/attn/Softmax", "SOFTMAX"),
    LayerInfo("/layers.1/blocks.0/attn/MatMul_1", "MATRIX_MULTIPLY"),
    LayerInfo("/layers.1/blocks.0/attn/Shape", "SHAPE", floating=False),
    LayerInfo("/layers.1/blocks.0/attn/Gather", "GATHER", floating=False),
    LayerInfo("/layers.1/blocks.0/attn/proj/MatMul", "MATRIX_MULTIPLY"),
    LayerInfo("/neck/neck.0/Conv", "CONVOLUTION"),
    LayerInfo("/neck/neck.1/ReduceMean", "REDUCE"),
    LayerInfo("/neck/neck.1/Sub", "ELEMENTWISE"),
    LayerInfo("/neck/neck.1/Mul", "ELEMENTWISE"),
    LayerInfo("/neck/neck.1/ReduceMean_1", "REDUCE"),
    LayerInfo("/neck/neck.1/Add", "ELEMENTWISE"),
    LayerInfo("/neck/neck.1/Sqrt", "UNARY"),
    LayerInfo("/neck/neck.1/Div", "ELEMENTWISE"),
    LayerInfo("/neck/neck.1/Constant", "CONSTANT"),
    LayerInfo("/neck/neck.1/Mul_1", "ELEMENTWISE"),
    LayerInfo("/neck/neck.1/Add_1", "ELEMENTWISE"),
    LayerInfo("/neck/neck.2/Conv", "CONVOLUTION"),
]
NECK_LAYERNORM = [
    f"/neck/neck.1/{op}"
    for op in ("ReduceMean", "Sub", "Mul", "ReduceMean_1", "Add", "Sqrt", "Div", "Mul_1", "Add_1")
]


def test_fp32_level_0_pins_layernorm_and_softmax():
    assert fp32_layer_names(ENCODER_LAYERS, 0) == [
        "/layers.1/blocks.0/attn/norm/LayerNormalization",
        "/layers.1/blocks.0/attn/Softmax",
        *NECK_LAYERNORM,
    ]


def test_fp32_level_1_adds_gelu_and_attention_products():
    assert fp32_layer_names(ENCODER_LAYERS, 1) == [
        "/layers.0/blocks.0/act1/Div",
        "/layers.0/blocks.0/act1/Erf",
        "/layers.0/blocks.0/act1/Add",
        "/layers.0/blocks.0/act1/Mul",
        "/layers.1/blocks.0/attn/norm/LayerNormalization",
        "/layers.1/blocks.0/attn/MatMul",
        "/layers.1/blocks.0/attn/Softmax",
        "/layers.1/blocks.0/attn/MatMul_1",
        *NECK_LAYERNORM,
    ]


def test_fp32_level_2_is_every_graph_in_fp32():
    floating = [
        layer.name
        for layer in ENCODER_LAYERS
        if layer.floating and layer.kind not in ("CONSTANT", "SHAPE")
    ]
    assert fp32_layer_names(ENCODER_LAYERS, 2, "encoder") == floating
    # Decoders escalate like the encoder: level 2 builds them in FP32 too.
    assert fp32_layer_names(ENCODER_LAYERS, 2, "decoder_multi") == floating
    assert graph_runs_fp32("encoder", "fp16", 2)
    assert graph_runs_fp32("decoder_single", "fp16", 2)
    assert not graph_runs_fp32("encoder", "fp16", 1)
    assert not graph_runs_fp32("decoder_multi", "fp16", 1)
    assert graph_runs_fp32("decoder_single", "fp32", 0)
    with pytest.raises(InvalidInputError, match="FP32 level"):
        fp32_layer_names(ENCODER_LAYERS, MAX_FP32_LEVEL + 1)


def test_fp32_policy_reads_tensorrt_and_onnx_kinds_alike():
    assert normalized_kind("LayerType.NORMALIZATION") == "NORMALIZATION"
    assert normalized_kind("Softmax") == "SOFTMAX"
    assert normalized_kind("LayerNormalization") == "NORMALIZATION"
    # A TensorRT normalization layer is pinned by its type even under an unrelated name.
    layers = [LayerInfo("norm_fused_7", "LayerType.NORMALIZATION"), LayerInfo("x", "SCALE")]
    assert fp32_layer_names(layers, 0) == ["norm_fused_7"]
    # The root scope is never pinned whole, only its softmax and, at level 1, its products.
    root = [
        LayerInfo("/ReduceMean", "REDUCE"),
        LayerInfo("/Sqrt", "UNARY"),
        LayerInfo("/Erf", "UNARY"),
        LayerInfo("/Softmax", "SOFTMAX"),
        LayerInfo("/MatMul", "MATRIX_MULTIPLY"),
        LayerInfo("/Add", "ELEMENTWISE"),
    ]
    assert fp32_layer_names(root, 0, "decoder_single") == ["/Softmax"]
    assert fp32_layer_names(root, 1, "decoder_single") == ["/Softmax", "/MatMul"]


def _tiny_onnx(path: Path) -> Path:
    """A small opset-17 graph with the operator patterns the FP32 policy looks for."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(8, dtype=np.float32), "weight")
    scale = numpy_helper.from_array(np.ones(8, dtype=np.float32), "scale")
    eps = numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "eps")
    nodes = [
        helper.make_node(
            "LayerNormalization",
            ["x", "scale"],
            ["n"],
            name="/blocks.0/norm/LayerNormalization",
            axis=-1,
        ),
        helper.make_node("MatMul", ["n", "weight"], ["q"], name="/blocks.0/attn/MatMul"),
        helper.make_node("Softmax", ["q"], ["s"], name="/blocks.0/attn/Softmax", axis=-1),
        helper.make_node(
            "ReduceMean", ["s"], ["u"], name="/neck/neck.1/ReduceMean", axes=[1], keepdims=1
        ),
        helper.make_node("Sub", ["s", "u"], ["d"], name="/neck/neck.1/Sub"),
        helper.make_node("Mul", ["d", "d"], ["d2"], name="/neck/neck.1/Mul"),
        helper.make_node(
            "ReduceMean", ["d2"], ["v"], name="/neck/neck.1/ReduceMean_1", axes=[1], keepdims=1
        ),
        helper.make_node("Add", ["v", "eps"], ["ve"], name="/neck/neck.1/Add"),
        helper.make_node("Sqrt", ["ve"], ["sd"], name="/neck/neck.1/Sqrt"),
        helper.make_node("Div", ["d", "sd"], ["y"], name="/neck/neck.1/Div"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [weight, scale, eps],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_fp32_layers_read_from_an_onnx_graph(tmp_path):
    path = _tiny_onnx(tmp_path / "tiny.onnx")
    assert [layer.kind for layer in onnx_layers(path)][:3] == [
        "LayerNormalization",
        "MatMul",
        "Softmax",
    ]
    level0 = planned_fp32_layers(path, "encoder", "fp16", 0)
    assert level0[:2] == ["/blocks.0/norm/LayerNormalization", "/blocks.0/attn/Softmax"]
    assert len(level0) == 2 + 7  # the neck's LayerNorm2d scope, whole
    assert "/blocks.0/attn/MatMul" in planned_fp32_layers(path, "encoder", "fp16", 1)
    assert planned_fp32_layers(path, "encoder", "fp32", 0) == []


# ---------------------------------------------------------------------------------------------
# TensorRT version shim (fakes mimic the attribute sets of 8.6, 10.x and 11.x, nothing more)


def _fake_trt(version: str, weakly_typed_api: bool = True, name: str = "tensorrt"):
    """The enums the shim reads; 11.x and TensorRT-RTX lack the weakly typed precision API."""
    creation = {"STRONGLY_TYPED": 5}
    builder = {"TF32": "TF32"}
    if weakly_typed_api:
        creation["EXPLICIT_BATCH"] = 0
        builder.update(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY")
    return SimpleNamespace(
        __name__=name,
        __version__=version,
        NetworkDefinitionCreationFlag=SimpleNamespace(**creation),
        BuilderFlag=SimpleNamespace(**builder),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        float32="float32",
        float16="float16",
        int32="int32",
        nptype=lambda dtype: {"float32": np.float32, "int32": np.int32}[dtype],
    )


class _FakeLayer:
    def __init__(self, name, kind, dtypes, shape_tensor=False):
        self.name, self.type = name, kind
        self._outputs = [SimpleNamespace(dtype=d, is_shape_tensor=shape_tensor) for d in dtypes]
        self.num_outputs = len(dtypes)
        self.precision = None
        self.output_types = {}

    def get_output(self, index):
        return self._outputs[index]

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


class _FakeConfig:
    def __init__(self):
        self.set, self.cleared, self.pools = [], [], []

    def set_flag(self, flag):
        self.set.append(flag)

    def clear_flag(self, flag):
        self.cleared.append(flag)

    def set_memory_pool_limit(self, pool, size):
        self.pools.append((pool, size))


def test_shim_types_networks_by_version():
    assert not TrtApi(_fake_trt("8.6.2.3")).strongly_typed
    assert TrtApi(_fake_trt("8.6.2.3")).network_flags() == 1  # EXPLICIT_BATCH
    for version in ("10.3.0.26", "10.13.0", "11.0.0"):
        api = TrtApi(_fake_trt(version, weakly_typed_api=version < "11"))
        assert api.strongly_typed and api.network_flags() == 1 << 5
    rtx = TrtApi(_fake_trt("1.7.1.116", weakly_typed_api=False, name="tensorrt_rtx_bindings"))
    assert rtx.rtx and rtx.strongly_typed and rtx.label == "TensorRT-RTX 1.7.1.116"


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("8.5.2", "LayerNormalization"),
        ("8.4.3", "JetPack 5"),
        ("9.3.0", "supported: TensorRT 8.6, 10.x or 11.x"),
        ("12.0.0", "supported: TensorRT 8.6, 10.x or 11.x"),
    ],
)
def test_shim_refuses_unsupported_versions(version, reason):
    with pytest.raises(BackendUnavailableError, match=reason):
        TrtApi(_fake_trt(version))


def test_shim_parses_versions():
    with pytest.raises(BackendUnavailableError, match="unrecognized"):
        TrtApi(_fake_trt("unknown"))
    assert parse_version("10.0.1.6") == (10, 0)


def test_shim_builder_settings_per_version():
    weak = _FakeConfig()
    TrtApi(_fake_trt("8.6.1")).configure(weak, 2048, fp16=True)
    assert weak.pools == [("WORKSPACE", 2048 << 20)]
    assert weak.cleared == ["TF32"] and weak.set == ["FP16", "OBEY"]
    # Strongly typed: FP16 comes from the graph; TensorRT 11 has no FP16 flag to set.
    for version in ("10.3.0", "11.0.0"):
        strong = _FakeConfig()
        TrtApi(_fake_trt(version, weakly_typed_api=False)).configure(strong, 512, fp16=True)
        assert strong.cleared == ["TF32"] and strong.set == []
        assert strong.pools == [("WORKSPACE", 512 << 20)]


def test_shim_layer_info_and_pinning():
    api = TrtApi(_fake_trt("8.6.1"))
    softmax = _FakeLayer("/attn/Softmax", SimpleNamespace(name="SOFTMAX"), ["float32"])
    assert api.layer_info(softmax) == LayerInfo("/attn/Softmax", "SOFTMAX", True)
    half = _FakeLayer("/x", "LayerType.ELEMENTWISE", ["float16"])
    assert api.layer_info(half) == LayerInfo("/x", "ELEMENTWISE", True)
    shape = _FakeLayer("/s", "LayerType.SHUFFLE", ["int32"])
    assert not api.layer_info(shape).floating
    shape_tensor = _FakeLayer("/t", "LayerType.SLICE", ["float32"], shape_tensor=True)
    assert not api.layer_info(shape_tensor).floating

    two_outputs = _FakeLayer("/split", "LayerType.SLICE", ["float32", "float32"])
    api.pin_fp32(two_outputs)
    assert two_outputs.precision == "float32"
    assert two_outputs.output_types == {0: "float32", 1: "float32"}
    with pytest.raises(BackendUnavailableError, match="strongly typed"):
        TrtApi(_fake_trt("11.0.0", weakly_typed_api=False)).pin_fp32(two_outputs)


def _fake_cudart(count_error: str, driver_version: int = 0):
    errors = {name: SimpleNamespace(name=name) for name in ("cudaSuccess", count_error)}
    props = SimpleNamespace(
        name=b"Orin\x00\x00junk", major=8, minor=7, multiProcessorCount=8, totalGlobalMem=7 << 30
    )
    return SimpleNamespace(
        cudaError_t=SimpleNamespace(cudaSuccess=errors["cudaSuccess"]),
        cudaGetErrorName=lambda error: (errors["cudaSuccess"], error.name.encode()),
        cudaGetDeviceCount=lambda: (errors[count_error], 1 if count_error == "cudaSuccess" else 0),
        cudaDriverGetVersion=lambda: (errors["cudaSuccess"], driver_version),
        cudaRuntimeGetVersion=lambda: (errors["cudaSuccess"], 12060),
        cudaGetDeviceProperties=lambda device: (errors["cudaSuccess"], props),
        cudaStreamSynchronize=lambda stream: (errors["cudaSuccess"],),
    )


def test_cuda_shim_counts_devices_and_reads_names():
    cuda = CudaApi(_fake_cudart("cudaSuccess"))
    assert cuda.device_count() == 1
    assert cuda.call("cudaStreamSynchronize", 0) is None
    assert cuda.device_identity(0) == GpuIdentity("Orin", "8.7", 8, 7168, 0, 12060)
    with pytest.raises(BackendUnavailableError, match="reports 1 device"):
        cuda.require_device(1)
    no_device = CudaApi(_fake_cudart("cudaErrorNoDevice"))
    assert no_device.device_count() == 0
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"):
        no_device.require_device(0)


def test_cuda_shim_names_an_old_driver_instead_of_reporting_no_gpu(monkeypatch):
    from mobilesam_ros.core.backends.tensorrt import compat

    # JetPack 6: driver 540 (CUDA 12.2) with cuda-python 13 from a plain pip install.
    monkeypatch.setattr(compat, "cuda_python_version", lambda: "13.0.1")
    cuda = CudaApi(_fake_cudart("cudaErrorInsufficientDriver", driver_version=12020))
    with pytest.raises(BackendUnavailableError) as error:
        cuda.device_count()
    message = str(error.value)
    assert "cudaErrorInsufficientDriver" in message
    assert "requirements/jetpack6.txt" in message
    no_driver = CudaApi(_fake_cudart("cudaErrorInsufficientDriver", driver_version=0))
    with pytest.raises(BackendUnavailableError, match="no NVIDIA driver is loaded"):
        no_driver.device_count()


def test_device_strings():
    assert parse_device("auto") == 0
    assert parse_device("cuda") == 0
    assert parse_device("cuda:2") == 2
    with pytest.raises(BackendUnavailableError, match="onnxruntime"):
        parse_device("cpu")
    with pytest.raises(BackendUnavailableError, match="cuda:N"):
        parse_device("gpu0")


# ---------------------------------------------------------------------------------------------
# trtexec command


def test_trtexec_command_for_a_decoder():
    profile = graph_profile("decoder_single", DecoderProfile(max_prompts=4, max_points=3))
    command = trtexec_command(
        "/models/decoder_single.onnx",
        "/cache/decoder_single-fp16.engine",
        fp16=True,
        profile=profile,
        fp32_layers=["/norm1/LayerNormalization", "/self_attn/Softmax"],
    )
    pins = "/norm1/LayerNormalization:fp32,/self_attn/Softmax:fp32"
    assert command == (
        "trtexec --onnx=/models/decoder_single.onnx --saveEngine=/cache/decoder_single-fp16.engine"
        " --memPoolSize=workspace:2048 --noTF32 --fp16"
        " --minShapes=point_coords:1x1x2,point_labels:1x1,mask_input:1x1x256x256,has_mask_input:1"
        " --optShapes=point_coords:4x2x2,point_labels:4x2,mask_input:1x1x256x256,has_mask_input:1"
        " --maxShapes=point_coords:4x3x2,point_labels:4x3,mask_input:4x1x256x256,has_mask_input:4"
        f" --layerPrecisions={pins} --layerOutputTypes={pins} --precisionConstraints=obey"
    )


def test_trtexec_command_for_an_fp32_encoder_with_a_spaced_path():
    command = trtexec_command("/my models/encoder.onnx", "/c/e.engine", fp16=False)
    assert command == (
        "trtexec '--onnx=/my models/encoder.onnx' --saveEngine=/c/e.engine "
        "--memPoolSize=workspace:2048 --noTF32"
    )


def test_trtexec_command_for_a_strongly_typed_build():
    command = trtexec_command("/g/encoder-fp16.onnx", "/c/e.engine", fp16=True, strongly_typed=True)
    assert command.endswith("--noTF32 --stronglyTyped")
    assert "--fp16" not in command and "--layerPrecisions" not in command


# ---------------------------------------------------------------------------------------------
# Self-check (stand-in backends: a box prompt's mask is the box itself)


class _BoxBackend(Backend):
    """Low-res logits that are positive inside each prompt's box corners, shifted by `shift`."""

    name = "boxes"

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift

    def encode(self, image):
        return np.zeros((1, 256, 64, 64), np.float32)

    def decode(self, embedding, inputs, multimask):
        point_coords, point_labels = inputs.point_coords, inputs.point_labels
        outputs = 3 if multimask else 1
        logits = np.full((len(point_coords), outputs, LOW_RES_SIZE, LOW_RES_SIZE), -5.0, np.float32)
        for i, (coords, labels) in enumerate(zip(point_coords, point_labels, strict=True)):
            (x0, y0), (x1, y1) = coords[labels == 2][0] / 4, coords[labels == 3][0] / 4
            x0, x1 = int(x0) + self.shift, int(x1) + self.shift
            logits[i, :, int(y0) : int(y1), max(x0, 0) : max(x1, 0)] = 5.0
        return logits, np.ones((len(point_coords), outputs), np.float32)

    def embedding_to_numpy(self, embedding):
        return embedding


def test_self_check_photo_and_boxes():
    photo = self_check_photo()
    assert photo.shape == (256, 256, 3) and photo.dtype == np.uint8
    assert photo.std() > 40  # a real photo, not a flat test pattern
    assert np.all(SELF_CHECK_BOXES[:, :2] >= 0) and np.all(SELF_CHECK_BOXES[:, 2:] <= 256)
    assert np.all(SELF_CHECK_BOXES[:, 2:] > SELF_CHECK_BOXES[:, :2])


def test_self_check_passes_identical_and_fails_shifted_masks():
    same = run_self_check(_BoxBackend(), _BoxBackend())
    assert same.iou == 1.0 and same.passed
    assert len(same.iou_per_box) == len(SELF_CHECK_BOXES)
    shifted = run_self_check(_BoxBackend(shift=6), _BoxBackend())
    assert shifted.iou < SELF_CHECK_MIN_IOU and not shifted.passed
    assert "FAILED" in shifted.summary()


class _IgnoresSharedHint(_BoxBackend):
    """Decodes like the reference except when one hint is shared by several prompts."""

    def decode(self, embedding, inputs, multimask):
        low, iou = super().decode(embedding, inputs, multimask)
        if len(inputs.mask_input) == 1 and len(inputs) > 1 and inputs.has_mask_input[0] > 0:
            low[1:] = -5.0  # as if the hint's broadcast reached only the first prompt
        return low, iou


def test_self_check_covers_prompt_counts_and_mask_hints():
    reference = reference_masks(_BoxBackend(), max_prompts=16)
    shapes = {
        case.name: (len(case.inputs), len(case.inputs.mask_input), case.inputs.has_mask_input[0])
        for case in reference.cases
    }
    boxes = len(SELF_CHECK_BOXES)
    assert shapes == {
        f"N={boxes}": (boxes, 1, 0),
        "N=1": (1, 1, 0),
        "N=7": (7, 1, 0),
        "N=16": (16, 1, 0),
        f"N={boxes} M=1 hint": (boxes, 1, 1),
        f"N={boxes} M=N hints": (boxes, boxes, 1),
    }
    good = compare_with_reference(_BoxBackend(), reference)
    assert good.passed and len(good.iou_per_case) == 2 * len(shapes)
    broken = compare_with_reference(_IgnoresSharedHint(), reference)
    assert not broken.passed
    worst = min(broken.iou_per_case, key=lambda case: case[1])[0]
    assert worst.startswith(f"N={boxes} M=1 hint")
    assert "worst case" in broken.summary()


def test_mask_iou_of_empty_masks_is_one():
    empty = np.zeros((2, 5, 5), bool)
    full = np.ones((2, 5, 5), bool)
    assert mask_iou(empty, empty).tolist() == [1.0, 1.0]
    assert mask_iou(empty, full).tolist() == [0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Backend selection and CLI without TensorRT


@pytest.mark.skipif(_gpu_and_tensorrt(), reason="TensorRT and a GPU are present here")
def test_tensorrt_backend_says_why_it_is_unavailable(tmp_path):
    with pytest.raises(BackendUnavailableError, match="backend 'tensorrt'"):
        create_backend("tensorrt", tmp_path / "missing.pt", tmp_path)
    with pytest.raises(BackendUnavailableError, match="device 'cpu'"):
        create_backend("tensorrt", tmp_path / "missing.pt", tmp_path, device="cpu")


@pytest.mark.skipif(_gpu_and_tensorrt(), reason="TensorRT and a GPU are present here")
def test_auto_without_tensorrt_takes_another_backend_and_says_why(random_checkpoint, cache_dir):
    backend = create_backend("auto", random_checkpoint, cache_dir, "auto", progress=False)
    assert backend.name != "tensorrt"
    assert "backend 'tensorrt'" in backend.fallback_reason


def _cached_tiny_export(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint file whose export cache holds tiny graphs (no PyTorch export needed)."""
    from mobilesam_ros.core.model.checkpoint import file_sha256
    from mobilesam_ros.core.model.export import export_key

    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"not a real checkpoint; the export below is already cached")
    folder = tmp_path / "cache" / "onnx" / export_key(file_sha256(checkpoint))
    folder.mkdir(parents=True)
    tiny = _tiny_onnx(folder / "encoder.onnx").read_bytes()
    for name in ("decoder_single.onnx", "decoder_multi.onnx"):
        (folder / name).write_bytes(tiny)
    return checkpoint, tmp_path / "cache"


@pytest.mark.skipif(_gpu_and_tensorrt(), reason="TensorRT and a GPU are present here")
def test_build_engine_without_tensorrt_prints_trtexec_and_fails(tmp_path, capsys):
    checkpoint, cache = _cached_tiny_export(tmp_path)
    args = ["--checkpoint", str(checkpoint), "--cache-dir", str(cache), "--max-prompts", "8"]
    assert main(["build-engine", *args]) == 2
    out, err = capsys.readouterr()
    commands = [line for line in out.splitlines() if line.startswith("trtexec ")]
    assert len(commands) == 3
    encoder, decoder = commands[0], commands[1]
    assert "--fp16" in encoder and "--minShapes" not in encoder
    assert "/blocks.0/norm/LayerNormalization:fp32" in encoder
    assert "--precisionConstraints=obey" in encoder
    assert "--maxShapes=point_coords:8x32x2" in decoder
    reasons = ("TensorRT is not importable", "needs an NVIDIA GPU", "no NVIDIA driver")
    assert any(reason in err for reason in reasons), err

    assert main(["build-engine", *args, "--precision", "fp32"]) == 2
    out = capsys.readouterr().out
    assert "--fp16" not in out and "--layerPrecisions" not in out


@pytest.mark.skipif(_gpu_and_tensorrt(), reason="TensorRT and a GPU are present here")
def test_verify_engine_without_tensorrt_fails_clearly(tmp_path, capsys):
    checkpoint, cache = _cached_tiny_export(tmp_path)
    assert main(["verify-engine", "--checkpoint", str(checkpoint), "--cache-dir", str(cache)]) == 2
    assert "backend 'tensorrt'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A TensorRT 11 stand-in: auto falls back, an explicit choice fails with the reason


def _fake_tensorrt_11():
    """TensorRT 11's Python surface as far as a build reaches it: TensorRT-RTX's strongly
    typed builder and parser (no FP16 or precision-constraint flags, as in 11) under the name
    `tensorrt`, version 11.0.0, whose build fails as a real failed build does (None)."""
    import types

    rtx = import_tensorrt()
    if "rtx" not in rtx.__name__:
        pytest.skip("the stand-in wraps TensorRT-RTX; a full TensorRT is installed here")

    class FailingBuilder(rtx.Builder):
        def build_serialized_network(self, network, config):
            return None

    fake = types.ModuleType("tensorrt")
    fake.__dict__.update({k: v for k, v in vars(rtx).items() if not k.startswith("__")})
    fake.__version__ = "11.0.0"
    fake.Builder = FailingBuilder
    return fake


@pytest.fixture
def tensorrt_11_with_a_gpu(monkeypatch):
    from mobilesam_ros.core.backends.tensorrt import compat

    try:
        fake = _fake_tensorrt_11()
    except BackendUnavailableError:
        pytest.skip("no TensorRT-RTX builder to stand in for TensorRT 11")
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(compat, "import_cudart", lambda: _fake_cudart("cudaSuccess"))
    monkeypatch.setattr(
        CudaApi,
        "call",
        lambda self, function, *args: (
            None if function == "cudaSetDevice" else _REAL_CUDA_CALL(self, function, *args)
        ),
    )
    return fake


_REAL_CUDA_CALL = CudaApi.call


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        (
            12060,
            r"driver supports CUDA 12\.6; TensorRT 11\.0\.0 is built for CUDA 13 .*tensorrt-cu12",
        ),
        (13000, r"driver supports CUDA 13\.0$"),
    ],
)
def test_probe_names_the_failed_step_and_the_driver(tensorrt_11_with_a_gpu, driver, expected):
    from mobilesam_ros.core.backends.tensorrt.compat import probe_tensorrt

    cuda = CudaApi(_fake_cudart("cudaSuccess", driver_version=driver))
    with pytest.raises(BackendUnavailableError, match=expected) as error:
        probe_tensorrt(TrtApi(tensorrt_11_with_a_gpu), cuda)
    assert "cannot build a one-layer probe engine" in str(error.value)


def test_probe_on_a_builder_that_loads_nothing():
    """TensorRT-RTX here builds the probe, but without a GPU driver nothing loads."""
    try:
        api = TrtApi(import_tensorrt())
    except BackendUnavailableError:
        pytest.skip("no TensorRT-RTX builder here")
    from mobilesam_ros.core.backends.tensorrt.compat import probe_tensorrt

    cuda = CudaApi(_fake_cudart("cudaSuccess", driver_version=12080))
    with pytest.raises(BackendUnavailableError, match="cannot load the probe engine"):
        probe_tensorrt(api, cuda)


def test_tensorrt_11_build_failure_falls_back_and_explicit_choice_fails(
    tensorrt_11_with_a_gpu, random_checkpoint, cache_dir, caplog
):
    from mobilesam_ros.core import backends

    options = {"max_prompts": 8}
    # The probe engine fails first, before the graphs are exported and built.
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 11\.0\.0 cannot build a one"):
        create_backend("tensorrt", random_checkpoint, cache_dir, "cuda", False, options)
    backends._reported_fallbacks.clear()
    with caplog.at_level(logging.INFO, logger="mobilesam_ros.core.backends"):
        first = create_backend("auto", random_checkpoint, cache_dir, "auto", False, options)
        second = create_backend("auto", random_checkpoint, cache_dir, "auto", False, options)
    assert first.name == second.name == AUTO_CPU_BACKEND
    assert "TensorRT 11.0.0 cannot build a one-layer probe engine" in first.fallback_reason
    assert second.fallback_reason == first.fallback_reason
    logged = [r for r in caplog.records if "does not use TensorRT" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING  # once, not per call


def test_auto_on_the_cpu_records_no_fallback(random_checkpoint, cache_dir):
    backend = create_backend("auto", random_checkpoint, cache_dir, "cpu", progress=False)
    assert backend.name == AUTO_CPU_BACKEND and backend.fallback_reason is None


# ---------------------------------------------------------------------------------------------
# Real TensorRT on a GPU (skipped elsewhere)


def _gpu_target():
    from mobilesam_ros.core.backends.tensorrt.engine_set import open_gpu

    return open_gpu("auto", DEFAULT_PRECISION, max_prompts=4)


@pytest.fixture(scope="module")
def built_engines(random_checkpoint, tmp_path_factory):
    from mobilesam_ros.core.backends.tensorrt.engine_set import ensure_engines
    from mobilesam_ros.core.model.export import export_onnx

    cache = tmp_path_factory.mktemp("trt-cache")
    models = export_onnx(random_checkpoint, cache, progress=False)
    engines = ensure_engines(_gpu_target(), models, cache, progress=True)
    return models, cache, engines


@needs_tensorrt_gpu
def test_real_build_passes_self_check_and_is_cached(built_engines):
    from mobilesam_ros.core.backends.tensorrt.engine_set import ensure_engines

    models, cache, engines = built_engines
    for graph, metadata in engines.metadata.items():
        assert metadata["self_check_iou"] >= SELF_CHECK_MIN_IOU, graph
        assert metadata["build_seconds"] > 0
    again = ensure_engines(_gpu_target(), models, cache, progress=False)
    assert not again.built
    assert again.engines == engines.engines


@needs_tensorrt_gpu
def test_real_corrupt_engine_is_rebuilt(built_engines):
    from mobilesam_ros.core.backends.tensorrt.engine_set import ensure_engines

    models, cache, engines = built_engines
    path = engines.paths["decoder_multi"]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "SHA-256" in needs_rebuild(path, engines.specs["decoder_multi"])
    rebuilt = ensure_engines(_gpu_target(), models, cache, progress=False)
    assert rebuilt.built
    assert needs_rebuild(path, engines.specs["decoder_multi"]) is None


@needs_tensorrt_gpu
def test_real_engine_matches_onnxruntime_for_any_prompt_count(built_engines):
    from mobilesam_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mobilesam_ros.core.backends.tensorrt.backend import TensorRtBackend
    from mobilesam_ros.core.processing.preprocess import ImagePreprocessor, encode_prompts

    models, _, engines = built_engines
    trt_backend = TensorRtBackend(engines.engines, DecoderProfile(max_prompts=4))
    reference = OnnxRuntimeBackend(models, "cpu")
    model_input, geometry = ImagePreprocessor()(self_check_photo())
    first = trt_backend.encode(model_input)
    second = trt_backend.encode(model_input)  # a second live embedding has its own buffer
    assert first.pointer != second.pointer
    ref_embedding = reference.encode(model_input)
    np.testing.assert_allclose(
        trt_backend.embedding_to_numpy(first), ref_embedding, atol=0.1, rtol=0.1
    )
    for count in (1, 4, 6):  # 6 > max_prompts: split into two calls
        boxes = np.resize(SELF_CHECK_BOXES, (count, 4))
        inputs = DecoderInputs(*encode_prompts(geometry, boxes, None, None))
        for multimask in (False, True):
            low, iou = trt_backend.decode(first, inputs, multimask)
            ref_low, _ = reference.decode(ref_embedding, inputs, multimask)
            assert low.shape == ref_low.shape and iou.shape == low.shape[:2]
            assert mask_iou(low > 0, ref_low > 0).mean() >= SELF_CHECK_MIN_IOU
    trt_backend.close()


@needs_tensorrt_gpu
def test_real_cli_build_and_verify(built_engines, random_checkpoint, capsys):
    _, cache, _ = built_engines
    args = ["--checkpoint", str(random_checkpoint), "--cache-dir", str(cache), "--max-prompts", "4"]
    assert main(["build-engine", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("trtexec --onnx=") == 3
    assert main(["verify-engine", *args]) == 0
    assert "self-check against ONNX Runtime FP32: mask IoU" in capsys.readouterr().out


def test_a_cached_engine_that_does_not_load_is_deleted_and_built_once(
    monkeypatch, tmp_path, random_checkpoint
):
    from mobilesam_ros.core.backends.tensorrt import factory
    from mobilesam_ros.core.backends.tensorrt.backend import EngineLoadError
    from mobilesam_ros.core.model import export

    paths = {graph: tmp_path / f"{graph}.engine" for graph in GRAPHS}
    for path in paths.values():
        path.write_bytes(b"cached")
    calls = []

    def ensure_engines(target, models, cache_dir, force_rebuild, progress, workspace_mib):
        calls.append("ensure")
        built = tuple(g for g, p in paths.items() if not p.exists())
        for path in paths.values():
            path.write_bytes(b"cached" if path.exists() else b"rebuilt")
        engines = {graph: path.read_bytes() for graph, path in paths.items()}
        return SimpleNamespace(engines=engines, paths=paths, built=built)

    def backend(engines, profile, device, precision, loadable=(b"rebuilt",)):
        calls.append("load")
        if engines["decoder_single"] not in loadable:
            raise EngineLoadError("could not load the decoder_single engine", "decoder_single")
        return SimpleNamespace(engines=engines)

    monkeypatch.setattr(factory, "open_gpu", lambda *a: SimpleNamespace(profile=None))
    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: None)
    monkeypatch.setattr(factory, "ensure_engines", ensure_engines)
    monkeypatch.setattr(factory, "TensorRtBackend", backend)
    loaded = factory.create_tensorrt_backend(random_checkpoint, tmp_path, "cuda", False)
    assert calls == ["ensure", "load", "ensure", "load"]
    assert loaded.engines["decoder_single"] == b"rebuilt"
    assert loaded.engines["encoder"] == b"cached"  # only the failed entry was deleted

    # An engine built just now that does not load is not built again and again.
    calls.clear()
    monkeypatch.setattr(factory, "TensorRtBackend", lambda *a: backend(*a, loadable=()))
    paths["decoder_single"].unlink()
    with pytest.raises(EngineLoadError):
        factory.create_tensorrt_backend(random_checkpoint, tmp_path, "cuda", False)
    assert calls == ["ensure", "load"]


def test_timing_cache_is_shared_by_precisions_and_levels_of_one_tensorrt_and_gpu():
    name = _spec().timing_cache_name()
    for change in ({"graph": "encoder", "profile": ()}, {"precision": "fp32"}):
        assert _spec(**change).timing_cache_name() == name
    assert _spec(fp32_policy_version=7).timing_cache_name() == name
    for change in ({"tensorrt_version": "10.7.0"}, {"sm_count": 16}, {"driver_cuda_version": 1}):
        assert _spec(**change).timing_cache_name() != name


class _FakeTimingConfig:
    """A builder config's timing-cache calls, recording what it was given."""

    def __init__(self, readable: bool = True) -> None:
        self.readable = readable
        self.cache = None

    def create_timing_cache(self, data: bytes):
        if data and not self.readable:
            return None
        return SimpleNamespace(data=bytes(data), serialize=lambda: memoryview(b"timings+new"))

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False  # timings of another GPU must not be taken
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


def test_timing_cache_file_is_read_before_and_written_after_a_build(tmp_path):
    from mobilesam_ros.core.backends.tensorrt.build import TimingCache

    api = TrtApi(_fake_trt("10.3.0"))
    timings = TimingCache(tmp_path / _spec().timing_cache_name())
    first = _FakeTimingConfig()
    assert timings.attach(api, first) and first.cache.data == b""  # no file yet: empty
    timings.save(first)
    assert timings.path.read_bytes() == b"timings+new"
    second = _FakeTimingConfig()
    timings.attach(api, second)
    assert second.cache.data == b"timings+new"  # the next build starts from them
    unreadable = _FakeTimingConfig(readable=False)
    assert timings.attach(api, unreadable) and unreadable.cache.data == b""
    rtx = TrtApi(_fake_trt("1.7.1", weakly_typed_api=False, name="tensorrt_rtx_bindings"))
    assert not timings.attach(rtx, _FakeTimingConfig())  # no-op calls there


class _RecordingCudart:
    """cudaMalloc / cudaFree / cudaStreamSynchronize of a fake device, recorded."""

    def __init__(self) -> None:
        ok = SimpleNamespace(name="cudaSuccess")
        self.cudaError_t = SimpleNamespace(cudaSuccess=ok)
        self.live: dict[int, int] = {}
        self.calls: list[str] = []
        self._next = 0x1000
        self._ok = ok

    def cudaMalloc(self, nbytes):  # noqa: N802 (CUDA's names)
        self._next += 0x1000
        self.live[self._next] = nbytes
        self.calls.append(f"malloc {nbytes}")
        return self._ok, self._next

    def cudaFree(self, pointer):  # noqa: N802
        self.calls.append(f"free {self.live.pop(pointer)}")
        return (self._ok,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        self.calls.append("sync")
        return (self._ok,)


def test_contexts_share_one_activation_block_that_grows_for_a_larger_one():
    from mobilesam_ros.core.backends.tensorrt.gpu_memory import SharedActivations

    cudart = _RecordingCudart()
    shared = SharedActivations(CudaApi(cudart), stream="stream")
    bound: dict[str, tuple[int, int]] = {}
    shared.bind(lambda p, n: bound.__setitem__("encoder", (p, n)), 300)
    shared.bind(lambda p, n: bound.__setitem__("decoder_single", (p, n)), 200)
    assert len(cudart.live) == 1 and bound["encoder"] == bound["decoder_single"]
    assert bound["encoder"][1] == 300
    # The multimask decoder, loaded on first use, needs more: one larger block for all,
    # the old one freed only after the stream has finished with it.
    shared.bind(lambda p, n: bound.__setitem__("decoder_multi", (p, n)), 500)
    assert list(cudart.live.values()) == [500]
    assert set(bound.values()) == {(next(iter(cudart.live)), 500)}
    assert cudart.calls == ["malloc 300", "sync", "free 300", "malloc 500"]
    shared.release()
    assert cudart.live == {} and shared.nbytes == 0


def test_contexts_are_created_without_memory_and_bound_per_tensorrt_version():
    created = []

    class Engine:
        def create_execution_context(self, strategy=None):
            created.append(("strategy", strategy))
            return SimpleNamespace()

        def create_execution_context_without_device_memory(self):
            created.append(("without", None))
            return SimpleNamespace()

    trt10 = _fake_trt("10.3.0")
    trt10.ExecutionContextAllocationStrategy = SimpleNamespace(USER_MANAGED="USER_MANAGED")
    TrtApi(trt10).context_without_memory(Engine())
    TrtApi(_fake_trt("8.6.1")).context_without_memory(Engine())
    assert created == [("strategy", "USER_MANAGED"), ("without", None)]

    sized = SimpleNamespace(set_device_memory=lambda p, n: sized.__dict__.update(got=(p, n)))
    TrtApi(trt10).bind_context_memory(sized, 0x2000, 512)
    assert sized.got == (0x2000, 512)
    old = SimpleNamespace()
    TrtApi(_fake_trt("8.6.1")).bind_context_memory(old, 0x3000, 512)
    assert old.device_memory == 0x3000
