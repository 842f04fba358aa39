"""The managed segmentation node, for systems orchestrated like nav2.

Construction: parameters declared (`ros2 param` works before configure) and /diagnostics
running, reporting the lifecycle state. configure: load the model (and build engines), create
the outputs as lifecycle publishers; activate: subscriptions and the worker threads, outputs
published; deactivate: subscriptions and threads removed, nothing published (the model stays
loaded); cleanup: outputs destroyed, model released; shutdown: everything.

Runs on a multi-threaded executor, so /diagnostics keeps reporting while configure loads.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from mobilesam_ros.core import MobileSamError
from mobilesam_ros.ros.parameters import NODE_NAME
from mobilesam_ros.ros.process import run
from mobilesam_ros.ros.runtime import SegmentationRuntime
from mobilesam_ros.ros.segment_service import EXECUTOR_THREADS


class SegmentationLifecycleNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.runtime = SegmentationRuntime(self)
        self.runtime.lifecycle_state = "unconfigured"
        self._active = False

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.lifecycle_state = "configuring"
        try:
            self.runtime.load_model()
        except MobileSamError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.runtime.lifecycle_state = "unconfigured"
            return TransitionCallbackReturn.FAILURE
        self.runtime.create_outputs()
        self.runtime.lifecycle_state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.start()
        self._active = True
        self.runtime.lifecycle_state = "active"
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.destroy_outputs()
        self.runtime.unload_model()
        self.runtime.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._deactivate():
            self.runtime.destroy_outputs()
        self.runtime.unload_model()
        self.runtime.lifecycle_state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> bool:
        """Stop inputs and threads; False when an inference was still running."""
        finished = True
        if self._active:
            self._active = False
            finished = self.runtime.stop()
            if not finished:
                self.get_logger().warning("an inference was still running at deactivation")
        self.runtime.lifecycle_state = "inactive"
        return finished


def main(args: list[str] | None = None) -> int:
    return run(
        SegmentationLifecycleNode,
        lambda node: node.runtime,
        args,
        executor_factory=lambda: MultiThreadedExecutor(num_threads=EXECUTOR_THREADS),
    )


if __name__ == "__main__":
    sys.exit(main())
