"""The managed segmentation node, for systems orchestrated like nav2.

configure: declare and check parameters, load the model (and build engines); activate: inputs,
outputs and the worker threads; deactivate: remove them again (the model stays loaded);
cleanup: release the model; shutdown: everything. /diagnostics runs from configure on.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from mobilesam_ros.core import MobileSamError
from mobilesam_ros.ros.parameters import NODE_NAME
from mobilesam_ros.ros.process import run
from mobilesam_ros.ros.runtime import SegmentationRuntime


class SegmentationLifecycleNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.runtime: SegmentationRuntime | None = None
        self._active = False

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            if self.runtime is None:
                self.runtime = SegmentationRuntime(self)
            self.runtime.load_model()
        except MobileSamError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.start()
        self._active = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._deactivate()

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.unload_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.runtime is not None:
            self._deactivate()
            self.runtime.unload_model()
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> TransitionCallbackReturn:
        if self._active:
            self._active = False
            if not self.runtime.stop():
                self.get_logger().warning("an inference was still running at deactivation")
        return TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None) -> int:
    return run(SegmentationLifecycleNode, lambda node: node.runtime, args)


if __name__ == "__main__":
    sys.exit(main())
