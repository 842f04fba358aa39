"""`mobilesam-ros process-bags`: a folder of recordings, one per worker, on Ray.

Each worker is a Ray actor that loads one Segmenter and then runs `process_bag` on one
recording after another; a recording that fails is reported and the others go on. Without
`--ray-address` Ray starts a local instance sized to the machine (its cores and GPUs); with it,
the work goes to that cluster (every node needs this package and the model's cache). Ctrl-C asks
every worker to stop after its frame at hand: each output is then a valid recording that
`--resume` continues.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilesam_ros.core.errors import BackendUnavailableError, InvalidInputError
from mobilesam_ros.tools.bag.process import BagJob, BagReport


@dataclass(frozen=True)
class FleetItem:
    input: Path
    output: Path
    coco: Path | None


def find_recordings(folder: Path) -> list[Path]:
    """rosbag2 folders (with metadata.yaml) and bare .mcap files directly in `folder`."""
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder")
    found = [
        p
        for p in sorted(folder.iterdir())
        if (p.is_dir() and (p / "metadata.yaml").is_file()) or p.suffix == ".mcap"
    ]
    if not found:
        raise InvalidInputError(f"{folder} holds no recording (rosbag2 folders or .mcap files)")
    return found


def plan(folder: Path, output_folder: Path, coco: bool) -> list[FleetItem]:
    """One output recording (and COCO file) per input, named after it."""
    items = []
    for recording in find_recordings(folder):
        name = recording.stem if recording.is_file() else recording.name
        items.append(
            FleetItem(
                recording,
                output_folder / name,
                output_folder / f"{name}.coco.json" if coco else None,
            )
        )
    return items


class BagWorker:
    """One Ray actor: one Segmenter, recordings one after another (runs in the worker)."""

    def __init__(self, model: dict[str, Any], job: BagJob) -> None:
        from mobilesam_ros.core.segmenter import Segmenter
        from mobilesam_ros.tools.bag.process import StopRequest

        self._segmenter = Segmenter(**model)
        self._job = job
        self._stop = StopRequest()

    def run(self, item: FleetItem, resume: bool) -> BagReport | str:
        """The recording's report, or why it failed."""
        from ray.experimental.tqdm_ray import tqdm

        from mobilesam_ros.tools.bag.coco import CocoWriter
        from mobilesam_ros.tools.bag.process import process_bag

        try:
            coco = CocoWriter(item.coco, resume=resume) if item.coco is not None else None
            return process_bag(
                item.input,
                item.output,
                self._job,
                self._segmenter,
                resume=resume and item.output.exists(),
                coco=coco,
                progress=lambda total: tqdm(total=total, desc=item.input.name, unit="frame"),
                stop=self._stop,
            )
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._stop.requested.set()


def default_workers(device: str) -> int:
    """The Ray instance's GPUs when the model runs on them, else one worker per 4 of its CPUs
    (a CPU backend uses several)."""
    import ray

    resources = ray.cluster_resources()
    if device.startswith("cuda"):
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1)) // 4)


def process_bags(
    items: list[FleetItem],
    job: BagJob,
    model: dict[str, Any],
    workers: int | None = None,
    ray_address: str | None = None,
    resume: bool = False,
) -> list[tuple[FleetItem, BagReport | str]]:
    """Every item on Ray; returns each item's report or error, in the order they finished."""
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError("process-bags needs Ray: pip install 'ray>=2.9'") from None
    job.check()
    ray.init(address=ray_address, configure_logging=False)
    try:
        count = min(workers or default_workers(model["device"]), len(items))
        on_gpu = model["device"].startswith("cuda")
        options: dict[str, Any] = {"max_concurrency": 2}  # run() and stop() at once
        if on_gpu:
            options["num_gpus"] = 1
        else:
            options["num_cpus"] = max(1, int(ray.cluster_resources().get("CPU", 1)) // count)
        share = "1 GPU" if on_gpu else f"{options['num_cpus']} CPUs"
        print(f"{len(items)} recordings on {count} workers ({share} each)", file=sys.stderr)
        actor = ray.remote(BagWorker).options(**options)
        return _run_all([actor.remote(model, job) for _ in range(count)], items, resume)
    finally:
        ray.shutdown()


def _run_all(
    workers: list[Any], items: list[FleetItem], resume: bool
) -> list[tuple[FleetItem, BagReport | str]]:
    """Hand the items to the workers as they come free; a worker that dies takes no more."""
    import ray

    waiting = deque(items)
    running: dict[Any, tuple[Any, FleetItem]] = {}
    results: list[tuple[FleetItem, BagReport | str]] = []

    def start(worker: Any) -> None:
        item = waiting.popleft()
        running[worker.run.remote(item, resume)] = (worker, item)

    for worker in workers[: len(waiting)]:
        start(worker)
    try:
        while running:
            (future,), _ = ray.wait(list(running), num_returns=1)
            worker, item = running.pop(future)
            try:
                outcome = ray.get(future)
            except ray.exceptions.RayError as exc:  # the worker died (e.g. its model failed)
                results.append((item, f"worker failed: {exc}"))
                continue
            results.append((item, outcome))
            _say(item, outcome)
            if waiting:
                start(worker)
        if waiting:  # every worker died
            results += [(item, "not run: no worker left") for item in waiting]
    except KeyboardInterrupt:
        print("stopping: every worker ends its frame at hand", file=sys.stderr, flush=True)
        for worker in workers:
            worker.stop.remote()
        for future, (_, item) in running.items():
            results.append((item, ray.get(future)))
    return results


def _say(item: FleetItem, outcome: BagReport | str) -> None:
    lines = (
        outcome.lines() if isinstance(outcome, BagReport) else [f"{item.input}: FAILED {outcome}"]
    )
    print("\n".join(lines), file=sys.stderr, flush=True)
