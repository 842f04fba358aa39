"""One camera's topics: its inputs (image, prompts, detections, clicks, depth, camera_info) and
its outputs (masks, label image, overlay, refined detections, the 3D outputs).

Outputs live from `CameraTopics` on (a lifecycle node's publish only while it is active);
subscriptions come and go with `subscribe` / `unsubscribe`.
"""

from __future__ import annotations

from rclpy.node import Node

from mobilesam_ros.core.settings import NodeSettings
from mobilesam_ros.core.stream.failures import FailureLog
from mobilesam_ros.core.stream.pipeline import StreamPipeline
from mobilesam_ros.core.stream.stream import FrameResult
from mobilesam_ros.ros.diagnostics import StageStats
from mobilesam_ros.ros.inputs import InputSubscriptions
from mobilesam_ros.ros.outputs import OutputPublishers
from mobilesam_ros.ros.outputs_3d import DepthInputs, Outputs3D


class CameraTopics:
    """One camera's topics; `name` "" is the node's single camera (topics without a prefix),
    else its topics are under <name>/ and its frames go to the pipeline's stream `name`."""

    def __init__(
        self,
        node: Node,
        pipeline: StreamPipeline,
        settings: NodeSettings,
        failures: FailureLog,
        stats: StageStats,
        name: str = "",
    ) -> None:
        self.name = name
        prefix = f"{name}/" if name else ""
        self._node = node
        self._pipeline = pipeline
        self._settings = settings
        self._failures = failures
        self._stats = stats
        self._depth = DepthInputs(node, failures, prefix)
        outputs_3d = Outputs3D(node, self._depth, failures, prefix)
        self._outputs = OutputPublishers(node, outputs_3d, prefix)
        # Segment everything's masks, mask_image and overlay (everything.max_rate > 0).
        self._everything = OutputPublishers(node, None, prefix + "everything/")
        self._inputs: InputSubscriptions | None = None

    @property
    def last_image(self) -> float | None:
        """When the last image arrived (monotonic seconds), while subscribed."""
        return self._inputs.last_image if self._inputs is not None else None

    @property
    def overlays_skipped(self) -> int:
        return self._outputs.overlays_skipped

    def anyone_listening(self) -> bool:
        return self._outputs.anyone_listening()

    def everything_listening(self) -> bool:
        return self._everything.anyone_listening()

    def publish(self, result: FrameResult) -> int:
        if result.everything:
            return self._everything.publish(result)
        return self._outputs.publish(result)

    def subscribe(self) -> None:
        self._depth.subscribe()
        self._inputs = InputSubscriptions(
            self._node,
            self._pipeline,
            self._failures,
            self._stats,
            self._settings.inputs,
            self.name,
        )

    def unsubscribe(self) -> None:
        if self._inputs is not None:
            self._inputs.destroy()
            self._inputs = None
        self._depth.unsubscribe()

    def destroy(self) -> None:
        self.unsubscribe()
        self._outputs.destroy()
        self._everything.destroy()
