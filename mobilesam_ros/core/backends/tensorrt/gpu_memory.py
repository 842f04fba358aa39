"""GPU memory of the TensorRT backend: buffers, page-locked host arrays, the stream, the
pool of image embeddings, and the one activation block the execution contexts share."""

from __future__ import annotations

import contextlib
import ctypes
import weakref
from collections.abc import Callable

import numpy as np

from mobilesam_ros.core.backends.tensorrt.compat import CudaApi, native_handle
from mobilesam_ros.core.errors import BackendUnavailableError
from mobilesam_ros.core.model.constants import EMBEDDING_CHANNELS, EMBEDDING_SIZE

EMBEDDING_SHAPE = (1, EMBEDDING_CHANNELS, EMBEDDING_SIZE, EMBEDDING_SIZE)


class GpuResources:
    """Device and pinned host allocations plus one stream, freed together."""

    def __init__(self, cuda: CudaApi) -> None:
        self.cuda = cuda
        self.device: list[int] = []
        self.device_bytes = 0
        self.host: list[int] = []
        self.stream = cuda.call("cudaStreamCreate")
        self.stream_handle = native_handle(self.stream)

    def device_buffer(self, nbytes: int) -> int:
        pointer = int(self.cuda.call("cudaMalloc", nbytes))
        self.device.append(pointer)
        self.device_bytes += nbytes
        return pointer

    def host_array(self, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """A numpy array in page-locked memory (what makes cudaMemcpyAsync asynchronous)."""
        count = int(np.prod(shape))
        nbytes = count * np.dtype(dtype).itemsize
        pointer = int(self.cuda.call("cudaMallocHost", nbytes))
        self.host.append(pointer)
        raw = (ctypes.c_byte * nbytes).from_address(pointer)
        return np.frombuffer(memoryview(raw), dtype=dtype, count=count).reshape(shape)

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

    def __init__(self, pointer: int, pool: EmbeddingPool) -> None:
        self.pointer = pointer
        self.pool = pool


class EmbeddingPool:
    """Embedding buffers reused across frames: callers may keep several embeddings alive."""

    def __init__(self, cuda: CudaApi) -> None:
        self._cuda = cuda
        self._nbytes = int(np.prod(EMBEDDING_SHAPE)) * 4
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


class SharedActivations:
    """One device block for the activations of every execution context.

    The encoder and the decoders run in turn on one stream, each call synchronized before the
    next, so one block the size of the largest context serves all (TensorRT would otherwise
    give each context its own, sized for its profile's maximum). A context loaded later that
    needs more (the multimask decoder) gets a larger block, and every context is moved to it.
    """

    def __init__(self, cuda: CudaApi, stream: object) -> None:
        self._cuda = cuda
        self._stream = stream
        self.pointer = 0
        self.nbytes = 0
        self._bindings: list[tuple[Callable[[int, int], None], int]] = []

    def bind(self, bind_context: Callable[[int, int], None], needed: int) -> None:
        """Point a context at the block (bind_context(pointer, size)), growing it if needed."""
        self._bindings.append((bind_context, needed))
        if needed > self.nbytes:
            if self.pointer:  # freed once the stream is done with it
                self._cuda.call("cudaStreamSynchronize", self._stream)
                self._cuda.call("cudaFree", self.pointer)
                self.pointer, self.nbytes = 0, 0
            self.pointer = int(self._cuda.call("cudaMalloc", needed))
            self.nbytes = needed
            for bind_other, _ in self._bindings[:-1]:
                bind_other(self.pointer, self.nbytes)
        bind_context(self.pointer, self.nbytes)

    def release(self) -> None:
        if self.pointer:
            with contextlib.suppress(BackendUnavailableError):
                self._cuda.call("cudaFree", self.pointer)
        self.pointer, self.nbytes, self._bindings = 0, 0, []
