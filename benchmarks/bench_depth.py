"""Time of lifting masks into 3D (`core.depth.lift_instances`) on a synthetic 640x480 RGB-D frame.

Prints, per frame, the median and least wall time and the mean CPU time of this process (on a
machine shared with other work the CPU time and the least wall time are the fairer figures), for
full-frame masks and for bounding-box crops, with clean depth and with sensor faults (holes,
flying pixels, mask bleed), and the time to build the instance cloud. Not a test: figures only.

    python -m benchmarks.bench_depth [--instances 10] [--repeats 200]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from mobilesam_ros.core.depth import CameraModel, DepthImage, instances_cloud, lift_instances
from mobilesam_ros.core.processing.postprocess import MaskCrop
from mobilesam_ros.core.settings import DepthSettings
from mobilesam_ros.core.visualize import mask_box

# The synthetic scenes are the tests' (test/rgbd_scenes.py): neither is installed, so the test
# folder is put on the path, as pytest's `pythonpath` does for the tests.
sys.path.append(str(Path(__file__).resolve().parents[1] / "test"))
from rgbd_scenes import grid_boxes, render_scene

FAULTS = {"holes": 0.1, "flying_pixels": True, "mask_bleed_px": 3}


def _timed(function: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median and least wall milliseconds of one call; mean CPU milliseconds per call.

    The least wall time is the call least disturbed by other processes.

    CPU time is taken over all repetitions together: the clock can advance in scheduler ticks.
    """
    function()  # warm-up
    wall = []
    cpu_start = time.process_time()
    for _ in range(repeats):
        wall_start = time.perf_counter()
        function()
        wall.append(time.perf_counter() - wall_start)
    cpu = (time.process_time() - cpu_start) / repeats
    return float(np.median(wall)) * 1000.0, float(np.min(wall)) * 1000.0, cpu * 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    params = DepthSettings()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}; "
        f"numpy {np.__version__}, OpenCV {cv2.__version__}"
    )
    print(f"frame 640x480, {args.instances} boxes at 1-2.5 m, {args.repeats} repetitions")
    scenes = (
        ("clean depth", {}),
        ("holes 10%, flying pixels, 3 px bleed", FAULTS),
    )
    for label, faults in scenes:
        scene = render_scene(grid_boxes(args.instances, args.seed), seed=args.seed, **faults)
        camera = CameraModel.from_k(scene.k, scene.width, scene.height)
        size = (scene.height, scene.width)
        crops = []
        for mask in scene.masks:
            x0, y0, x1, y1 = mask_box(mask)  # type: ignore[misc]
            crops.append(MaskCrop(x0, y0, mask[y0 : y1 + 1, x0 : x1 + 1], mask.shape))
        pixels = sum(int(mask.sum()) for mask in scene.masks)
        print(f"\n{label}: masks cover {pixels} pixels ({pixels / (size[0] * size[1]):.0%})")
        for encoding, depth in (
            ("32FC1", DepthImage.from_metres(scene.depth)),
            ("16UC1", DepthImage.from_millimetres(scene.depth_millimetres())),
        ):
            result = lift_instances(crops, depth, camera, params, size)
            points = sum(i.num_points for i in result.instances if i is not None)
            for name, masks in (("full masks", scene.masks), ("crops", crops)):
                wall, least, cpu = _timed(
                    functools.partial(lift_instances, masks, depth, camera, params, size),
                    args.repeats,
                )
                print(
                    f"  lift, {encoding}, {name:10s}: wall median {wall:6.2f} ms, least "
                    f"{least:6.2f} ms; CPU {cpu:6.2f} ms ({points} points)"
                )
        for stride in (1, 4):
            wall, least, cpu = _timed(
                functools.partial(instances_cloud, result.instances, stride, scene.color),
                args.repeats,
            )
            print(
                f"  cloud with rgb, stride {stride}: wall median {wall:6.2f} ms, least "
                f"{least:6.2f} ms; CPU {cpu:6.2f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
