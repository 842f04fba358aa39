"""Engine building: prepared ONNX graphs, precision policy, builder settings, cache, self-check.

Every graph is constant-folded before TensorRT parses it. FP16 builds on strongly typed
TensorRT (10.x, 11.x, TensorRT-RTX) parse a mixed-precision graph whose FP32 islands are
explicit casts; on TensorRT 8.6 (weakly typed) they parse the folded FP32 graph and pin the
FP32 policy's layers. TF32 is off in every build, so FP32 means FP32. A set of engines is
cached only after it passes the self-check against ONNX Runtime FP32; when it fails, all
three graphs are rebuilt with more in FP32, up to FP32 throughout.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobilesam_ros.core.backends.tensorrt.compat import (
    CudaApi,
    TrtApi,
    import_tensorrt,
    parse_device,
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
    check_precision,
    fp32_layer_names,
    graph_profile,
    graph_runs_fp32,
    needs_rebuild,
    read_engine,
    write_engine,
)
from mobilesam_ros.core.backends.tensorrt.graph_prep import (
    fold_constants,
    mixed_fp16_graph,
    residual_sums,
)
from mobilesam_ros.core.choices import DEFAULT_PRECISION
from mobilesam_ros.core.errors import BackendUnavailableError, InvalidInputError
from mobilesam_ros.core.files import exclusive_lock, write_atomically, write_bytes_atomically
from mobilesam_ros.core.model.export import OnnxModels
from mobilesam_ros.core.progress import say

if TYPE_CHECKING:
    import tensorrt as trt

_log = logging.getLogger(__name__)
_HEARTBEAT_SECONDS = 30.0


def _say(enabled: bool, message: str) -> None:
    say(_log, message, enabled)


def onnx_files(models: OnnxModels) -> dict[str, Path]:
    return {graph: Path(getattr(models, graph)) for graph in GRAPHS}


# ---------------------------------------------------------------------------------------------
# Graphs and networks


class PreparedGraphs:
    """The graphs TensorRT parses, written once per ONNX file and variant into `folder`."""

    def __init__(self, folder: Path, sources: Mapping[str, Path], hashes: Mapping[str, str]):
        self.folder = folder
        self.sources = dict(sources)
        self.hashes = dict(hashes)

    def _path(self, graph: str, variant: str) -> Path:
        return (
            self.folder / f"{graph}-{self.hashes[graph][:16]}-v{FP32_POLICY_VERSION}-{variant}.onnx"
        )

    def folded(self, graph: str) -> Path:
        path = self._path(graph, "folded")
        if not path.exists():
            # A temporary file of its own: builds of other configurations may prepare it too.
            write_atomically(path, lambda partial: fold_constants(self.sources[graph], partial))
        return path

    def for_build(
        self, api: TrtApi, graph: str, precision: str, level: int
    ) -> tuple[Path, list[str]]:
        """(graph to parse, names of nodes in FP32 islands) for a strongly typed build."""
        folded = self.folded(graph)
        if graph_runs_fp32(graph, precision, level) or not api.strongly_typed:
            return folded, []
        path = self._path(graph, f"fp16-level{level}")
        islands = path.with_suffix(".fp32-nodes.json")
        if path.exists() and islands.exists():
            return path, list(json.loads(islands.read_text()))
        kept: list[str] = []

        def convert(partial: Path) -> None:
            kept.extend(mixed_fp16_graph(folded, partial, graph, level)[1])

        write_atomically(path, convert)
        write_bytes_atomically(islands, json.dumps(kept).encode())
        return path, kept


@dataclass
class ParsedNetwork:
    """A parsed network with the objects that must outlive it."""

    builder: trt.Builder
    network: trt.INetworkDefinition
    parser: trt.OnnxParser
    logger: trt.ILogger


def parse_network(api: TrtApi, onnx_path: Path, verbose: bool) -> ParsedNetwork:
    """Parse an ONNX graph into a TensorRT network (strongly typed where the version is)."""
    logger = api.logger(verbose)
    builder = api.trt.Builder(logger)
    network = builder.create_network(api.network_flags())
    parser = api.trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(f"{api.label} could not parse {onnx_path}: {errors}")
    return ParsedNetwork(builder, network, parser, logger)


def layer_precisions(
    api: TrtApi, network: trt.INetworkDefinition
) -> list[tuple[str, str, tuple[str, ...]]]:
    """(layer name, layer kind, output type names) of every layer of a parsed network."""
    result = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        info = api.layer_info(layer)
        result.append((info.name, info.kind, api.output_types(layer)))
    return result


# ---------------------------------------------------------------------------------------------
# One engine


@dataclass
class BuiltEngine:
    """One freshly built engine and what went into it."""

    graph: str
    engine: bytes
    fp16: bool
    fp32_layers: list[str]
    seconds: float
    reused: bool = False  # taken from the cache, not built now
    parsed_graph: str = ""  # the prepared ONNX file TensorRT parsed


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
    api: TrtApi,
    graphs: PreparedGraphs,
    spec: EngineSpec,
    level: int,
    progress: bool,
    label: str,
) -> BuiltEngine:
    """Prepare and parse the graph, apply the precision policy, build a serialized engine."""
    started = time.perf_counter()
    fp16 = not graph_runs_fp32(spec.graph, spec.precision, level)
    onnx_path, islands = graphs.for_build(api, spec.graph, spec.precision, level)
    parsed = parse_network(api, onnx_path, progress)
    network = parsed.network
    pinned = islands
    if fp16 and not api.strongly_typed:
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        infos = [api.layer_info(layer) for layer in layers]
        pinned = fp32_layer_names(infos, level, spec.graph)
        # The residual sums feeding LayerNorm, as in the mixed-precision graphs.
        pinned += [name for name in residual_sums(onnx_path) if name not in set(pinned)]
        pinned_set = set(pinned)
        for layer, info in zip(layers, infos, strict=True):
            if info.name in pinned_set:
                api.pin_fp32(layer)
    config = parsed.builder.create_builder_config()
    api.configure(config, spec.workspace_mib, fp16)
    if spec.profile:
        profile = parsed.builder.create_optimization_profile()
        for shape_range in spec.profile:
            low, opt, high = shape_range.min, shape_range.opt, shape_range.max
            # The bindings turn tuples into Dims; the stubs only declare Dims.
            profile.set_shape(shape_range.name, low, opt, high)  # type: ignore[arg-type]
        config.add_optimization_profile(profile)
    mode = f"fp16, {len(pinned)} nodes in FP32" if fp16 else "fp32"
    _say(progress, f"{label} building {spec.graph} engine with {api.label} ({mode}) ...")
    with _heartbeat(progress, spec.graph):
        serialized = parsed.builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(
            f"{api.label} failed to build the {spec.graph} engine from {onnx_path} (see its log)"
        )
    engine = bytes(memoryview(serialized))
    seconds = time.perf_counter() - started
    _say(progress, f"{label} {spec.graph} built in {seconds:.1f} s ({len(engine) / 2**20:.1f} MiB)")
    return BuiltEngine(spec.graph, engine, fp16, pinned, seconds, parsed_graph=str(onnx_path))


def build_metadata(
    api: TrtApi, spec: EngineSpec, source: Path, record: BuiltEngine, level: int
) -> dict[str, Any]:
    """What the cache stores beside an engine, apart from its self-check results."""
    return {
        "graph": spec.graph,
        "components": spec.components(),
        "onnx_file": source.name,
        "builder": api.label,
        "strongly_typed": api.strongly_typed,
        "tf32": False,
        "fp16": record.fp16,
        "fp32_level": level,
        "fp32_level_meaning": FP32_LEVELS[level],
        "fp32_layers": record.fp32_layers,
        "build_seconds": round(record.seconds, 1),
        "parsed_graph": record.parsed_graph,
    }


# ---------------------------------------------------------------------------------------------
# The set of three, cached


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
    gpu: tuple[str, str],
    models: OnnxModels,
    precision: str,
    profile: DecoderProfile,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
) -> dict[str, EngineSpec]:
    """Specs of the three engines; gpu: (name, compute capability)."""
    from mobilesam_ros.core.model.checkpoint import file_sha256

    return {
        graph: EngineSpec(
            graph=graph,
            onnx_sha256=file_sha256(path),
            tensorrt_version=api.label,
            gpu_name=gpu[0],
            compute_capability=gpu[1],
            precision=precision,
            profile=graph_profile(graph, profile),
            fp32_policy_version=FP32_POLICY_VERSION,
            workspace_mib=workspace_mib,
        )
        for graph, path in onnx_files(models).items()
    }


def engine_folder(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / "tensorrt"


def prepared_graphs(
    models: OnnxModels, specs: Mapping[str, EngineSpec], cache_dir: str | os.PathLike[str]
) -> PreparedGraphs:
    hashes = {graph: spec.onnx_sha256 for graph, spec in specs.items()}
    return PreparedGraphs(engine_folder(cache_dir) / "graphs", onnx_files(models), hashes)


def check_workspace(workspace_mib: int) -> int:
    if not isinstance(workspace_mib, int) or isinstance(workspace_mib, bool) or workspace_mib < 64:
        raise InvalidInputError(
            f"workspace_mib must be an integer of at least 64, got {workspace_mib!r}"
        )
    return workspace_mib


def _read_all(specs: Mapping[str, EngineSpec], paths: Mapping[str, Path]) -> EngineSet:
    metadata, engines = {}, {}
    for graph in GRAPHS:
        metadata[graph], engines[graph] = read_engine(paths[graph], specs[graph])
    return EngineSet(dict(specs), dict(paths), metadata, engines, built=())


def open_gpu(
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
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
) -> EngineSet:
    """The cached engines of this configuration; EngineCacheError when one is unusable."""
    api, cuda, device_id, profile = open_gpu(device, precision, max_prompts)
    gpu = cuda.device_identity(device_id)
    specs = engine_specs(api, gpu, models, precision, profile, check_workspace(workspace_mib))
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
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
) -> EngineSet:
    """Load the cached engines of this configuration, building (and self-checking) if needed.

    Builds hold a lock per configuration, so a second process waits and then loads what the
    first one built instead of building again.
    """
    api, cuda, device_id, profile = open_gpu(device, precision, max_prompts)
    gpu = cuda.device_identity(device_id)
    specs = engine_specs(api, gpu, models, precision, profile, check_workspace(workspace_mib))
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
        graphs = prepared_graphs(models, specs, cache_dir)
        return _build_all(api, models, graphs, specs, paths, device, profile, progress, reusable)


def _build_all(
    api: TrtApi,
    models: OnnxModels,
    graphs: PreparedGraphs,
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
    any of them records. The reference masks are computed once, before the first candidate
    loads, and ONNX Runtime is released then, so its memory is free for the engines.
    """
    from mobilesam_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mobilesam_ros.core.backends.tensorrt.runtime import TensorRtBackend
    from mobilesam_ros.core.backends.tensorrt.self_check import (
        SELF_CHECK_MIN_IOU,
        compare_with_reference,
        reference_masks,
    )

    precision = specs["encoder"].precision
    spec = specs["encoder"]
    _say(
        progress,
        f"building {api.label} engines ({precision}) for {spec.gpu_name} "
        f"(compute {spec.compute_capability}); this takes minutes once, then they are cached",
    )
    started = time.perf_counter()
    reference = None
    built_by_level: dict[tuple[str, int], BuiltEngine] = {}
    level = 0
    for graph, (meta, engine) in reusable.items():
        recorded = min(max(int(meta.get("fp32_level", 0)), 0), MAX_FP32_LEVEL)
        level = max(level, recorded)
        built_by_level[(graph, recorded)] = BuiltEngine(
            graph,
            engine,
            bool(meta.get("fp16")),
            list(meta.get("fp32_layers", [])),
            float(meta.get("build_seconds", 0.0)),
            reused=True,
            parsed_graph=str(meta.get("parsed_graph", "")),
        )
    history: list[dict[str, Any]] = []
    while True:
        built = {}
        for index, graph in enumerate(GRAPHS, start=1):
            record = built_by_level.get((graph, level))
            if record is None:
                label = f"[{index}/{len(GRAPHS)}]"
                record = build_engine(api, graphs, specs[graph], level, progress, label)
                built_by_level[(graph, level)] = record
            built[graph] = record
        engines = {graph: record.engine for graph, record in built.items()}
        if reference is None:
            reference = reference_masks(OnnxRuntimeBackend(models, "cpu"), profile.max_prompts)
            gc.collect()  # the ONNX Runtime sessions go before any engine is loaded
        candidate = TensorRtBackend(engines, profile, device, precision)
        try:
            result = compare_with_reference(candidate, reference)
        finally:
            candidate.close()
        history.append({"fp32_level": level, "iou": round(result.iou, 6)})
        _say(progress, f"self-check against ONNX Runtime FP32: {result.summary()}")
        if result.passed:
            break
        if precision == "fp32" or level >= MAX_FP32_LEVEL:
            raise BackendUnavailableError(
                f"the {api.label} engines fail the self-check (mask IoU {result.iou:.4f} < "
                f"{SELF_CHECK_MIN_IOU} against ONNX Runtime FP32; {result.summary()}) even "
                f"with {FP32_LEVELS[level] if precision == 'fp16' else 'FP32 throughout'}; "
                "nothing was cached. Use backend 'onnxruntime', or report the TensorRT version "
                "and GPU."
            )
        level += 1
        _say(
            progress,
            f"mask IoU {result.iou:.4f} is below {SELF_CHECK_MIN_IOU}: rebuilding with more "
            f"in FP32 (level {level}: {FP32_LEVELS[level]})",
        )
    metadata, stored = {}, {}
    for graph in GRAPHS:
        record = built[graph]
        metadata[graph] = write_engine(
            paths[graph],
            specs[graph].key,
            record.engine,
            {
                **build_metadata(api, specs[graph], graphs.sources[graph], record, level),
                "self_check_iou": round(result.iou, 6),
                "self_check_iou_single": round(result.iou_single, 6),
                "self_check_iou_multi": round(result.iou_multi, 6),
                "self_check_cases": [[name, round(v, 6)] for name, v in result.iou_per_case],
                "self_check_min_iou": SELF_CHECK_MIN_IOU,
                "self_check_history": history,
            },
        )
        stored[graph] = record.engine
    _say(
        progress,
        f"TensorRT engines built and checked in {time.perf_counter() - started:.1f} s; "
        f"cached in {paths['encoder'].parent}",
    )
    rebuilt = tuple(graph for graph in GRAPHS if not built[graph].reused)
    return EngineSet(dict(specs), dict(paths), metadata, stored, built=rebuilt)
