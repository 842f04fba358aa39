"""TensorRT backend: engines built from the ONNX graphs, run on cuda-python buffers.

Written for TensorRT 8.6 (JetPack 6.0; 8.5 of JetPack 5.1 has the same calls) and 10.x
(JetPack 6.1+, desktops). Every TensorRT call whose spelling differs between those versions
goes through `TrtApi`, the version shim. `tensorrt` and cuda-python are imported inside
functions only, so this module imports on machines that have neither.

The cache, the FP32 layer policy and the self-check live in TensorRT-free modules
(`core/engine_cache.py`, `core/engine_check.py`); this module only adds what needs TensorRT:
parsing and building, loading and running.

Memory and streams go through cuda-python (`cuda.bindings.runtime`, or `cuda.cudart` in
releases before 12.6) rather than pycuda: NVIDIA publishes and maintains it, it installs as
a pip wheel (aarch64 Jetson included) with no compiler or CUDA headers needed, and it is the
binding TensorRT's own Python samples use. PyTorch is not needed at run time.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mobilesam_ros.core.backends.base import (
    Backend,
    DecoderInputs,
    DecoderOutputs,
    decode_in_chunks,
)
from mobilesam_ros.core.backends.tensorrt.engine_cache import (
    DEFAULT_MAX_PROMPTS,
    DEFAULT_WORKSPACE_MIB,
    FP32_LEVELS,
    FP32_POLICY_VERSION,
    GRAPHS,
    MAX_FP32_LEVEL,
    DecoderProfile,
    EngineCacheError,
    EngineSpec,
    LayerInfo,
    check_precision,
    fp32_layer_names,
    graph_profile,
    graph_runs_fp32,
    needs_rebuild,
    read_engine,
    write_engine,
)
from mobilesam_ros.core.choices import DEFAULT_PRECISION, cuda_index
from mobilesam_ros.core.errors import BackendUnavailableError, InvalidInputError
from mobilesam_ros.core.files import exclusive_lock
from mobilesam_ros.core.model.constants import (
    EMBEDDING_CHANNELS,
    EMBEDDING_SIZE,
    IMAGE_SIZE,
    LOW_RES_SIZE,
)
from mobilesam_ros.core.model.export import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUT,
    ENCODER_OUTPUT,
    OnnxModels,
)

MIN_TENSORRT = (8, 5)  # first release with the named-tensor API (execute_async_v3)
_HEARTBEAT_SECONDS = 30.0
_IMAGE_SHAPE = (1, 3, IMAGE_SIZE, IMAGE_SIZE)
_EMBEDDING_SHAPE = (1, EMBEDDING_CHANNELS, EMBEDDING_SIZE, EMBEDDING_SIZE)
_MAX_MASK_OUTPUTS = 3  # the multimask decoder's K


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Imports and the version shim


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        raise BackendUnavailableError(
            "backend 'tensorrt': TensorRT is not importable here (the Python module `tensorrt` "
            "of TensorRT 8.6 or 10.x: JetPack ships it on Jetson, `pip install tensorrt` on "
            f"desktops); import failed with: {exc}"
        ) from exc
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's runtime API: `cuda.bindings.runtime` (12.6+) or `cuda.cudart` (older)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise BackendUnavailableError(
                "backend 'tensorrt' needs cuda-python for GPU buffers and streams "
                f"(pip install cuda-python); import failed with: {exc}"
            ) from exc
    return runtime


def parse_version(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise BackendUnavailableError(f"unrecognized TensorRT version {version!r}")
    return int(match[1]), int(match[2])


class TrtApi:
    """The TensorRT calls this package makes, spelled right for 8.5/8.6 and 10.x."""

    def __init__(self, trt: Any) -> None:
        self.trt = trt
        self.version = str(trt.__version__)
        self.major, self.minor = parse_version(self.version)
        if (self.major, self.minor) < MIN_TENSORRT:
            raise BackendUnavailableError(
                f"TensorRT {self.version} is too old: backend 'tensorrt' needs "
                f"{MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} or newer (8.6 or 10.x recommended)"
            )

    def network_flags(self) -> int:
        """create_network() flags: EXPLICIT_BATCH in 8.x; 10.x has no other mode (deprecated)."""
        if self.major >= 10:
            return 0
        return 1 << int(self.trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)

    def logger(self, verbose: bool) -> Any:
        severity = self.trt.Logger.WARNING if verbose else self.trt.Logger.ERROR
        return self.trt.Logger(severity)

    def set_workspace(self, config: Any, mib: int) -> None:
        config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, mib << 20)

    def precision_flags(self, fp16: bool) -> list[Any]:
        """Builder flags: FP16 kernels allowed, and pinned layers' precisions obeyed."""
        flags = self.trt.BuilderFlag
        return [flags.FP16, flags.OBEY_PRECISION_CONSTRAINTS] if fp16 else []

    def layer_info(self, layer: Any) -> LayerInfo:
        kind = getattr(layer.type, "name", None) or str(layer.type)
        float_types = (self.trt.float32, self.trt.float16)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        floating = bool(outputs) and all(
            t.dtype in float_types and not getattr(t, "is_shape_tensor", False) for t in outputs
        )
        return LayerInfo(str(layer.name), kind.rsplit(".", 1)[-1], floating)

    def pin_fp32(self, layer: Any) -> None:
        layer.precision = self.trt.float32
        for index in range(layer.num_outputs):
            layer.set_output_type(index, self.trt.float32)

    def numpy_dtype(self, engine: Any, name: str) -> np.dtype:
        return np.dtype(self.trt.nptype(engine.get_tensor_dtype(name)))

    def io_tensor_names(self, engine: Any) -> list[str]:
        return [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]


# ---------------------------------------------------------------------------------------------
# CUDA through cuda-python


def _native_handle(cuda_object: Any) -> int:
    """Address of a cuda-python handle (int(handle) is deprecated from cuda-bindings 12.9.1)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(cuda_object)
    return int(get_cuda_native_handle(cuda_object))


class CudaApi:
    """The few CUDA runtime calls the backend makes, with errors raised, not returned."""

    def __init__(self, cudart: Any | None = None) -> None:
        self.rt = cudart if cudart is not None else import_cudart()

    def call(self, function: str, *args: Any) -> Any:
        result = getattr(self.rt, function)(*args)
        error, values = result[0], result[1:]
        if error != self.rt.cudaError_t.cudaSuccess:
            name = self.rt.cudaGetErrorName(error)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
            raise BackendUnavailableError(f"CUDA {function} failed: {name}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def device_count(self) -> int:
        """Number of visible CUDA devices; 0 when there is no driver or no device."""
        try:
            return int(self.call("cudaGetDeviceCount"))
        except BackendUnavailableError:
            return 0

    def require_device(self, device_id: int) -> None:
        count = self.device_count()
        if count == 0:
            raise BackendUnavailableError(
                "backend 'tensorrt' needs an NVIDIA GPU, and CUDA reports none here"
            )
        if device_id >= count:
            raise BackendUnavailableError(
                f"device 'cuda:{device_id}' asked for, but CUDA reports {count} device(s)"
            )

    def device_identity(self, device_id: int) -> tuple[str, str]:
        """(GPU name, compute capability "major.minor")."""
        props = self.call("cudaGetDeviceProperties", device_id)
        name = props.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return str(name).strip(), f"{props.major}.{props.minor}"

    def host_to_device(self) -> Any:
        return self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice

    def device_to_host(self) -> Any:
        return self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost


def parse_device(device: str) -> int:
    """'auto', 'cuda' or 'cuda:N' -> N (TensorRT runs only on CUDA GPUs)."""
    if device == "cpu":
        raise BackendUnavailableError(
            "backend 'tensorrt' runs on a CUDA GPU; device 'cpu' asked for "
            "(use backend 'onnxruntime' on the CPU)"
        )
    try:
        return cuda_index(device)
    except InvalidInputError as exc:
        raise BackendUnavailableError(str(exc)) from exc


def tensorrt_usable() -> bool:
    """True when TensorRT and cuda-python import and CUDA sees a GPU (never raises)."""
    try:
        TrtApi(import_tensorrt())
        return CudaApi().device_count() > 0
    except Exception:  # any failure here only means: not usable, pick another backend
        return False


class _GpuResources:
    """Device and pinned host allocations plus one stream, freed together."""

    def __init__(self, cuda: CudaApi) -> None:
        self.cuda = cuda
        self.device: list[int] = []
        self.host: list[int] = []
        self.stream = cuda.call("cudaStreamCreate")
        self.stream_handle = _native_handle(self.stream)

    def device_buffer(self, nbytes: int) -> int:
        pointer = int(self.cuda.call("cudaMalloc", nbytes))
        self.device.append(pointer)
        return pointer

    def host_array(self, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """A numpy array in page-locked memory (what makes cudaMemcpyAsync asynchronous)."""
        count = int(np.prod(shape))
        nbytes = count * np.dtype(dtype).itemsize
        pointer = int(self.cuda.call("cudaMallocHost", nbytes))
        self.host.append(pointer)
        raw = (ctypes.c_byte * nbytes).from_address(pointer)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def release(self) -> None:
        with contextlib.suppress(BackendUnavailableError):
            self.cuda.call("cudaStreamSynchronize", self.stream)
        for pointer in self.device:
            with contextlib.suppress(BackendUnavailableError):
                self.cuda.call("cudaFree", pointer)
        for pointer in self.host:
            with contextlib.suppress(BackendUnavailableError):
                self.cuda.call("cudaFreeHost", pointer)
        with contextlib.suppress(BackendUnavailableError):
            self.cuda.call("cudaStreamDestroy", self.stream)
        self.device, self.host = [], []


class DeviceEmbedding:
    """An image embedding in GPU memory; its buffer goes back to the pool when dropped."""

    __slots__ = ("__weakref__", "pointer", "pool")

    def __init__(self, pointer: int, pool: _EmbeddingPool) -> None:
        self.pointer = pointer
        self.pool = pool


class _EmbeddingPool:
    """Embedding buffers reused across frames: callers may keep several embeddings alive."""

    def __init__(self, cuda: CudaApi) -> None:
        self._cuda = cuda
        self._nbytes = int(np.prod(_EMBEDDING_SHAPE)) * 4
        self._free: list[int] = []
        self._closed = False

    def acquire(self) -> DeviceEmbedding:
        if self._free:
            pointer = self._free.pop()
        else:
            pointer = int(self._cuda.call("cudaMalloc", self._nbytes))
        embedding = DeviceEmbedding(pointer, self)
        weakref.finalize(embedding, self._release, pointer)
        return embedding

    def _release(self, pointer: int) -> None:
        if self._closed:
            with contextlib.suppress(BackendUnavailableError):
                self._cuda.call("cudaFree", pointer)
        else:
            self._free.append(pointer)

    def close(self) -> None:
        self._closed = True
        while self._free:
            with contextlib.suppress(BackendUnavailableError):
                self._cuda.call("cudaFree", self._free.pop())


# ---------------------------------------------------------------------------------------------
# Runtime


class _Engine:
    """One deserialized engine with its execution context."""

    def __init__(
        self, api: TrtApi, runtime: Any, engine_bytes: bytes, graph: str, names: tuple[str, ...]
    ) -> None:
        self.graph = graph
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendUnavailableError(
                f"TensorRT {api.version} could not load the {graph} engine (see its log above)"
            )
        found = api.io_tensor_names(self.engine)
        if sorted(found) != sorted(names):
            raise BackendUnavailableError(
                f"the {graph} engine has tensors {found}, expected {list(names)}"
            )
        for name in found:
            if api.numpy_dtype(self.engine, name) != np.float32:
                raise BackendUnavailableError(
                    f"the {graph} engine's tensor {name!r} is not float32"
                )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError(f"TensorRT could not create a {graph} context")

    def run(
        self, shapes: Mapping[str, tuple[int, ...]], addresses: Mapping[str, int], stream: int
    ) -> None:
        for name, shape in shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise InvalidInputError(
                    f"{self.graph}: input {name} of shape {shape} is outside the engine's "
                    "optimization profile"
                )
        for name, pointer in addresses.items():
            if not self.context.set_tensor_address(name, pointer):
                raise BackendUnavailableError(f"{self.graph}: cannot bind tensor {name}")
        if not self.context.execute_async_v3(stream):
            raise BackendUnavailableError(f"TensorRT failed to run the {self.graph} engine")

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.context.get_tensor_shape(name))

    def release(self) -> None:
        self.context = None  # a context goes before its engine
        self.engine = None


class _TrtObjects:
    """Logger, runtime and engines, released in the order TensorRT requires."""

    def __init__(self, api: TrtApi) -> None:
        self.logger = api.logger(verbose=True)
        self.runtime = api.trt.Runtime(self.logger)
        self.engines: list[_Engine] = []

    def load(self, api: TrtApi, engine_bytes: bytes, graph: str, names: tuple[str, ...]) -> _Engine:
        engine = _Engine(api, self.runtime, engine_bytes, graph, names)
        self.engines.append(engine)
        return engine

    def release(self) -> None:
        for engine in reversed(self.engines):
            engine.release()
        self.engines = []
        self.runtime = None  # engines before their runtime, the runtime before its logger
        self.logger = None


class TensorRtBackend(Backend):
    """Encoder and decoder engines sharing one CUDA stream and preallocated buffers.

    Inputs are copied into page-locked host buffers and sent with asynchronous copies on the
    stream; each call synchronizes once at its end. The image embedding stays on the GPU.
    Decoder calls with more prompts than the engine's profile are split.

    Args:
      engines: serialized engines by graph name ("encoder", "decoder_single",
        "decoder_multi"), already validated (see `ensure_engines`).
      profile: the decoder profile the engines were built with.
      device: "auto", "cuda" or "cuda:N".
      precision: the precision the engines were built for (shown by describe()).
    """

    name = "tensorrt"

    def __init__(
        self,
        engines: Mapping[str, bytes],
        profile: DecoderProfile,
        device: str = "auto",
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        self._api = TrtApi(import_tensorrt())
        self._cuda = CudaApi()
        self._device_id = parse_device(device)
        self._cuda.require_device(self._device_id)
        self._cuda.call("cudaSetDevice", self._device_id)
        self.device = f"cuda:{self._device_id}"
        self.gpu_name, _ = self._cuda.device_identity(self._device_id)
        self.precision = precision
        self.profile = profile
        self._multimask_bytes = engines["decoder_multi"]  # deserialized on first use
        self._trt = _TrtObjects(self._api)
        self._resources = _GpuResources(self._cuda)
        self._embeddings = _EmbeddingPool(self._cuda)
        self._finalizer = weakref.finalize(
            self, _release_all, self._trt, self._resources, self._embeddings
        )
        self._encoder = self._trt.load(
            self._api, engines["encoder"], "encoder", (ENCODER_INPUT, ENCODER_OUTPUT)
        )
        self._decoders = {
            False: self._trt.load(
                self._api,
                engines["decoder_single"],
                "decoder_single",
                DECODER_INPUTS + DECODER_OUTPUTS,
            )
        }
        self._allocate_buffers()

    def _allocate_buffers(self) -> None:
        res, p, t = self._resources, self.profile.max_prompts, self.profile.max_points
        self._image_host = res.host_array(_IMAGE_SHAPE)
        self._image_device = res.device_buffer(self._image_host.nbytes)
        shapes = {
            DECODER_INPUTS[1]: (p, t, 2),
            DECODER_INPUTS[2]: (p, t),
            DECODER_INPUTS[3]: (p, 1, LOW_RES_SIZE, LOW_RES_SIZE),
            DECODER_INPUTS[4]: (p,),
            DECODER_OUTPUTS[0]: (p, _MAX_MASK_OUTPUTS, LOW_RES_SIZE, LOW_RES_SIZE),
            DECODER_OUTPUTS[1]: (p, _MAX_MASK_OUTPUTS),
        }
        self._host = {name: res.host_array(shape) for name, shape in shapes.items()}
        self._device_buffers = {
            name: res.device_buffer(array.nbytes) for name, array in self._host.items()
        }

    def _decoder(self, multimask: bool) -> _Engine:
        engine = self._decoders.get(multimask)
        if engine is None:  # only the multimask engine is loaded late
            engine = self._decoders[True] = self._trt.load(
                self._api, self._multimask_bytes, "decoder_multi", DECODER_INPUTS + DECODER_OUTPUTS
            )
        return engine

    def _select_device(self) -> None:
        # The CUDA device is per thread; the node calls from its own worker thread.
        if self._device_id != 0:
            self._cuda.call("cudaSetDevice", self._device_id)

    def encode(self, image: np.ndarray) -> DeviceEmbedding:
        if not isinstance(image, np.ndarray) or image.shape != _IMAGE_SHAPE:
            raise InvalidInputError(
                f"encoder input must be a {_IMAGE_SHAPE} float32 array, got "
                f"{getattr(image, 'shape', type(image).__name__)}"
            )
        self._select_device()
        cuda, res = self._cuda, self._resources
        np.copyto(self._image_host, image, casting="same_kind")
        embedding = self._embeddings.acquire()
        cuda.call(
            "cudaMemcpyAsync",
            self._image_device,
            self._image_host.ctypes.data,
            self._image_host.nbytes,
            cuda.host_to_device(),
            res.stream,
        )
        self._encoder.run(
            {},
            {ENCODER_INPUT: self._image_device, ENCODER_OUTPUT: embedding.pointer},
            res.stream_handle,
        )
        cuda.call("cudaStreamSynchronize", res.stream)
        return embedding

    def decode(
        self, embedding: DeviceEmbedding, inputs: DecoderInputs, multimask: bool
    ) -> DecoderOutputs:
        if not isinstance(embedding, DeviceEmbedding) or embedding.pool is not self._embeddings:
            raise InvalidInputError("embedding must come from this backend's encode()")
        coords, labels, masks, flags = (np.asarray(a, np.float32) for a in inputs.arrays())
        if coords.ndim != 3 or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
            raise InvalidInputError(
                f"point_coords must be (N, T, 2) and point_labels (N, T); got {coords.shape} "
                f"and {labels.shape}"
            )
        num_prompts, num_tokens = coords.shape[:2]
        if masks.shape[1:] != (1, LOW_RES_SIZE, LOW_RES_SIZE) or flags.shape != masks.shape[:1]:
            raise InvalidInputError(
                f"mask_input must be (M, 1, {LOW_RES_SIZE}, {LOW_RES_SIZE}) and has_mask_input "
                f"(M,); got {masks.shape} and {flags.shape}"
            )
        if len(masks) not in (1, num_prompts):
            raise InvalidInputError(f"mask_input must hold 1 or N={num_prompts} masks")
        if num_tokens > self.profile.max_points:
            raise InvalidInputError(
                f"a prompt has {num_tokens} tokens (points plus box corners); the TensorRT "
                f"decoder was built for at most {self.profile.max_points} (max_points)"
            )
        outputs = _MAX_MASK_OUTPUTS if multimask else 1
        if num_prompts == 0:
            return (
                np.empty((0, outputs, LOW_RES_SIZE, LOW_RES_SIZE), np.float32),
                np.empty((0, outputs), np.float32),
            )
        self._select_device()
        # The engine's profile takes at most max_prompts prompts per call.
        return decode_in_chunks(
            lambda chunk: self._decode_chunk(embedding, chunk, multimask),
            DecoderInputs(coords, labels, masks, flags),
            self.profile.max_prompts,
        )

    def _decode_chunk(
        self, embedding: DeviceEmbedding, chunk: DecoderInputs, multimask: bool
    ) -> DecoderOutputs:
        cuda, res = self._cuda, self._resources
        engine = self._decoder(multimask)
        inputs = dict(zip(DECODER_INPUTS[1:], chunk.arrays(), strict=True))
        for name, array in inputs.items():
            host = self._host[name].reshape(-1)[: array.size].reshape(array.shape)
            np.copyto(host, array)
            cuda.call(
                "cudaMemcpyAsync",
                self._device_buffers[name],
                host.ctypes.data,
                host.nbytes,
                cuda.host_to_device(),
                res.stream,
            )
        addresses = {name: self._device_buffers[name] for name in (*inputs, *DECODER_OUTPUTS)}
        addresses[DECODER_INPUTS[0]] = embedding.pointer
        engine.run({n: a.shape for n, a in inputs.items()}, addresses, res.stream_handle)
        results = []
        for name in DECODER_OUTPUTS:
            shape = engine.output_shape(name)
            host = self._host[name].reshape(-1)[: int(np.prod(shape))].reshape(shape)
            cuda.call(
                "cudaMemcpyAsync",
                host.ctypes.data,
                self._device_buffers[name],
                host.nbytes,
                cuda.device_to_host(),
                res.stream,
            )
            results.append(host)
        cuda.call("cudaStreamSynchronize", res.stream)
        # Copies: the pinned buffers are overwritten by the next call.
        return results[0].copy(), results[1].copy()

    def embedding_to_numpy(self, embedding: DeviceEmbedding) -> np.ndarray:
        out = np.empty(_EMBEDDING_SHAPE, dtype=np.float32)
        self._select_device()
        kind = self._cuda.device_to_host()
        self._cuda.call("cudaMemcpy", out.ctypes.data, embedding.pointer, out.nbytes, kind)
        return out

    def describe(self) -> str:
        return f"tensorrt {self._api.version} {self.precision} on {self.gpu_name} ({self.device})"

    def close(self) -> None:
        """Free engines, GPU buffers and the stream now (otherwise when garbage-collected)."""
        self._decoders.clear()
        self._finalizer()


def _release_all(trt: _TrtObjects, resources: _GpuResources, embeddings: _EmbeddingPool) -> None:
    trt.release()
    resources.release()
    embeddings.close()


# ---------------------------------------------------------------------------------------------
# Building


@dataclass
class BuiltEngine:
    """One freshly built engine and what went into it."""

    graph: str
    engine: bytes
    fp16: bool
    fp32_layers: list[str]
    seconds: float
    reused: bool = False  # taken from the cache, not built now


@contextlib.contextmanager
def _heartbeat(enabled: bool, label: str) -> Iterator[None]:
    """Print a line every 30 s while a long build runs, so the user sees it is alive."""
    stop = threading.Event()
    started = time.perf_counter()

    def beat() -> None:
        while not stop.wait(_HEARTBEAT_SECONDS):
            elapsed = time.perf_counter() - started
            _say(enabled, f"      ... still building {label} ({elapsed:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def build_engine(
    api: TrtApi, onnx_path: Path, spec: EngineSpec, level: int, progress: bool, label: str
) -> BuiltEngine:
    """Parse the ONNX graph, pin the policy's layers to FP32 and build a serialized engine."""
    trt = api.trt
    started = time.perf_counter()
    logger = api.logger(progress)
    builder = trt.Builder(logger)
    network = builder.create_network(api.network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(f"TensorRT could not parse {onnx_path}: {errors}")
    fp16 = not graph_runs_fp32(spec.graph, spec.precision, level)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    infos = [api.layer_info(layer) for layer in layers]
    pinned = fp32_layer_names(infos, level, spec.graph) if fp16 else []
    pinned_set = set(pinned)
    for layer, info in zip(layers, infos, strict=True):
        if info.name in pinned_set:
            api.pin_fp32(layer)
    config = builder.create_builder_config()
    api.set_workspace(config, spec.workspace_mib)
    for flag in api.precision_flags(fp16):
        config.set_flag(flag)
    if spec.profile:
        profile = builder.create_optimization_profile()
        for shape_range in spec.profile:
            profile.set_shape(shape_range.name, shape_range.min, shape_range.opt, shape_range.max)
        config.add_optimization_profile(profile)
    mode = f"fp16, {len(pinned)} layers pinned to FP32" if fp16 else "fp32"
    _say(progress, f"{label} building {spec.graph} engine ({mode}) ...")
    with _heartbeat(progress, spec.graph):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(
            f"TensorRT failed to build the {spec.graph} engine from {onnx_path} (see its log)"
        )
    engine = bytes(serialized)
    seconds = time.perf_counter() - started
    _say(
        progress,
        f"{label} {spec.graph} built in {seconds:.1f} s ({len(engine) / 2**20:.1f} MiB)",
    )
    return BuiltEngine(spec.graph, engine, fp16, pinned, seconds)


@dataclass
class EngineSet:
    """The three engines of one configuration: paths, metadata and validated bytes."""

    specs: dict[str, EngineSpec]
    paths: dict[str, Path]
    metadata: dict[str, dict[str, Any]]
    engines: dict[str, bytes]
    built: tuple[str, ...]  # graphs built by this call (empty when all came from the cache)


def engine_specs(
    api: TrtApi,
    cuda: CudaApi,
    models: OnnxModels,
    device_id: int,
    precision: str,
    profile: DecoderProfile,
) -> dict[str, EngineSpec]:
    from mobilesam_ros.core.model.checkpoint import file_sha256

    gpu_name, capability = cuda.device_identity(device_id)
    onnx_files = {
        "encoder": models.encoder,
        "decoder_single": models.decoder_single,
        "decoder_multi": models.decoder_multi,
    }
    return {
        graph: EngineSpec(
            graph=graph,
            onnx_sha256=file_sha256(path),
            tensorrt_version=api.version,
            gpu_name=gpu_name,
            compute_capability=capability,
            precision=precision,
            profile=graph_profile(graph, profile),
            fp32_policy_version=FP32_POLICY_VERSION,
            workspace_mib=DEFAULT_WORKSPACE_MIB,
        )
        for graph, path in onnx_files.items()
    }


def engine_folder(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / "tensorrt"


def _read_all(specs: Mapping[str, EngineSpec], paths: Mapping[str, Path]) -> EngineSet:
    metadata, engines = {}, {}
    for graph in GRAPHS:
        metadata[graph], engines[graph] = read_engine(paths[graph], specs[graph])
    return EngineSet(dict(specs), dict(paths), metadata, engines, built=())


def _open(
    device: str, precision: str, max_prompts: int
) -> tuple[TrtApi, CudaApi, int, DecoderProfile]:
    """Check everything the backend needs, before any slow step, in the order users fix it."""
    check_precision(precision)
    profile = DecoderProfile(max_prompts=max_prompts)
    device_id = parse_device(device)
    api = TrtApi(import_tensorrt())
    cuda = CudaApi()
    cuda.require_device(device_id)
    cuda.call("cudaSetDevice", device_id)
    return api, cuda, device_id, profile


def load_cached_engines(
    models: OnnxModels,
    cache_dir: str | os.PathLike[str],
    device: str = "auto",
    precision: str = DEFAULT_PRECISION,
    max_prompts: int = DEFAULT_MAX_PROMPTS,
) -> EngineSet:
    """The cached engines of this configuration; EngineCacheError when one is unusable."""
    api, cuda, device_id, profile = _open(device, precision, max_prompts)
    specs = engine_specs(api, cuda, models, device_id, precision, profile)
    folder = engine_folder(cache_dir)
    return _read_all(specs, {g: folder / specs[g].file_name() for g in GRAPHS})


def ensure_engines(
    models: OnnxModels,
    cache_dir: str | os.PathLike[str],
    device: str = "auto",
    precision: str = DEFAULT_PRECISION,
    max_prompts: int = DEFAULT_MAX_PROMPTS,
    force_rebuild: bool = False,
    progress: bool = True,
) -> EngineSet:
    """Load the cached engines of this configuration, building (and self-checking) if needed.

    Builds hold a lock per configuration, so a second process waits and then loads what the
    first one built instead of building again.
    """
    api, cuda, device_id, profile = _open(device, precision, max_prompts)
    specs = engine_specs(api, cuda, models, device_id, precision, profile)
    folder = engine_folder(cache_dir)
    paths = {graph: folder / specs[graph].file_name() for graph in GRAPHS}
    if not force_rebuild:
        with contextlib.suppress(EngineCacheError):
            return _read_all(specs, paths)
    folder.mkdir(parents=True, exist_ok=True)
    set_key = hashlib.sha256("".join(specs[g].key for g in GRAPHS).encode()).hexdigest()
    with exclusive_lock(folder / f".build-{set_key[:16]}.lock"):
        reasons = {g: needs_rebuild(paths[g], specs[g], force_rebuild) for g in GRAPHS}
        if not any(reasons.values()):  # built by another process while this one waited
            return _read_all(specs, paths)
        reusable = {}
        for graph, reason in reasons.items():
            if reason is None:
                reusable[graph] = read_engine(paths[graph], specs[graph])
            _say(progress, f"TensorRT {graph} engine: {reason or 'valid, reused'}")
        return _build_all(api, models, specs, paths, device, profile, progress, reusable)


def _graph_level(graph: str, level: int) -> int:
    """Level 2 changes only the encoder; decoders stay as built at level 1."""
    return level if graph == "encoder" else min(level, 1)


def _build_all(
    api: TrtApi,
    models: OnnxModels,
    specs: Mapping[str, EngineSpec],
    paths: Mapping[str, Path],
    device: str,
    profile: DecoderProfile,
    progress: bool,
    reusable: Mapping[str, tuple[dict[str, Any], bytes]],
) -> EngineSet:
    """Build what is missing, self-check the set, escalate the FP32 level until it passes.

    Valid cached engines (e.g. the encoder when only the decoder profile changed) are reused
    while the level they were built at is the one needed; the set starts at the highest level
    any of them records.
    """
    from mobilesam_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mobilesam_ros.core.backends.tensorrt.self_check import SELF_CHECK_MIN_IOU, run_self_check

    precision = specs["encoder"].precision
    spec = specs["encoder"]
    _say(
        progress,
        f"building TensorRT {api.version} engines ({precision}) for {spec.gpu_name} "
        f"(compute {spec.compute_capability}); this takes minutes once, then they are cached",
    )
    started = time.perf_counter()
    reference = OnnxRuntimeBackend(models, "cpu")
    onnx_files = {
        "encoder": models.encoder,
        "decoder_single": models.decoder_single,
        "decoder_multi": models.decoder_multi,
    }
    built_by_level: dict[tuple[str, int], BuiltEngine] = {}
    level = 0
    for graph, (meta, engine) in reusable.items():
        recorded = min(max(int(meta.get("fp32_level", 0)), 0), MAX_FP32_LEVEL)
        level = max(level, recorded)
        built_by_level[(graph, _graph_level(graph, recorded))] = BuiltEngine(
            graph,
            engine,
            bool(meta.get("fp16")),
            list(meta.get("fp32_layers", [])),
            float(meta.get("build_seconds", 0.0)),
            reused=True,
        )
    history: list[dict[str, Any]] = []
    while True:
        built = {}
        for index, graph in enumerate(GRAPHS, start=1):
            graph_level = _graph_level(graph, level)
            cached = built_by_level.get((graph, graph_level))
            if cached is None:
                cached = build_engine(
                    api,
                    onnx_files[graph],
                    specs[graph],
                    graph_level,
                    progress,
                    f"[{index}/{len(GRAPHS)}]",
                )
                built_by_level[(graph, graph_level)] = cached
            built[graph] = cached
        engines = {graph: record.engine for graph, record in built.items()}
        candidate = TensorRtBackend(engines, profile, device, precision)
        try:
            result = run_self_check(candidate, reference)
        finally:
            candidate.close()
        history.append({"fp32_level": level, "iou": round(result.iou, 6)})
        _say(progress, f"self-check against ONNX Runtime FP32: {result.summary()}")
        if result.passed:
            break
        if precision == "fp32" or level >= MAX_FP32_LEVEL:
            raise BackendUnavailableError(
                f"the TensorRT engines fail the self-check (mask IoU {result.iou:.4f} < "
                f"{SELF_CHECK_MIN_IOU} against ONNX Runtime FP32) even with "
                f"{FP32_LEVELS[level] if precision == 'fp16' else 'FP32 throughout'}; "
                "nothing was cached. Use backend 'onnxruntime', or report the TensorRT version "
                "and GPU."
            )
        level += 1
        _say(
            progress,
            f"mask IoU {result.iou:.4f} is below {SELF_CHECK_MIN_IOU}: rebuilding with more "
            f"layers in FP32 (level {level}: {FP32_LEVELS[level]})",
        )
    metadata, engines = {}, {}
    for graph in GRAPHS:
        record = built[graph]
        metadata[graph] = write_engine(
            paths[graph],
            specs[graph].key,
            record.engine,
            {
                "graph": graph,
                "components": specs[graph].components(),
                "onnx_file": onnx_files[graph].name,
                "fp16": record.fp16,
                "fp32_level": level,
                "fp32_level_meaning": FP32_LEVELS[level],
                "fp32_layers": record.fp32_layers,
                "build_seconds": round(record.seconds, 1),
                "self_check_iou": round(result.iou, 6),
                "self_check_iou_single": round(result.iou_single, 6),
                "self_check_iou_multi": round(result.iou_multi, 6),
                "self_check_min_iou": SELF_CHECK_MIN_IOU,
                "self_check_history": history,
            },
        )
        engines[graph] = record.engine
    _say(
        progress,
        f"TensorRT engines built and checked in {time.perf_counter() - started:.1f} s; "
        f"cached in {paths['encoder'].parent}",
    )
    rebuilt = tuple(graph for graph in GRAPHS if not built[graph].reused)
    return EngineSet(dict(specs), dict(paths), metadata, engines, built=rebuilt)


def create_tensorrt_backend(
    checkpoint: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    device: str = "auto",
    progress: bool = True,
    precision: str = DEFAULT_PRECISION,
    max_prompts: int = DEFAULT_MAX_PROMPTS,
    force_rebuild: bool = False,
) -> TensorRtBackend:
    """Export (or find) the ONNX graphs, ensure the engines, and load them."""
    _open(device, precision, max_prompts)  # fail fast, before the export and the build
    from mobilesam_ros.core.model.export import export_onnx

    models = export_onnx(checkpoint, Path(cache_dir), progress=progress)
    engines = ensure_engines(
        models, cache_dir, device, precision, max_prompts, force_rebuild, progress
    )
    return TensorRtBackend(engines.engines, DecoderProfile(max_prompts), device, precision)
