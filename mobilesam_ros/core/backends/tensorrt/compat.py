"""Version shim: which TensorRT and cuda-python are installed, and how each is spelled.

Supported (anything else is refused with the reason):

- TensorRT 8.6 (JetPack 6.0): weakly typed builds; FP16 through builder flags and layers
  pinned to FP32.
- TensorRT 10.x (JetPack 6.1/6.2, JetPack 7, desktops) and 11.x: strongly typed builds; FP16
  through a mixed-precision ONNX graph whose FP32 islands are explicit casts (11.x removed
  the weakly typed precision API; 10.x has both, the strongly typed one is used).
- TensorRT-RTX 1.x (module `tensorrt_rtx_bindings`, a pip wheel for RTX desktop GPUs):
  strongly typed only; used when full TensorRT is absent.
- cuda-python 12.x with drivers older than 580 (JetPack 6 ships the 540 series), 13.x with
  580 or newer: cuda-bindings 13 refuses older drivers with cudaErrorInsufficientDriver.

TensorRT 8.5 (JetPack 5) is refused: its ONNX parser cannot import LayerNormalization, which
the opset-17 graphs use. `tensorrt` and cuda-python are imported inside functions only, so
this module imports on machines that have neither.
"""

from __future__ import annotations

import importlib
import re
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np

from mobilesam_ros.core.backends.tensorrt.engine_cache import GpuIdentity
from mobilesam_ros.core.backends.tensorrt.fp32_policy import LayerInfo
from mobilesam_ros.core.choices import cuda_index
from mobilesam_ros.core.errors import BackendUnavailableError, InvalidInputError

if TYPE_CHECKING:  # the type checker reads these from tensorrt-stubs (TensorRT 10.x API)
    import tensorrt as trt

SUPPORTED_TENSORRT = "TensorRT 8.6, 10.x or 11.x, or TensorRT-RTX 1.x"
# Module names tried in this order: full TensorRT first, TensorRT-RTX where it is absent.
TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")
CUDA_PYTHON_HINT = (
    "cuda-python 12.x where the NVIDIA driver is older than 580 (JetPack 6: "
    "pip install -r requirements/jetpack6.txt, which pins 12.6), "
    "cuda-python 13.x with driver 580 or newer (pip install 'cuda-python>=13')"
)
_FIRST_CUDA13_DRIVER = 13000  # cudaDriverGetVersion of the first driver (580) with CUDA 13


def parse_version(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise BackendUnavailableError(f"unrecognized TensorRT version {version!r}")
    return int(match[1]), int(match[2])


def import_tensorrt() -> Any:
    """The first TensorRT flavour that imports: `tensorrt`, else TensorRT-RTX."""
    problems = []
    for name in TENSORRT_MODULES:
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        if getattr(module, "__version__", None) is None:
            # e.g. only tensorrt-stubs installed: a folder of .pyi files imports as a namespace
            problems.append(f"{name}: no library behind it (type stubs only?)")
            continue
        return module
    raise BackendUnavailableError(
        f"backend 'tensorrt': TensorRT is not importable here ({SUPPORTED_TENSORRT}: JetPack "
        "ships TensorRT on Jetson, `pip install tensorrt` on desktops, or "
        "`pip install 'mobilesam-ros[tensorrt-rtx]'` for RTX GPUs); tried " + "; ".join(problems)
    )


def _is_rtx(module: Any) -> bool:
    return "rtx" in str(getattr(module, "__name__", "")).lower()


class TrtApi:
    """The TensorRT calls this package makes, spelled right for each supported flavour."""

    def __init__(self, trt_module: Any) -> None:
        if TYPE_CHECKING:
            self.trt = trt  # the type checker reads every TensorRT name from the stubs
        else:
            self.trt = trt_module
        self.version = str(trt_module.__version__)
        self.rtx = _is_rtx(trt_module)
        self.major, self.minor = parse_version(self.version)
        self.name = "TensorRT-RTX" if self.rtx else "TensorRT"
        supported = (
            self.major == 1
            if self.rtx
            else ((self.major, self.minor) == (8, 6) or self.major in (10, 11))
        )
        if not supported:
            why = ""
            if not self.rtx and (self.major, self.minor) < (8, 6):
                why = (
                    ": its ONNX parser cannot import LayerNormalization, which the graphs use "
                    "(JetPack 5 ships 8.5; use backend 'onnxruntime' there)"
                )
            raise BackendUnavailableError(
                f"{self.name} {self.version} is not supported by backend 'tensorrt'{why}; "
                f"supported: {SUPPORTED_TENSORRT}"
            )

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def strongly_typed(self) -> bool:
        """Strongly typed networks: tensor types come from the ONNX graph's casts."""
        return self.rtx or self.major >= 10

    def network_flags(self) -> int:
        flags = self.trt.NetworkDefinitionCreationFlag
        if self.strongly_typed:
            return 1 << int(flags.STRONGLY_TYPED)
        return 1 << int(flags.EXPLICIT_BATCH)

    def logger(self, verbose: bool) -> trt.ILogger:
        severity = self.trt.Logger.WARNING if verbose else self.trt.Logger.ERROR
        logger: trt.ILogger = self.trt.Logger(severity)
        return logger

    def configure(self, config: trt.IBuilderConfig, workspace_mib: int, fp16: bool) -> None:
        """Workspace, TF32 off, and on weakly typed builds the FP16 flags."""
        flags = self.trt.BuilderFlag
        config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        # TF32 is on by default: FP32 engines and FP32 islands would compute matrix products
        # in TF32 on Ampere and newer (Orin included).
        config.clear_flag(flags.TF32)
        if fp16 and not self.strongly_typed:
            config.set_flag(flags.FP16)
            config.set_flag(flags.OBEY_PRECISION_CONSTRAINTS)

    def layer_info(self, layer: trt.ILayer) -> LayerInfo:
        kind = getattr(layer.type, "name", None) or str(layer.type)
        float_types = (self.trt.float32, self.trt.float16)
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        floating = bool(outputs) and all(
            t.dtype in float_types and not getattr(t, "is_shape_tensor", False) for t in outputs
        )
        return LayerInfo(str(layer.name), kind.rsplit(".", 1)[-1], floating)

    def pin_fp32(self, layer: trt.ILayer) -> None:
        """Weakly typed builds only: keep this layer and its outputs in FP32."""
        if self.strongly_typed:
            raise BackendUnavailableError(
                f"{self.label} builds strongly typed networks; layer precisions come from the "
                "ONNX graph, not from per-layer settings"
            )
        layer.precision = self.trt.float32
        for index in range(layer.num_outputs):
            layer.set_output_type(index, self.trt.float32)

    def context_without_memory(self, engine: trt.ICudaEngine) -> trt.IExecutionContext | None:
        """An execution context whose activation memory the caller provides."""
        strategies = getattr(self.trt, "ExecutionContextAllocationStrategy", None)
        if strategies is not None:  # 10.x, 11.x, RTX
            return engine.create_execution_context(strategies.USER_MANAGED)
        return engine.create_execution_context_without_device_memory()  # 8.6

    def bind_context_memory(
        self, context: trt.IExecutionContext, pointer: int, nbytes: int
    ) -> None:
        """Point a context at activation memory of `nbytes` bytes."""
        if hasattr(context, "set_device_memory"):  # 10.1 and newer: the size is checked
            context.set_device_memory(pointer, nbytes)
        else:
            context.device_memory = pointer  # type: ignore[attr-defined]  # 8.6 only

    def numpy_dtype(self, engine: trt.ICudaEngine, name: str) -> np.dtype:
        return np.dtype(self.trt.nptype(engine.get_tensor_dtype(name)))

    def io_tensor_names(self, engine: trt.ICudaEngine) -> list[str]:
        return [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def engine_device_memory(self, engine: trt.ICudaEngine) -> int:
        """Bytes of activation memory one execution context of this engine takes."""
        if hasattr(engine, "device_memory_size_v2"):  # 10.x, 11.x, RTX
            return int(engine.device_memory_size_v2)
        return int(engine.device_memory_size)


# ---------------------------------------------------------------------------------------------
# cuda-python


def cuda_python_version() -> str:
    for distribution in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


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
                f"({CUDA_PYTHON_HINT}); import failed with: {exc}"
            ) from exc
    return runtime


def native_handle(cuda_object: Any) -> int:
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

    def error_name(self, error: Any) -> str:
        name = self.rt.cudaGetErrorName(error)[1]
        return name.decode() if isinstance(name, bytes) else str(name)

    def call(self, function: str, *args: Any) -> Any:
        result = getattr(self.rt, function)(*args)
        error, values = result[0], result[1:]
        if error != self.rt.cudaError_t.cudaSuccess:
            raise BackendUnavailableError(f"CUDA {function} failed: {self.error_name(error)}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def driver_cuda_version(self) -> int:
        """CUDA version the driver supports (12060 for 12.6); 0 when no driver is loaded."""
        try:
            return int(self.call("cudaDriverGetVersion"))
        except BackendUnavailableError:
            return 0

    def explain(self, error_name: str) -> str:
        """The CUDA error with what it means for this backend and how to fix it."""
        message = f"CUDA reports {error_name}"
        if error_name != "cudaErrorInsufficientDriver":
            return message
        driver = self.driver_cuda_version()
        if driver == 0:
            return f"{message}: no NVIDIA driver is loaded on this machine"
        supports = f"{driver // 1000}.{driver % 1000 // 10}"
        bindings = cuda_python_version()
        if driver < _FIRST_CUDA13_DRIVER and bindings.startswith("13"):
            return (
                f"{message}: cuda-python {bindings} needs driver 580 or newer (CUDA 13), this "
                f"driver supports CUDA {supports}; install {CUDA_PYTHON_HINT}"
            )
        return f"{message}: the driver supports CUDA {supports}, cuda-python is {bindings}"

    def device_count(self) -> int:
        """Number of visible CUDA devices: 0 for cudaErrorNoDevice, any other error raised."""
        result = self.rt.cudaGetDeviceCount()
        if result[0] == self.rt.cudaError_t.cudaSuccess:
            return int(result[1])
        name = self.error_name(result[0])
        if name == "cudaErrorNoDevice":
            return 0
        raise BackendUnavailableError(f"backend 'tensorrt': {self.explain(name)}")

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

    def device_identity(self, device_id: int) -> GpuIdentity:
        """Name, compute capability, SM count, memory and CUDA versions of a device."""
        props = self.call("cudaGetDeviceProperties", device_id)
        name = props.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return GpuIdentity(
            str(name).strip(),
            f"{props.major}.{props.minor}",
            sm_count=int(props.multiProcessorCount),
            total_memory_mib=int(props.totalGlobalMem) >> 20,
            driver_cuda_version=self.driver_cuda_version(),
            runtime_cuda_version=int(self.call("cudaRuntimeGetVersion")),
        )

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


def probe_tensorrt(api: TrtApi, cuda: CudaApi) -> None:
    """Build and load a one-layer engine, in well under a second.

    What importing TensorRT and counting GPUs cannot tell: TensorRT 11 from pip (built for
    CUDA 13) imports on a driver older than 580 and fails only in its builder, which `auto`
    would otherwise meet after exporting the graphs. Raises BackendUnavailableError saying
    which step failed.
    """
    driver = cuda.driver_cuda_version()
    supports = (
        f"the driver supports CUDA {driver // 1000}.{driver % 1000 // 10}"
        if driver
        else "CUDA reports no driver version"
    )
    hint = ""
    if api.major >= 11 and not api.rtx and driver < _FIRST_CUDA13_DRIVER:
        hint = (
            f"; {api.label} is built for CUDA 13 (driver 580 or newer): with this driver "
            "install tensorrt-cu12 (pip install tensorrt-cu12) or upgrade the driver"
        )
    step = "create a builder"
    try:
        logger = api.logger(verbose=False)
        builder = api.trt.Builder(logger)
        step = "build a one-layer probe engine"
        network = builder.create_network(api.network_flags())
        probe = network.add_input("probe", api.trt.float32, (1, 8))
        network.mark_output(network.add_identity(probe).get_output(0))
        config = builder.create_builder_config()
        api.configure(config, workspace_mib=64, fp16=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("the builder returned no engine")
        step = "load the probe engine"
        if api.trt.Runtime(logger).deserialize_cuda_engine(serialized) is None:
            raise RuntimeError("deserialization returned no engine")
    except Exception as exc:
        raise BackendUnavailableError(
            f"{api.label} cannot {step} ({exc}); {supports}{hint}"
        ) from exc


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here (import, version, cuda-python, driver, GPU), or None.

    Quick checks only; whether an engine builds and loads is probed when the backend opens
    the GPU (`engine_set.open_gpu`), before the graphs are exported.
    """
    try:
        TrtApi(import_tensorrt())
        cuda = CudaApi()
        if cuda.device_count() == 0:
            return "backend 'tensorrt' needs an NVIDIA GPU, and CUDA reports none here"
    except BackendUnavailableError as exc:
        return str(exc)
    except Exception as exc:  # e.g. a broken install; auto must still pick another backend
        return f"backend 'tensorrt': {type(exc).__name__}: {exc}"
    return None
