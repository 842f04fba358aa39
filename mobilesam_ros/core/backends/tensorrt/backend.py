"""TensorRT runtime: engines, execution contexts, GPU buffers, and the `TensorRtBackend`.

Memory and streams go through cuda-python (`cuda.bindings.runtime`, or `cuda.cudart` in
releases before 12.6) rather than pycuda: NVIDIA publishes it as a pip wheel (aarch64 Jetson
included) that needs no compiler or CUDA headers, and TensorRT's own Python samples use it.
PyTorch is not needed at run time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from mobilesam_ros.core.backends.base import (
    Backend,
    DecoderInputs,
    DecoderOutputs,
    decode_in_chunks,
)
from mobilesam_ros.core.backends.tensorrt.compat import (
    CudaApi,
    TrtApi,
    import_tensorrt,
    parse_device,
)
from mobilesam_ros.core.backends.tensorrt.engine_cache import DecoderProfile
from mobilesam_ros.core.backends.tensorrt.gpu_memory import (
    EMBEDDING_SHAPE,
    DeviceEmbedding,
    EmbeddingPool,
    GpuResources,
    SharedActivations,
)
from mobilesam_ros.core.choices import DEFAULT_PRECISION
from mobilesam_ros.core.errors import BackendUnavailableError, InvalidInputError
from mobilesam_ros.core.model.constants import IMAGE_SIZE, LOW_RES_SIZE
from mobilesam_ros.core.model.export import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUT,
    ENCODER_OUTPUT,
)

if TYPE_CHECKING:
    import tensorrt as trt

_IMAGE_SHAPE = (1, 3, IMAGE_SIZE, IMAGE_SIZE)
_MAX_MASK_OUTPUTS = 3  # the multimask decoder's K


class EngineLoadError(BackendUnavailableError):
    """TensorRT could not deserialize an engine; `graph` names it."""

    def __init__(self, message: str, graph: str) -> None:
        super().__init__(message)
        self.graph = graph


class _Engine:
    """One deserialized engine with its execution context."""

    def __init__(
        self,
        api: TrtApi,
        runtime: trt.Runtime,
        engine_bytes: bytes,
        graph: str,
        names: tuple[str, ...],
    ) -> None:
        self.graph = graph
        engine = runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise EngineLoadError(
                f"{api.label} could not load the {graph} engine (see its log above)", graph
            )
        self.engine: trt.ICudaEngine | None = engine
        found = api.io_tensor_names(engine)
        if sorted(found) != sorted(names):
            raise BackendUnavailableError(
                f"the {graph} engine has tensors {found}, expected {list(names)}"
            )
        for name in found:
            if api.numpy_dtype(engine, name) != np.float32:
                raise BackendUnavailableError(
                    f"the {graph} engine's tensor {name!r} is not float32"
                )
        self.device_memory = api.engine_device_memory(engine)
        context = api.context_without_memory(engine)
        if context is None:
            raise BackendUnavailableError(f"{api.label} could not create a {graph} context")
        self.context: trt.IExecutionContext | None = context

    def memory_binder(self, api: TrtApi) -> Callable[[int, int], None]:
        """What points this engine's context at (pointer, size) of activation memory."""
        context = self._context()
        return lambda pointer, nbytes: api.bind_context_memory(context, pointer, nbytes)

    def _context(self) -> trt.IExecutionContext:
        if self.context is None:
            raise BackendUnavailableError(f"the {self.graph} engine was released (close())")
        return self.context

    def run(
        self, shapes: Mapping[str, tuple[int, ...]], addresses: Mapping[str, int], stream: int
    ) -> None:
        context = self._context()
        for name, shape in shapes.items():
            if not context.set_input_shape(name, shape):
                raise InvalidInputError(
                    f"{self.graph}: input {name} of shape {shape} is outside the engine's "
                    "optimization profile"
                )
        for name, pointer in addresses.items():
            if not context.set_tensor_address(name, pointer):
                raise BackendUnavailableError(f"{self.graph}: cannot bind tensor {name}")
        if not context.execute_async_v3(stream):
            raise BackendUnavailableError(f"TensorRT failed to run the {self.graph} engine")

    def output_shape(self, name: str) -> tuple[int, ...]:
        shape = self._context().get_tensor_shape(name)
        return tuple(int(shape[i]) for i in range(len(shape)))

    def release(self) -> None:
        self.context = None  # a context goes before its engine
        self.engine = None


class _TrtObjects:
    """Logger, runtime, engines and their shared activation block, released in the order
    TensorRT requires."""

    def __init__(self, api: TrtApi, activations: SharedActivations) -> None:
        self.logger: trt.ILogger | None = api.logger(verbose=True)
        self.runtime: trt.Runtime | None = api.trt.Runtime(self.logger)
        self.engines: list[_Engine] = []
        self.activations = activations

    def load(self, api: TrtApi, engine_bytes: bytes, graph: str, names: tuple[str, ...]) -> _Engine:
        if self.runtime is None:
            raise BackendUnavailableError("the TensorRT runtime was released (close())")
        engine = _Engine(api, self.runtime, engine_bytes, graph, names)
        self.activations.bind(engine.memory_binder(api), engine.device_memory)
        self.engines.append(engine)
        return engine

    def release(self) -> None:
        for engine in reversed(self.engines):
            engine.release()
        self.engines = []
        self.activations.release()  # after the contexts that point into it
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
        self.gpu_name = self._cuda.device_identity(self._device_id).name
        self.precision = precision
        self.profile = profile
        self._multimask_bytes = engines["decoder_multi"]  # deserialized on first use
        self._engine_sizes = {graph: len(data) for graph, data in engines.items()}
        self._resources = GpuResources(self._cuda)
        self._trt = _TrtObjects(self._api, SharedActivations(self._cuda, self._resources.stream))
        self._embeddings = EmbeddingPool(self._cuda)
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
        out = np.empty(EMBEDDING_SHAPE, dtype=np.float32)
        self._select_device()
        kind = self._cuda.device_to_host()
        self._cuda.call("cudaMemcpy", out.ctypes.data, embedding.pointer, out.nbytes, kind)
        return out

    def describe(self) -> str:
        return f"tensorrt ({self._api.label}) {self.precision} on {self.gpu_name} ({self.device})"

    def memory_report(self) -> dict[str, int]:
        """Bytes of GPU memory by use: the activation block the loaded contexts share (the
        largest context's, sized for its profile's maximum), the engines' weights as
        serialized, and this backend's own input/output buffers (device side; the same again
        is page-locked host memory)."""
        report = {"shared context activations": self._trt.activations.nbytes}
        report.update({f"{graph} engine": size for graph, size in self._engine_sizes.items()})
        report["input/output buffers"] = self._resources.device_bytes
        return report

    def close(self) -> None:
        """Free engines, GPU buffers and the stream now (otherwise when garbage-collected)."""
        self._decoders.clear()
        self._finalizer()


def _release_all(objects: _TrtObjects, resources: GpuResources, embeddings: EmbeddingPool) -> None:
    objects.release()
    resources.release()
    embeddings.close()
