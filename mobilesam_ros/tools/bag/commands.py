"""The CLI's process-bag and process-bags commands (registered by `mobilesam_ros.cli`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mobilesam_ros.core.segmenter import Segmenter

# The exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
STOPPED = 130


def register(
    commands: Any,
    add_model_arguments: Callable[[argparse.ArgumentParser], None],
    segmenter: Callable[[argparse.Namespace], Segmenter],
) -> None:
    from mobilesam_ros.tools.bag.process import add_arguments

    one = commands.add_parser(
        "process-bag",
        help="run the node's pipeline on every frame of a recording; write its outputs (MCAP)",
    )
    one.add_argument("input", help="a rosbag2 folder (sqlite3 or MCAP) or an .mcap file")
    one.add_argument("--output", required=True, help="the output recording's folder")
    one.add_argument("--resume", action="store_true", help="continue a stopped --output")
    one.add_argument("--coco", help="also write COCO instance annotations to this JSON file")
    one.add_argument("--coco-images", help="write the annotated frames there as JPEG files")
    add_arguments(one)
    add_model_arguments(one)
    one.set_defaults(run=lambda args: _process_bag(args, segmenter))

    many = commands.add_parser(
        "process-bags",
        help="process-bag for every recording of a folder, one per worker, on Ray",
    )
    many.add_argument("input", help="a folder of rosbag2 folders or .mcap files")
    many.add_argument("--output", required=True, help="folder for one output per recording")
    many.add_argument("--resume", action="store_true", help="continue stopped outputs")
    many.add_argument("--coco", action="store_true", help="also write <name>.coco.json each")
    many.add_argument("--workers", type=int, help="default: GPUs, else one per 4 cores")
    many.add_argument("--ray-address", help="a Ray cluster (default: a local instance)")
    add_arguments(many)
    add_model_arguments(many)
    many.set_defaults(run=_process_bags)


def _process_bag(args: argparse.Namespace, make_segmenter: Callable[..., Segmenter]) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from mobilesam_ros.tools.bag.coco import CocoWriter
    from mobilesam_ros.tools.bag.process import StopRequest, job_from_arguments, process_bag

    job = job_from_arguments(args)
    job.check()
    coco = None
    if args.coco:
        images = Path(args.coco_images) if args.coco_images else None
        coco = CocoWriter(Path(args.coco), images, resume=args.resume)
    print("loading the model ...", file=sys.stderr, flush=True)
    segmenter = make_segmenter(args)
    print(f"segmenting with {segmenter.backend.describe()}", file=sys.stderr, flush=True)

    def bar(total: int | None) -> Any:
        return tqdm(total=total, unit="frame", desc=Path(args.input).name, file=sys.stderr)

    with StopRequest().installed() as stop, logging_redirect_tqdm():
        report = process_bag(
            Path(args.input), Path(args.output), job, segmenter, args.resume, coco, bar, stop
        )
    print("\n".join(report.lines()))
    return 0 if report.complete else STOPPED


def _process_bags(args: argparse.Namespace) -> int:
    from mobilesam_ros.tools.bag.fleet import plan, process_bags
    from mobilesam_ros.tools.bag.process import BagReport, job_from_arguments

    job = job_from_arguments(args)
    items = plan(Path(args.input), Path(args.output), args.coco)
    model = {
        "checkpoint": args.checkpoint,
        "backend": args.backend,
        "cache_dir": args.cache_dir,
        "device": args.device,
        "precision": args.precision,
    }
    outcomes = process_bags(items, job, model, args.workers, args.ray_address, args.resume)
    failed = [item for item, outcome in outcomes if not isinstance(outcome, BagReport)]
    stopped = [o for _, o in outcomes if isinstance(o, BagReport) and not o.complete]
    print(
        f"{len(outcomes) - len(failed) - len(stopped)} recordings done, {len(stopped)} stopped, "
        f"{len(failed)} failed" + "".join(f"\n  failed: {item.input}" for item in failed)
    )
    if failed:
        return 1
    return STOPPED if stopped else 0
