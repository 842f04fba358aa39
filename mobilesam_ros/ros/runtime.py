"""What both node variants share: model lifetime, inputs, outputs and the two threads.

Callbacks only convert and enqueue. The inference thread runs the pipeline (one job at a time);
the publishing thread builds and publishes the outputs of the previous frame meanwhile, handed
over through a one-slot queue (no backlog: inference waits while it is full).

Lifetime, in the order the nodes call it: construction (parameters declared, /diagnostics
running), `load_model*`, `create_outputs`, `start` (inputs and threads), `stop`,
`destroy_outputs`, `unload_model`. The plain node runs all of it at once; the lifecycle node
maps it onto its transitions.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node

from mobilesam_ros.core import InvalidInputError, MobileSamError, Segmenter
from mobilesam_ros.core.errors import ExportInterruptedError
from mobilesam_ros.core.stream.failures import STAGE_PUBLISH, FailureLog, failure_counter
from mobilesam_ros.core.stream.pipeline import StreamPipeline
from mobilesam_ros.core.stream.stream import FrameResult
from mobilesam_ros.messages.readers import decode_image_message
from mobilesam_ros.ros.camera import CameraTopics
from mobilesam_ros.ros.diagnostics import DiagnosticsReport, StageStats
from mobilesam_ros.ros.parameters import declare_parameters
from mobilesam_ros.ros.process import RosLogHandler
from mobilesam_ros.ros.segment_service import SegmentService

_POLL_S = 0.1  # longest wait of the threads before they look at the stop flag again


class SegmentationRuntime:
    """Declares the parameters (MobileSamError names a bad one) and publishes /diagnostics; the
    rest waits for the node's calls (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = declare_parameters(node)
        self._log_handler = RosLogHandler(node.get_logger())
        logging.getLogger("mobilesam_ros").setLevel(logging.INFO)
        logging.getLogger("mobilesam_ros").addHandler(self._log_handler)
        self.failures = FailureLog(logging.getLogger("mobilesam_ros.node"))
        self.stats = StageStats()
        # One stream per camera; "" is the single camera on the topics without a prefix.
        self.camera_names = self.settings.inputs.cameras or ("",)
        self.pipeline = StreamPipeline(
            decode_image_message,
            self.settings,
            streams=self.camera_names,
            anyone_listening=self._anyone_listening,
            everything_listening=self._everything_listening,
            failures=self.failures,
        )
        self.loading_error: str | None = None
        self.loading = threading.Event()  # set while a model loads (it cannot be interrupted)
        self.lifecycle_state: str | None = None  # the lifecycle node's state; None: plain node
        self.cameras: dict[str, CameraTopics] = {}  # while the outputs exist
        self._service: SegmentService | None = None  # likewise
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._handoff: queue.Queue[FrameResult] = queue.Queue(maxsize=1)
        node.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics = DiagnosticsReport(node, self)

    # -- model -----------------------------------------------------------------------------

    def load_model(self) -> None:
        """Load (first start: download and export) the model and hand it to the pipeline."""
        self.node.get_logger().info("loading MobileSAM (first start downloads and exports)")
        self.loading_error = None
        self.loading.set()
        try:
            segmenter = Segmenter.from_settings(
                self.settings.model, self.settings.decode.mask_threshold
            )
        except ExportInterruptedError:
            raise
        except MobileSamError as exc:
            self.loading_error = str(exc)
            raise
        finally:
            self.loading.clear()
        self.pipeline.attach(segmenter)
        self.node.get_logger().info(f"MobileSAM ready: {segmenter.backend.describe()}")

    def load_model_in_background(self, on_failure: Callable[[], None]) -> None:
        def load() -> None:
            try:
                self.load_model()
            except Exception as exc:
                if self._stopping.is_set() or isinstance(exc, ExportInterruptedError):
                    return  # shutting down: not a failure of the model
                self.loading_error = self.loading_error or repr(exc)
                self.node.get_logger().error(f"cannot load the model: {self.loading_error}")
                on_failure()

        threading.Thread(target=load, name="mobilesam-load", daemon=True).start()

    def unload_model(self) -> None:
        self.pipeline.detach()

    # -- outputs, inputs and threads -------------------------------------------------------

    def create_outputs(self) -> None:
        self.cameras = {
            name: CameraTopics(
                self.node, self.pipeline, self.settings, self.failures, self.stats, name
            )
            for name in self.camera_names
        }
        self._service = SegmentService(self.node, self.pipeline, self.camera_names)

    def destroy_outputs(self) -> None:
        cameras, self.cameras = self.cameras, {}
        for camera in cameras.values():
            camera.destroy()
        if self._service is not None:
            self._service.destroy()
            self._service = None

    def _anyone_listening(self, stream: str) -> bool:
        camera = self.cameras.get(stream)
        return camera is not None and camera.anyone_listening()

    def _everything_listening(self, stream: str) -> bool:
        camera = self.cameras.get(stream)
        return camera is not None and camera.everything_listening()

    def start(self) -> None:
        """Subscriptions and the inference and publishing threads (outputs must exist)."""
        for camera in self.cameras.values():
            camera.subscribe()
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._infer, name="mobilesam-inference", daemon=True),
            threading.Thread(target=self._publish, name="mobilesam-publish", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the threads and remove the subscriptions; True if nothing is left running (no
        thread, no model load), so that the outputs may be destroyed."""
        self._stopping.set()
        self.pipeline.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        for camera in self.cameras.values():
            camera.unsubscribe()
        # A model still loading (native code: ONNX Runtime, an export) cannot be interrupted
        # either: the process must then leave without tearing it down under its feet.
        alive = any(thread.is_alive() for thread in self._threads)
        return not alive and not self.loading.is_set()

    def close(self) -> None:
        logging.getLogger("mobilesam_ros").removeHandler(self._log_handler)

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        """Validated here, applied by the inference thread between two frames."""
        try:
            self.settings = self.settings.with_changes({p.name: p.value for p in parameters})
        except InvalidInputError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.pipeline.configure(self.settings)
        return SetParametersResult(successful=True)

    # -- threads ---------------------------------------------------------------------------

    def _infer(self) -> None:
        while not self._stopping.is_set():
            try:
                result = self.pipeline.process_next(timeout=_POLL_S)
            except Exception as exc:  # a defect, not bad input: keep serving, slowly
                self.failures.report("worker_failures", f"inference thread: {exc!r}", exc=exc)
                self._stopping.wait(_POLL_S)
                continue
            if result is None:
                continue
            for stage, milliseconds in result.stage_ms.items():
                self.stats.record(stage, milliseconds)
            while not self._stopping.is_set():
                try:
                    self._handoff.put(result, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue

    def _publish(self) -> None:
        while not self._stopping.is_set():
            try:
                result = self._handoff.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            camera = self.cameras.get(result.stream)
            if camera is None:
                continue  # its outputs were destroyed meanwhile
            started = time.perf_counter()
            try:
                camera.publish(result)
            except Exception as exc:
                if self._stopping.is_set() or not self.node.context.ok():
                    return  # shutting down: publishers are gone
                reason = failure_counter(STAGE_PUBLISH)
                self.failures.report(reason, f"publishing failed: {exc!r}", exc=exc)
                continue
            self.stats.published(result, started, self.node.get_clock().now().nanoseconds)
