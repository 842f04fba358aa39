"""`mobilesam-ros`: export the graphs, segment an image, build and verify TensorRT engines,
evaluate tracking, process recordings."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mobilesam_ros.core import BackendUnavailableError, InvalidInputError, MobileSamError, Segmenter
from mobilesam_ros.core.choices import BACKENDS, DEFAULT_PRECISION, PRECISIONS, check_device
from mobilesam_ros.tools.bag.commands import register as register_bag_commands

if TYPE_CHECKING:
    from mobilesam_ros.core.model.export import OnnxModels


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        help="path of mobile_sam.pt (default: download the official file once into the cache)",
    )
    parser.add_argument("--cache-dir", help="cache folder (default: $XDG_CACHE_HOME/mobilesam_ros)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument(
        "--device",
        default="auto",
        type=_device,
        help="auto, cpu, cuda[:N] (an NVIDIA GPU) or gpu (an Intel GPU, with OpenVINO)",
    )
    parser.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=PRECISIONS,
        help="fp16 on NVIDIA GPUs (FP32 on CPUs); bf16 with OpenVINO on CPUs with AMX or "
        "AVX-512 BF16",
    )


def _segmenter(args: argparse.Namespace) -> Segmenter:
    return Segmenter(
        args.checkpoint, args.backend, args.cache_dir, args.device, precision=args.precision
    )


def read_rgb(source: str) -> np.ndarray:
    """Read an image file, or `skimage:NAME` for one of scikit-image's sample photos, as RGB."""
    import cv2

    if source.startswith("skimage:"):
        from skimage import data

        name = source.partition(":")[2]
        loader = getattr(data, name, None)
        if loader is None:
            raise MobileSamError(f"scikit-image has no sample photo {name!r}")
        image = np.asarray(loader())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        return np.ascontiguousarray(image[..., :3].astype(np.uint8))
    bgr = cv2.imread(source, cv2.IMREAD_COLOR)
    if bgr is None:
        raise MobileSamError(f"cannot read image {source!r}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _cmd_export(args: argparse.Namespace) -> int:
    from mobilesam_ros.core.model.checkpoint import default_cache_dir, resolve_checkpoint
    from mobilesam_ros.core.model.export import export_onnx

    cache = args.cache_dir or default_cache_dir()
    checkpoint = resolve_checkpoint(args.checkpoint, cache)
    models = export_onnx(checkpoint, cache, force=args.force)
    for path in (models.encoder, models.decoder_single, models.decoder_multi):
        print(path)
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    import cv2

    from mobilesam_ros.core.visualize import MaskCrop, draw_label_overlay, label_image_from_crops

    rgb = read_rgb(args.image)
    boxes = np.array(args.box, dtype=np.float64).reshape(-1, 4) if args.box else None
    point_list = [(x, y, 1) for x, y in args.point or []] + [
        (x, y, 0) for x, y in args.background or []
    ]
    points = labels = None
    if point_list:
        array = np.array(point_list, dtype=np.float64)
        points, labels = array[None, :, :2], array[None, :, 2]
        if boxes is not None and len(boxes) > 1:
            raise MobileSamError("points refine one box; give at most one --box with --point")
    if boxes is None and points is None:
        raise MobileSamError("give at least one --box or --point")
    print("[1/3] loading model ...", file=sys.stderr, flush=True)
    segmenter = _segmenter(args)
    print(f"[2/3] segmenting with {segmenter.backend.describe()} ...", file=sys.stderr, flush=True)
    result = segmenter.segment(rgb, boxes=boxes, points=points, point_labels=labels)
    t = segmenter.timings
    print(
        f"      pre-process {t.preprocess_ms:.1f} ms, encode {t.encode_ms:.1f} ms, "
        f"decode {t.decode_ms:.1f} ms, post-process {t.postprocess_ms:.1f} ms",
        file=sys.stderr,
    )
    print("[3/3] writing images ...", file=sys.stderr, flush=True)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(
        args.image.partition(":")[2] if args.image.startswith("skimage:") else args.image
    ).stem
    mask_path = out_dir / f"{stem}_mask.png"
    overlay_path = out_dir / f"{stem}_overlay.png"
    # The node's drawing: the label image from each mask's crop, the overlay from the labels.
    crops = [MaskCrop.from_mask(mask) for mask in result.masks]
    labels_img = label_image_from_crops(crops, result.scores, rgb.shape[:2])
    # Label i + 1 per prompt; scaled so a plain image viewer shows the instances.
    scale = max(1, 255 // max(1, len(result)))
    cv2.imwrite(str(mask_path), (labels_img * scale).astype(np.uint8))
    captions = [f"{i}: iou {s:.2f}" for i, s in enumerate(result.scores)]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    overlay = draw_label_overlay(
        bgr, labels_img, boxes, captions, mask_boxes=[crop.box for crop in crops], out=bgr
    )
    cv2.imwrite(str(overlay_path), overlay)
    for i, (mask, score) in enumerate(zip(result.masks, result.scores, strict=True)):
        print(f"prompt {i}: {int(mask.sum())} pixels, predicted IoU {score:.3f}")
    print(f"wrote {mask_path} and {overlay_path}")
    return 0


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesam_ros.core.backends.tensorrt.engine_cache import (
        DEFAULT_MAX_PROMPTS,
        DEFAULT_WORKSPACE_MIB,
    )
    from mobilesam_ros.core.choices import GPU_PRECISIONS

    parser.add_argument(
        "--checkpoint",
        help="path of mobile_sam.pt (default: download the official file once into the cache)",
    )
    parser.add_argument("--cache-dir", help="cache folder (default: $XDG_CACHE_HOME/mobilesam_ros)")
    parser.add_argument("--device", default="auto", type=_device, help="auto, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=GPU_PRECISIONS,
        help="fp16 keeps the layers that lose accuracy in FP32; fp32 builds everything in FP32",
    )
    parser.add_argument(
        "--max-prompts",
        type=int,
        default=DEFAULT_MAX_PROMPTS,
        help="most prompts per decoder call (the decoder's optimization profile is 1 to this)",
    )
    parser.add_argument(
        "--workspace-mib",
        type=int,
        default=DEFAULT_WORKSPACE_MIB,
        help="the TensorRT builder's scratch memory limit in MiB (part of the cache key)",
    )


def _engine_inputs(args: argparse.Namespace) -> tuple[Path, OnnxModels]:
    """Cache folder and ONNX graphs (exported once per checkpoint)."""
    from mobilesam_ros.core.backends.tensorrt.engine_cache import DecoderProfile
    from mobilesam_ros.core.model.checkpoint import default_cache_dir, resolve_checkpoint
    from mobilesam_ros.core.model.export import export_onnx

    DecoderProfile(args.max_prompts)  # a bad --max-prompts fails before the export
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    checkpoint = resolve_checkpoint(args.checkpoint, cache)
    return cache, export_onnx(checkpoint, cache)


def _print_trtexec(
    models: OnnxModels,
    cache: Path,
    args: argparse.Namespace,
    pins: dict[str, tuple[bool, list[str]]],
    note: str,
    parsed: dict[str, str] | None = None,
) -> None:
    """The trtexec command of each graph; pins: graph -> (FP16 on, layers pinned to FP32);
    parsed: graph -> the prepared graph a strongly typed build parsed (then no pins)."""
    from mobilesam_ros.core.backends.tensorrt.engine_cache import DecoderProfile, graph_profile
    from mobilesam_ros.core.backends.tensorrt.trtexec import trtexec_command

    profile = DecoderProfile(args.max_prompts)
    print(f"equivalent trtexec commands ({note}):")
    for graph, (fp16, layers) in pins.items():
        prepared = (parsed or {}).get(graph)
        print(f"# {graph}")
        print(
            trtexec_command(
                prepared or getattr(models, graph),
                cache / "tensorrt" / "trtexec" / f"{graph}-{args.precision}.engine",
                fp16=fp16,
                profile=graph_profile(graph, profile),
                fp32_layers=layers,
                workspace_mib=args.workspace_mib,
                strongly_typed=bool(prepared),
            )
        )


def _planned_pins(models: OnnxModels, precision: str) -> dict[str, tuple[bool, list[str]]]:
    """What a first build (FP32 level 0) pins, read from the ONNX graphs without TensorRT."""
    from mobilesam_ros.core.backends.tensorrt.engine_cache import GRAPHS
    from mobilesam_ros.core.backends.tensorrt.fp32_policy import (
        graph_runs_fp32,
        planned_fp32_layers,
    )

    pins = {}
    for graph in GRAPHS:
        layers = planned_fp32_layers(getattr(models, graph), graph, precision)
        if layers is None:
            print(
                f"note: without the onnx package the {graph} command pins no layers",
                file=sys.stderr,
            )
        pins[graph] = (not graph_runs_fp32(graph, precision, 0), layers or [])
    return pins


def _cmd_build_engine(args: argparse.Namespace) -> int:
    from mobilesam_ros.core.backends.tensorrt.engine_cache import GRAPHS

    cache, models = _engine_inputs(args)
    try:
        from mobilesam_ros.core.backends.tensorrt.engine_set import ensure_engines, open_gpu

        engines = ensure_engines(
            open_gpu(args.device, args.precision, args.max_prompts),
            models,
            cache,
            force_rebuild=args.force,
            workspace_mib=args.workspace_mib,
        )
    except BackendUnavailableError:
        # No TensorRT or no GPU here: still show how the engines would be built.
        note = (
            "not run here; TensorRT 8.6 style, weakly typed; trtexec writes bare engines "
            "without the cache header"
        )
        _print_trtexec(models, cache, args, _planned_pins(models, args.precision), note)
        raise
    for graph in GRAPHS:
        meta = engines.metadata[graph]
        print(
            f"{graph}: {engines.paths[graph]} ({'built' if graph in engines.built else 'cached'}, "
            f"{meta['engine_size'] / 2**20:.1f} MiB, FP32 level {meta.get('fp32_level')}, "
            f"{len(meta.get('fp32_layers', []))} layers pinned to FP32, self-check mask IoU "
            f"{meta.get('self_check_iou')}, build {meta.get('build_seconds')} s)"
        )
    pins = {g: (bool(m.get("fp16")), m.get("fp32_layers", [])) for g, m in engines.metadata.items()}
    parsed = {
        g: str(m["parsed_graph"])
        for g, m in engines.metadata.items()
        if m.get("strongly_typed") and m.get("parsed_graph")
    }
    note = "trtexec writes bare engines without the cache header"
    _print_trtexec(models, cache, args, pins, note, parsed)
    return 0


def _cmd_verify_engine(args: argparse.Namespace) -> int:
    from mobilesam_ros.core.backends.onnxruntime_backend import OnnxRuntimeBackend
    from mobilesam_ros.core.backends.tensorrt.backend import TensorRtBackend
    from mobilesam_ros.core.backends.tensorrt.engine_cache import GRAPHS, EngineCacheError
    from mobilesam_ros.core.backends.tensorrt.engine_set import load_cached_engines, open_gpu
    from mobilesam_ros.core.backends.tensorrt.self_check import run_self_check

    cache, models = _engine_inputs(args)
    target = open_gpu(args.device, args.precision, args.max_prompts)
    try:
        engines = load_cached_engines(target, models, cache, args.workspace_mib)
    except EngineCacheError as exc:
        raise MobileSamError(
            f"{exc}; build it first with `mobilesam-ros build-engine` and the same options"
        ) from None
    for graph in GRAPHS:
        meta = engines.metadata[graph]
        print(
            f"{graph}: {engines.paths[graph]} (created {meta.get('created')}, FP32 level "
            f"{meta.get('fp32_level')}, recorded self-check mask IoU {meta.get('self_check_iou')})"
        )
    backend = TensorRtBackend(engines.engines, target.profile, args.device, args.precision)
    print(f"running the self-check with {backend.describe()} ...", file=sys.stderr, flush=True)
    result = run_self_check(
        backend, OnnxRuntimeBackend(models, "cpu"), max_prompts=args.max_prompts
    )
    print(f"self-check against ONNX Runtime FP32: {result.summary()}")
    # After the self-check both decoders are loaded: every context is counted.
    for use, size in backend.memory_report().items():
        print(f"GPU memory, {use}: {size / 2**20:.1f} MiB")
    return 0 if result.passed else 1


def _cmd_eval_tracking(args: argparse.Namespace) -> int:
    from mobilesam_ros.tools.tracking_eval import (
        evaluate_tracking,
        folder_sequence,
        simulated_sequence,
    )

    if bool(args.images) != bool(args.boxes):
        raise MobileSamError("--images and --boxes go together")
    segmenter = _segmenter(args)
    if args.images:
        frames = folder_sequence(Path(args.images), Path(args.boxes))
        source = args.images
    else:
        frames = simulated_sequence(args.frames, args.objects)
        source = f"simulated camera over the astronaut photo, {args.frames} frames"
    print(
        f"evaluating tracking on {source}; detections every {args.detector_every} frames",
        file=sys.stderr,
    )
    report = evaluate_tracking(segmenter, frames, args.detector_every)
    for line in report.lines():
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilesam-ros", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="export (or find cached) ONNX graphs")
    _add_model_arguments(export)
    export.add_argument("--force", action="store_true", help="export again even if cached")
    export.set_defaults(run=_cmd_export)

    segment = commands.add_parser("segment", help="segment an image, write mask and overlay PNGs")
    _add_model_arguments(segment)
    segment.add_argument("image", help="image file, or skimage:NAME for a scikit-image photo")
    segment.add_argument(
        "--box",
        type=float,
        nargs=4,
        action="append",
        metavar=("X0", "Y0", "X1", "Y1"),
        help="box prompt in pixels (repeat for more prompts)",
    )
    segment.add_argument(
        "--point",
        type=float,
        nargs=2,
        action="append",
        metavar=("X", "Y"),
        help="foreground point; all points form one prompt (with the box, if one is given)",
    )
    segment.add_argument(
        "--background",
        type=float,
        nargs=2,
        action="append",
        metavar=("X", "Y"),
        help="background point of that prompt",
    )
    segment.add_argument("--output-dir", default="out", help="where to write the PNGs")
    segment.set_defaults(run=_cmd_segment)

    build_engine = commands.add_parser(
        "build-engine",
        help="build (or find cached) TensorRT engines; prints the equivalent trtexec commands",
    )
    _add_engine_arguments(build_engine)
    build_engine.add_argument("--force", action="store_true", help="rebuild even if cached")
    build_engine.set_defaults(run=_cmd_build_engine)

    verify_engine = commands.add_parser(
        "verify-engine",
        help="self-check the cached TensorRT engines against ONNX Runtime FP32 (mask IoU)",
    )
    _add_engine_arguments(verify_engine)
    verify_engine.set_defaults(run=_cmd_verify_engine)

    eval_tracking = commands.add_parser(
        "eval-tracking",
        help="score tracked masks against per-frame detector-prompted masks (use real weights)",
    )
    _add_model_arguments(eval_tracking)
    eval_tracking.add_argument("--images", help="folder of frames (default: simulated camera)")
    eval_tracking.add_argument(
        "--boxes", help='JSON with boxes per frame: {"frame.jpg": {"id": [x0, y0, x1, y1]}}'
    )
    eval_tracking.add_argument("--frames", type=int, default=60, help="simulated frames")
    eval_tracking.add_argument("--objects", type=int, default=5, help="simulated objects")
    eval_tracking.add_argument(
        "--detector-every", type=int, default=10, help="frames between detections (30 Hz / 3 Hz)"
    )
    eval_tracking.set_defaults(run=_cmd_eval_tracking)

    register_bag_commands(commands, _add_model_arguments, _segmenter)
    return parser


def _device(value: str) -> str:
    try:
        return check_device(value)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        code = args.run(args)
    except MobileSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
