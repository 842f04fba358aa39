"""Time of lifting masks into 3D (`core.depth.lift_instances`) on a synthetic 640x480 RGB-D frame.

Prints the median and 90th percentile per frame over many repetitions, for full-frame masks and
for bounding-box crops (what a node holding InstanceMask rois would pass), with clean depth and
with sensor faults (holes, flying pixels, mask bleed). Not a test: figures only.

    python -m mobilesam_ros.tools.bench_depth [--instances 10] [--repeats 200]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np

from mobilesam_ros.core.depth import (
    CameraModel,
    DepthImage,
    LiftParams,
    MaskCrop,
    instances_cloud,
    lift_instances,
)
from mobilesam_ros.core.visualize import mask_box
from mobilesam_ros.tools.rgbd_scene import grid_boxes, render_scene


def _timed(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    function()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    milliseconds = np.array(samples) * 1000.0
    return float(np.median(milliseconds)), float(np.percentile(milliseconds, 90))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    params = LiftParams()
    print(f"machine: {platform.machine()} {platform.processor() or ''}; numpy {np.__version__}")
    print(f"frame 640x480, {args.instances} boxes at 1-2.5 m, {args.repeats} repetitions")
    for label, faults in (
        ("clean depth", {}),
        (
            "holes 10%, flying pixels, 3 px bleed",
            dict(holes=0.1, flying_pixels=True, mask_bleed_px=3),
        ),
    ):
        scene = render_scene(grid_boxes(args.instances, args.seed), seed=args.seed, **faults)
        camera = CameraModel.from_k(scene.k, scene.width, scene.height)
        size = (scene.height, scene.width)
        crops = []
        for mask in scene.masks:
            x0, y0, x1, y1 = mask_box(mask)  # type: ignore[misc]
            crops.append(MaskCrop(mask[y0 : y1 + 1, x0 : x1 + 1], x0, y0))
        pixels = sum(int(mask.sum()) for mask in scene.masks)
        print(f"\n{label}: masks cover {pixels} pixels ({pixels / (size[0] * size[1]):.0%})")
        for encoding, depth in (
            ("32FC1", DepthImage.from_metres(scene.depth)),
            ("16UC1", DepthImage.from_millimetres(scene.depth_millimetres())),
        ):
            result = lift_instances(crops, depth, camera, params, size)
            points = sum(i.num_points for i in result.instances if i is not None)
            for name, masks in (("full masks", scene.masks), ("crops", crops)):
                median, p90 = _timed(
                    lambda masks=masks, depth=depth: lift_instances(
                        masks, depth, camera, params, size
                    ),
                    args.repeats,
                )
                print(
                    f"  {encoding} {name:10s}: median {median:6.2f} ms, p90 {p90:6.2f} ms "
                    f"({points} points)"
                )
            for stride in (1, 4):
                median, _ = _timed(
                    lambda stride=stride, result=result: instances_cloud(
                        result.instances, stride, scene.color
                    ),
                    args.repeats,
                )
                print(f"  {encoding} cloud with rgb, stride {stride}: median {median:6.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
