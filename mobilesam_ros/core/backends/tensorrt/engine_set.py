"""The three engines of one configuration: the GPU, the cache, the self-checked build.

`open_gpu` checks TensorRT, cuda-python and the device once, and builds and loads a
one-layer probe engine, before any slow step.
`ensure_engines` loads the cached set, or builds it under a lock per configuration: a set is
cached only after it passes the self-check against ONNX Runtime FP32; when it fails, all
three graphs are rebuilt with more in FP32, up to FP32 throughout.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilesam_ros.core.backends.tensorrt.backend import TensorRtBackend
from mobilesam_ros.core.backends.tensorrt.build import (
    BuiltEngine,
    PreparedGraphs,
    build_engine,
    build_metadata,
    onnx_files,
    prepared_graphs,
)
from mobilesam_ros.core.backends.tensorrt.compat import (
    CudaApi,
    TrtApi,
    import_tensorrt,
    parse_device,
    probe_tensorrt,
)
from mobilesam_ros.core.backends.tensorrt.engine_cache import (
    DEFAULT_WORKSPACE_MIB,
    FP32_POLICY_VERSION,
    GRAPHS,
    DecoderProfile,
    EngineCacheError,
    EngineSpec,
    GpuIdentity,
    check_precision,
    engine_folder,
    graph_profile,
    needs_rebuild,
    read_engine,
    write_engine,
)
from mobilesam_ros.core.backends.tensorrt.fp32_policy import FP32_LEVELS, MAX_FP32_LEVEL
from mobilesam_ros.core.backends.tensorrt.self_check import (
    SELF_CHECK_MIN_IOU,
    SelfCheckResult,
    compare_with_reference,
    reference_masks,
)
from mobilesam_ros.core.errors import BackendUnavailableError, InvalidInputError
from mobilesam_ros.core.files import exclusive_lock
from mobilesam_ros.core.model.export import OnnxModels
from mobilesam_ros.core.progress import say

_log = logging.getLogger(__name__)


def check_workspace(workspace_mib: int) -> int:
    if not isinstance(workspace_mib, int) or isinstance(workspace_mib, bool) or workspace_mib < 64:
        raise InvalidInputError(
            f"workspace_mib must be an integer of at least 64, got {workspace_mib!r}"
        )
    return workspace_mib


@dataclass(frozen=True)
class GpuTarget:
    """The TensorRT flavour, GPU and decoder profile that engines are built and run for.

    device: as asked for ("auto", "cuda" or "cuda:N").
    """

    api: TrtApi
    device: str
    gpu: GpuIdentity
    precision: str
    profile: DecoderProfile


def open_gpu(device: str, precision: str, max_prompts: int) -> GpuTarget:
    """Check everything the backend needs, before any slow step, in the order users fix it."""
    check_precision(precision)
    profile = DecoderProfile(max_prompts=max_prompts)
    device_id = parse_device(device)
    api = TrtApi(import_tensorrt())
    cuda = CudaApi()
    cuda.require_device(device_id)
    cuda.call("cudaSetDevice", device_id)
    probe_tensorrt(api, cuda)
    return GpuTarget(api, device, cuda.device_identity(device_id), precision, profile)


def engine_specs(
    api: TrtApi,
    gpu: GpuIdentity,
    models: OnnxModels,
    precision: str,
    profile: DecoderProfile,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
) -> dict[str, EngineSpec]:
    """Specs of the three engines."""
    from mobilesam_ros.core.model.checkpoint import file_sha256

    return {
        graph: EngineSpec(
            graph=graph,
            onnx_sha256=file_sha256(path),
            tensorrt_version=api.label,
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
            precision=precision,
            sm_count=gpu.sm_count,
            total_memory_mib=gpu.total_memory_mib,
            driver_cuda_version=gpu.driver_cuda_version,
            runtime_cuda_version=gpu.runtime_cuda_version,
            profile=graph_profile(graph, profile),
            fp32_policy_version=FP32_POLICY_VERSION,
            workspace_mib=workspace_mib,
        )
        for graph, path in onnx_files(models).items()
    }


@dataclass
class EngineSet:
    """The three engines of one configuration: paths, metadata and validated bytes."""

    specs: dict[str, EngineSpec]
    paths: dict[str, Path]
    metadata: dict[str, dict[str, Any]]
    engines: dict[str, bytes]
    built: tuple[str, ...]  # graphs built by this call (empty when all came from the cache)


@dataclass(frozen=True)
class _Configuration:
    """What one set of engines is built for, and the cache file of each engine."""

    target: GpuTarget
    specs: dict[str, EngineSpec]
    paths: dict[str, Path]

    def read_all(self) -> EngineSet:
        metadata, engines = {}, {}
        for graph in GRAPHS:
            metadata[graph], engines[graph] = read_engine(self.paths[graph], self.specs[graph])
        return EngineSet(dict(self.specs), dict(self.paths), metadata, engines, built=())


def _configuration(
    target: GpuTarget,
    models: OnnxModels,
    cache_dir: str | os.PathLike[str],
    workspace_mib: int,
) -> _Configuration:
    specs = engine_specs(
        target.api,
        target.gpu,
        models,
        target.precision,
        target.profile,
        check_workspace(workspace_mib),
    )
    folder = engine_folder(cache_dir)
    return _Configuration(target, specs, {g: folder / specs[g].file_name() for g in GRAPHS})


def load_cached_engines(
    target: GpuTarget,
    models: OnnxModels,
    cache_dir: str | os.PathLike[str],
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
) -> EngineSet:
    """The cached engines of this configuration; EngineCacheError when one is unusable."""
    return _configuration(target, models, cache_dir, workspace_mib).read_all()


def ensure_engines(
    target: GpuTarget,
    models: OnnxModels,
    cache_dir: str | os.PathLike[str],
    force_rebuild: bool = False,
    progress: bool = True,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
) -> EngineSet:
    """Load the cached engines of this configuration, building (and self-checking) if needed.

    Builds hold a lock per configuration, so a second process waits and then loads what the
    first one built instead of building again.
    """
    config = _configuration(target, models, cache_dir, workspace_mib)
    if not force_rebuild:
        with contextlib.suppress(EngineCacheError):
            return config.read_all()
    folder = engine_folder(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    set_key = hashlib.sha256("".join(config.specs[g].key for g in GRAPHS).encode()).hexdigest()
    with exclusive_lock(folder / f".build-{set_key[:16]}.lock"):
        reasons = {
            g: needs_rebuild(config.paths[g], config.specs[g], force_rebuild) for g in GRAPHS
        }
        if not any(reasons.values()):  # built by another process while this one waited
            return config.read_all()
        reusable = {}
        for graph, reason in reasons.items():
            if reason is None:
                cached = read_engine(config.paths[graph], config.specs[graph])
                reusable[graph] = BuiltEngine.from_cache(graph, *cached)
            say(_log, f"TensorRT {graph} engine: {reason or 'valid, reused'}", progress)
        graphs = prepared_graphs(models, config.specs, cache_dir)
        return _build_and_store(config, models, graphs, reusable, progress)


@dataclass(frozen=True)
class _CheckedEngines:
    """Engines that passed the self-check, at the FP32 level that got them there."""

    records: dict[str, BuiltEngine]
    level: int
    result: SelfCheckResult
    history: list[dict[str, Any]]  # FP32 level and mask IoU of each try


def _build_and_store(
    config: _Configuration,
    models: OnnxModels,
    graphs: PreparedGraphs,
    reusable: Mapping[str, BuiltEngine],
    progress: bool,
) -> EngineSet:
    """Build what is missing until the set passes its self-check, then cache all three."""
    api, encoder = config.target.api, config.specs["encoder"]
    say(
        _log,
        f"building {api.label} engines ({encoder.precision}) for "
        f"{config.target.gpu.describe()}; this takes minutes once, then they are cached",
        progress,
    )
    started = time.perf_counter()
    checked = _escalate(config, models, graphs, reusable, progress)
    result = checked.result
    self_check = {
        "self_check_iou": round(result.iou, 6),
        "self_check_iou_single": round(result.iou_single, 6),
        "self_check_iou_multi": round(result.iou_multi, 6),
        "self_check_cases": [[name, round(v, 6)] for name, v in result.iou_per_case],
        "self_check_min_iou": SELF_CHECK_MIN_IOU,
        "self_check_history": checked.history,
    }
    metadata = {}
    for graph in GRAPHS:
        spec, record = config.specs[graph], checked.records[graph]
        built = build_metadata(api, spec, graphs.sources[graph], record, checked.level)
        metadata[graph] = write_engine(
            config.paths[graph], spec.key, record.engine, {**built, **self_check}
        )
    say(
        _log,
        f"TensorRT engines built and checked in {time.perf_counter() - started:.1f} s; "
        f"cached in {config.paths['encoder'].parent}",
        progress,
    )
    engines = {graph: record.engine for graph, record in checked.records.items()}
    rebuilt = tuple(graph for graph in GRAPHS if not checked.records[graph].reused)
    return EngineSet(dict(config.specs), dict(config.paths), metadata, engines, built=rebuilt)


def _escalate(
    config: _Configuration,
    models: OnnxModels,
    graphs: PreparedGraphs,
    reusable: Mapping[str, BuiltEngine],
    progress: bool,
) -> _CheckedEngines:
    """Self-check the set at one FP32 level; while it fails, rebuild all three graphs at the
    next level, up to FP32 throughout (then BackendUnavailableError: nothing is cached).

    Valid cached engines (e.g. the encoder when only the decoder profile changed) are reused
    while the level they were built at is the one needed; the set starts at the highest level
    any of them records. The reference masks are computed once, before the first candidate
    loads, and ONNX Runtime is released then, so its memory is free for the engines.
    """
    from mobilesam_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend

    target = config.target
    by_level = {(graph, record.fp32_level): record for graph, record in reusable.items()}
    level = max((record.fp32_level for record in reusable.values()), default=0)
    reference = None
    history: list[dict[str, Any]] = []
    while True:
        records = {}
        for index, graph in enumerate(GRAPHS, start=1):
            record = by_level.get((graph, level))
            if record is None:
                spec, label = config.specs[graph], f"[{index}/{len(GRAPHS)}]"
                record = build_engine(target.api, graphs, spec, level, progress, label)
                by_level[(graph, level)] = record
            records[graph] = record
        if reference is None:
            reference = reference_masks(
                OnnxRuntimeBackend(models, "cpu"), target.profile.max_prompts
            )
            gc.collect()  # the ONNX Runtime sessions go before any engine is loaded
        engines = {graph: record.engine for graph, record in records.items()}
        candidate = TensorRtBackend(engines, target.profile, target.device, target.precision)
        try:
            result = compare_with_reference(candidate, reference)
        finally:
            candidate.close()
        history.append({"fp32_level": level, "iou": round(result.iou, 6)})
        say(_log, f"self-check against ONNX Runtime FP32: {result.summary()}", progress)
        if result.passed:
            return _CheckedEngines(records, level, result, history)
        if target.precision == "fp32" or level >= MAX_FP32_LEVEL:
            raise BackendUnavailableError(
                f"the {target.api.label} engines fail the self-check (mask IoU {result.iou:.4f} "
                f"< {SELF_CHECK_MIN_IOU} against ONNX Runtime FP32; {result.summary()}) even "
                f"with {FP32_LEVELS[level] if target.precision == 'fp16' else 'FP32 throughout'}; "
                "nothing was cached. Use backend 'onnxruntime', or report the TensorRT version "
                "and GPU."
            )
        level += 1
        say(
            _log,
            f"mask IoU {result.iou:.4f} is below {SELF_CHECK_MIN_IOU}: rebuilding with more "
            f"in FP32 (level {level}: {FP32_LEVELS[level]})",
            progress,
        )
