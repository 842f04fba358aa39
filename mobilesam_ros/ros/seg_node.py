"""The segmentation node: images and prompts in, one mask per prompt out, on the exact frame.

Inputs, outputs and /diagnostics exist from the first second; the model loads in the
background (first start: download and export), and inputs received meanwhile are counted.
The work itself is the ROS-free stream pipeline's (`core/stream/pipeline.py`), wired by
`runtime.SegmentationRuntime`.
"""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node

from mobilesam_ros.ros.parameters import NODE_NAME
from mobilesam_ros.ros.process import run
from mobilesam_ros.ros.runtime import SegmentationRuntime
from mobilesam_ros.ros.segment_service import EXECUTOR_THREADS


class SegmentationNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.runtime = SegmentationRuntime(self)
        self.runtime.create_outputs()
        self.runtime.start()
        # A model that cannot load ends the process (exit code 2, the reason in the log).
        self.runtime.load_model_in_background(
            on_failure=lambda: rclpy.try_shutdown(context=self.context)
        )


def main(args: list[str] | None = None) -> int:
    # Threads for the segment service's waiting calls beside the subscriptions.
    return run(
        SegmentationNode,
        lambda node: node.runtime,
        args,
        executor_factory=lambda: MultiThreadedExecutor(num_threads=EXECUTOR_THREADS),
    )


if __name__ == "__main__":
    sys.exit(main())
