"""Building one engine: the prepared ONNX graph, the parsed network, builder settings.

Every graph is constant-folded before TensorRT parses it. FP16 builds on strongly typed
TensorRT (10.x, 11.x, TensorRT-RTX) parse a mixed-precision graph whose FP32 islands are
explicit casts; on TensorRT 8.6 (weakly typed) they parse the folded FP32 graph and pin the
FP32 policy's layers. TF32 is off in every build, so FP32 means FP32. `engine_set` builds
the three graphs together and escalates the FP32 level until they pass the self-check.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mobilesam_ros.core.backends.tensorrt.compat import TrtApi
from mobilesam_ros.core.backends.tensorrt.engine_cache import (
    FP32_POLICY_VERSION,
    GRAPHS,
    EngineSpec,
    engine_folder,
)
from mobilesam_ros.core.backends.tensorrt.fp32_policy import (
    FP32_LEVELS,
    MAX_FP32_LEVEL,
    fp32_layer_names,
    graph_runs_fp32,
)
from mobilesam_ros.core.backends.tensorrt.graph_prep import (
    fold_constants,
    mixed_fp16_graph,
    topology_fp32_nodes_of_file,
)
from mobilesam_ros.core.errors import BackendUnavailableError
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


def prepared_graphs(
    models: OnnxModels, specs: Mapping[str, EngineSpec], cache_dir: str | os.PathLike[str]
) -> PreparedGraphs:
    hashes = {graph: spec.onnx_sha256 for graph, spec in specs.items()}
    return PreparedGraphs(engine_folder(cache_dir) / "graphs", onnx_files(models), hashes)


class TimingCache:
    """TensorRT's measured kernel timings, kept in a file per TensorRT version and GPU.

    Every build reads it and writes it back, so an escalation rebuild, the other precision or
    another profile re-times only kernels not seen before. TensorRT-RTX has none (its timing
    cache calls are no-ops), and a file TensorRT cannot read only costs the timings again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def attach(self, api: TrtApi, config: trt.IBuilderConfig) -> bool:
        """Give the builder config the stored timings; False where there is no timing cache."""
        if api.rtx:
            return False
        try:
            stored = self.path.read_bytes()
        except OSError:
            stored = b""
        cache = config.create_timing_cache(stored)
        if cache is None:  # unreadable: start empty
            cache = config.create_timing_cache(b"")
        return bool(config.set_timing_cache(cache, ignore_mismatch=False))

    def save(self, config: trt.IBuilderConfig) -> None:
        """Store the timings the build has added (whole file, replaced under a lock)."""
        cache = config.get_timing_cache()
        if cache is None:
            return
        data = bytes(memoryview(cache.serialize()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(f"{self.path}.lock"):
            write_bytes_atomically(self.path, data)


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


# ---------------------------------------------------------------------------------------------
# One engine


@dataclass
class BuiltEngine:
    """One engine, built now or taken from the cache, and what went into it."""

    graph: str
    engine: bytes
    fp16: bool
    fp32_layers: list[str]
    seconds: float
    reused: bool = False  # taken from the cache, not built now
    parsed_graph: str = ""  # the prepared ONNX file TensorRT parsed
    fp32_level: int = 0  # the escalation level it was built at

    @classmethod
    def from_cache(cls, graph: str, metadata: Mapping[str, Any], engine: bytes) -> BuiltEngine:
        """A valid cached engine, as a record of the level it was built at."""
        return cls(
            graph,
            engine,
            bool(metadata.get("fp16")),
            list(metadata.get("fp32_layers", [])),
            float(metadata.get("build_seconds", 0.0)),
            reused=True,
            parsed_graph=str(metadata.get("parsed_graph", "")),
            fp32_level=min(max(int(metadata.get("fp32_level", 0)), 0), MAX_FP32_LEVEL),
        )


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
        # Residual sums feeding LayerNorm and the Fourier features, as in the mixed graphs.
        pinned_set = set(pinned)
        pinned += [n for n in topology_fp32_nodes_of_file(onnx_path) if n not in pinned_set]
        pinned_set = set(pinned)
        for layer, info in zip(layers, infos, strict=True):
            if info.name in pinned_set:
                api.pin_fp32(layer)
    config = parsed.builder.create_builder_config()
    api.configure(config, spec.workspace_mib, fp16)
    timings = TimingCache(graphs.folder.parent / spec.timing_cache_name())  # engine folder
    timed = timings.attach(api, config)
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
    if timed:
        timings.save(config)
    seconds = time.perf_counter() - started
    _say(progress, f"{label} {spec.graph} built in {seconds:.1f} s ({len(engine) / 2**20:.1f} MiB)")
    return BuiltEngine(
        spec.graph, engine, fp16, pinned, seconds, parsed_graph=str(onnx_path), fp32_level=level
    )


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
