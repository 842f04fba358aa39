"""TensorRT engine timings taken from outside the backend, through its public functions.

`build`: the three engines of one precision rebuilt (`force_rebuild`) on the path the node
takes (`ensure_engines`): each graph's build time as stored with its engine (graph preparation,
parse and build; on a first build the constant folding too), its FP32 level and size, the
self-check result, the wall time of the whole (builds, the FP32 escalation if any, the
self-check against ONNX Runtime FP32 on the CPU), and whether TensorRT's timing cache held
kernel timings from earlier builds (then the build is not a cold one).
`start`: a second start, in a fresh process, cut into the parts `create_tensorrt_backend`
takes: importing TensorRT, opening the GPU (the CUDA context), finding the exported graphs,
reading and checking the cached engines, the backend's own start (encoder and single-mask
decoder deserialized, contexts and buffers made); the first call of each engine against the
median of later calls (the multimask decoder's first call loads its engine); then each engine
deserialized again on its own, with its execution context, after the backend is closed.
Figures go to stdout, and with --record are appended to that file too (gpu_check.sh's summary).
PyTorch is not needed when the checkpoint's graphs are in the cache already.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TypeVar

from benchmarks.common import (
    add_model_arguments,
    benchmark_boxes,
    benchmark_frame,
    checkpoint_or_random_weights,
    median_ms,
    time_calls,
)
from mobilesam_ros.core.backends.tensorrt.compat import TrtApi, import_tensorrt
from mobilesam_ros.core.backends.tensorrt.engine_cache import (
    DEFAULT_MAX_PROMPTS,
    GRAPHS,
    EngineCacheError,
    engine_folder,
)
from mobilesam_ros.core.choices import DEFAULT_PRECISION, GPU_PRECISIONS
from mobilesam_ros.core.errors import BackendUnavailableError, MobileSamError
from mobilesam_ros.core.model.checkpoint import default_cache_dir, resolve_checkpoint

T = TypeVar("T")
_MIB = 2**20


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """`call()`'s result and its wall time in milliseconds."""
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1e3


def peak_rss_mib() -> float:
    """This process's peak resident memory (on a Jetson, memory the GPU shares)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def build(checkpoint: str, cache: Path, device: str, precision: str, max_prompts: int) -> list[str]:
    """Rebuild the engines of this configuration (force_rebuild); the figure lines."""
    from mobilesam_ros.core.backends.tensorrt.engine_set import (
        engine_specs,
        ensure_engines,
        open_gpu,
    )
    from mobilesam_ros.core.model.export import export_onnx

    target = open_gpu(device, precision, max_prompts)
    models, export_ms = timed(lambda: export_onnx(checkpoint, cache))
    # Builds share TensorRT's kernel timings per GPU: a build after another one is not cold.
    spec = engine_specs(target.api, target.gpu, models, precision, target.profile)[GRAPHS[0]]
    timing_cache = engine_folder(cache) / spec.timing_cache_name()
    timings_before = _size_kib(timing_cache)
    engines, build_ms = timed(
        lambda: ensure_engines(target, models, cache, force_rebuild=True, progress=True)
    )
    lines = [
        f"engines rebuilt, {target.api.label} {precision}, max_prompts {max_prompts}: "
        f"{build_ms / 1e3:.1f} s in all (builds, self-check against ONNX Runtime FP32 on the "
        f"CPU); ONNX graphs found or exported in {export_ms / 1e3:.1f} s; peak process memory "
        f"{peak_rss_mib():.0f} MiB"
    ]
    for graph in GRAPHS:
        meta = engines.metadata[graph]
        lines.append(
            f"  {graph}: built in {meta.get('build_seconds')} s, "
            f"{len(engines.engines[graph]) / _MIB:.1f} MiB, FP32 level {meta.get('fp32_level')}"
        )
    meta = engines.metadata[GRAPHS[0]]
    lines.append(
        f"  self-check mask IoU {meta.get('self_check_iou')} (at least "
        f"{meta.get('self_check_min_iou')}); FP32 levels tried: "
        + ", ".join(
            f"{step['fp32_level']} (IoU {step['iou']})"
            for step in meta.get("self_check_history", [])
        )
    )
    timings_after = _size_kib(timing_cache)
    if not timings_after:
        lines.append(f"  no timing cache ({target.api.label} keeps none): every kernel timed")
    elif timings_before:
        lines.append(
            f"  timing cache: {timings_before} KiB before (kernels timed by earlier builds on "
            f"this GPU not timed again), {timings_after} KiB after"
        )
    else:
        lines.append(f"  timing cache: none before (every kernel timed), {timings_after} KiB after")
    return lines


def _size_kib(path: Path) -> int:
    return path.stat().st_size >> 10 if path.is_file() else 0


def deserialize_each(api: TrtApi, engines: Mapping[str, bytes]) -> dict[str, tuple[float, float]]:
    """(deserialize ms, execution context ms) of each engine, released before the next."""
    runtime = api.trt.Runtime(api.logger(verbose=True))
    times = {}
    for graph, data in engines.items():
        engine, load_ms = timed(partial(runtime.deserialize_cuda_engine, data))
        if engine is None:
            raise BackendUnavailableError(f"{api.label} could not deserialize the {graph} engine")
        context, context_ms = timed(engine.create_execution_context)
        times[graph] = (load_ms, context_ms)
        del context, engine  # a context goes before its engine
    return times


def start(
    checkpoint: str,
    cache: Path,
    device: str,
    precision: str,
    max_prompts: int,
    boxes: int,
    iterations: int,
) -> list[str]:
    """Time a second start from the cached engines, then each engine's first call."""
    from mobilesam_ros.core.backends.base import DecoderInputs
    from mobilesam_ros.core.backends.tensorrt.backend import TensorRtBackend
    from mobilesam_ros.core.backends.tensorrt.engine_set import load_cached_engines, open_gpu
    from mobilesam_ros.core.model.export import export_onnx
    from mobilesam_ros.core.processing.preprocess import ImagePreprocessor, encode_prompts

    module, import_ms = timed(import_tensorrt)
    target, open_ms = timed(lambda: open_gpu(device, precision, max_prompts))
    models, find_ms = timed(lambda: export_onnx(checkpoint, cache, progress=False))
    try:
        engines, read_ms = timed(lambda: load_cached_engines(target, models, cache))
    except EngineCacheError as exc:
        raise MobileSamError(f"{exc}; run `engine_timings build` with the same options") from None
    backend, backend_ms = timed(
        lambda: TensorRtBackend(engines.engines, target.profile, device, precision)
    )
    steps = {
        f"import {target.api.name}": import_ms,
        "open GPU (CUDA context)": open_ms,
        "find ONNX graphs": find_ms,
        "read and check cached engines": read_ms,
        "backend start": backend_ms,
    }
    lines = [
        f"second start, {backend.describe()}: "
        + ", ".join(f"{name} {ms:.0f} ms" for name, ms in steps.items())
        + f" = {sum(steps.values()):.0f} ms"
    ]
    model_input, geometry = ImagePreprocessor()(benchmark_frame())
    inputs = DecoderInputs(*encode_prompts(geometry, benchmark_boxes(boxes), None, None))
    embedding, first_encode_ms = timed(lambda: backend.encode(model_input))
    calls: dict[str, Callable[[], object]] = {
        "decoder_single": lambda: backend.decode(embedding, inputs, False),
        "decoder_multi": lambda: backend.decode(embedding, inputs, True),
    }
    firsts = {"encoder": first_encode_ms} | {name: timed(call)[1] for name, call in calls.items()}
    calls["encoder"] = lambda: backend.encode(model_input)
    later = {
        name: median_ms(time_calls(call, iterations, warmup=0)) for name, call in calls.items()
    }
    backend.close()
    lines.append(
        f"  first call against the median of the next {iterations} ({boxes} boxes per decoder "
        "call): " + ", ".join(f"{g} {firsts[g]:.1f} / {later[g]:.1f} ms" for g in GRAPHS)
    )
    loads = deserialize_each(TrtApi(module), engines.engines)
    lines.append(
        "  each engine deserialized again on its own (+ its execution context): "
        + ", ".join(
            f"{g} {loads[g][0]:.0f} ms (+{loads[g][1]:.0f} ms, "
            f"{len(engines.engines[g]) / _MIB:.1f} MiB)"
            for g in GRAPHS
        )
        + f"; peak process memory {peak_rss_mib():.0f} MiB"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("build", "start"), help="see the module's docstring")
    add_model_arguments(parser, device="cuda")
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=GPU_PRECISIONS)
    parser.add_argument("--max-prompts", type=int, default=DEFAULT_MAX_PROMPTS)
    parser.add_argument("--boxes", type=int, default=10, help="prompts per decoder call")
    parser.add_argument("--iterations", type=int, default=20, help="later calls timed")
    parser.add_argument("--record", type=Path, help="also append the figures to this file")
    args = parser.parse_args(argv)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    try:
        checkpoint = checkpoint_or_random_weights(args.checkpoint, cache)
        resolve_checkpoint(checkpoint)  # a missing file named here, not deep in the export
        if args.phase == "build":
            lines = build(checkpoint, cache, args.device, args.precision, args.max_prompts)
        else:
            lines = start(
                checkpoint,
                cache,
                args.device,
                args.precision,
                args.max_prompts,
                args.boxes,
                args.iterations,
            )
    except MobileSamError as exc:
        print(f"engine timings ({args.phase}): {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines), flush=True)
    if args.record:
        with args.record.open("a") as record:
            record.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
