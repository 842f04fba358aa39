"""What both node variants share: the pipeline, model lifetime, inputs, outputs, the two threads.

Callbacks only convert and enqueue. The inference thread runs the stream pipeline (one job at a
time); the publishing thread builds and publishes the outputs of the previous frame meanwhile,
handed over through a one-slot queue (no backlog: inference waits while it is full).

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

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from mobilesam_ros.core import MobileSamError, Segmenter
from mobilesam_ros.core.errors import ExportInterruptedError
from mobilesam_ros.core.stream.pipeline import (
    STAGE_PUBLISH,
    FailureLog,
    FrameResult,
    StreamPipeline,
    failure_counter,
)
from mobilesam_ros.ros import conversions
from mobilesam_ros.ros.diagnostics import DiagnosticsReport, StageStats
from mobilesam_ros.ros.inputs import InputSubscriptions
from mobilesam_ros.ros.outputs import OutputPublishers
from mobilesam_ros.ros.outputs_3d import DepthInputs, Outputs3D
from mobilesam_ros.ros.parameters import (
    STREAM_SETTINGS,
    change_problem,
    declare_parameters,
    stream_settings,
)
from mobilesam_ros.ros.process import RosLogHandler

_POLL_S = 0.1  # longest wait of the threads before they look at the stop flag again


class SegmentationRuntime:
    """Declares and validates the parameters (MobileSamError names a bad one) and publishes
    /diagnostics; the rest waits for the node's calls (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        declare_parameters(node)
        self._log_handler = RosLogHandler(node.get_logger())
        package_logger = logging.getLogger("mobilesam_ros")
        package_logger.setLevel(logging.INFO)
        package_logger.addHandler(self._log_handler)
        self.failures = FailureLog(logging.getLogger("mobilesam_ros.node"))
        self.stats = StageStats()
        self.pipeline = StreamPipeline(
            conversions.decode_image_message,
            stream_settings(self.value),
            tracking=self.value("tracking.enabled"),
            cache_size=self.value("sync.cache_size"),
            anyone_listening=self._anyone_listening,
            failures=self.failures,
        )
        self.loading_error: str | None = None
        self.loading = threading.Event()  # set while a model loads (it cannot be interrupted)
        self.lifecycle_state: str | None = None  # the lifecycle node's state; None: plain node
        self.outputs: OutputPublishers | None = None
        self.inputs: InputSubscriptions | None = None
        self.depth_inputs: DepthInputs | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._handoff: queue.Queue[FrameResult] = queue.Queue(maxsize=1)
        node.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics = DiagnosticsReport(
            node.get_fully_qualified_name(),
            node.create_publisher(DiagnosticArray, "/diagnostics", 10),
        )
        # A group of its own: /diagnostics keeps coming while a multi-threaded executor runs a
        # long transition (the lifecycle node's configure loads the model).
        node.create_timer(
            self.value("diagnostics_period"),
            self.publish_diagnostics,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )

    def value(self, name: str) -> Any:
        return self.node.get_parameter(name).value

    # -- model -----------------------------------------------------------------------------

    def load_model(self) -> None:
        """Load (first start: download and export) the model and hand it to the pipeline."""
        self.node.get_logger().info("loading MobileSAM (first start downloads and exports)")
        self.loading_error = None
        self.loading.set()
        try:
            segmenter = Segmenter(
                checkpoint=self.value("checkpoint") or None,
                backend=self.value("backend"),
                cache_dir=self.value("cache_dir") or None,
                device=self.value("device"),
                mask_threshold=self.value("mask_threshold"),
                precision=self.value("precision"),
                force_rebuild=self.value("force_rebuild"),
                compile_decoder=self.value("compile_decoder"),
                decoder_memory_mb=self.value("decoder_memory_mb"),
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
        node = self.node
        self.depth_inputs = DepthInputs(node, self.failures)
        outputs_3d = Outputs3D(node, self.value, self.depth_inputs, self.failures)
        self.outputs = OutputPublishers(
            node, self.value, self.pipeline.tracker is not None, outputs_3d
        )

    def destroy_outputs(self) -> None:
        if self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None

    def start(self) -> None:
        """Subscriptions and the inference and publishing threads (outputs must exist)."""
        self.depth_inputs.subscribe()
        self.inputs = InputSubscriptions(
            self.node, self.pipeline, self.failures, self.stats, self.value("use_compressed")
        )
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=target, name=name, daemon=True)
            for target, name in (
                (self._infer, "mobilesam-inference"),
                (self._publish, "mobilesam-publish"),
            )
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
        finished = not any(thread.is_alive() for thread in self._threads)
        if self.inputs is not None:
            self.inputs.destroy()
            self.inputs = None
        if self.depth_inputs is not None:
            self.depth_inputs.unsubscribe()
        # A model still loading (native code: ONNX Runtime, an export) cannot be interrupted
        # either: the process must then leave without tearing it down under its feet.
        return finished and not self.loading.is_set()

    def close(self) -> None:
        logging.getLogger("mobilesam_ros").removeHandler(self._log_handler)

    # -- parameters ------------------------------------------------------------------------

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        problem = change_problem(changes, self.value)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        if changes.keys() & set(STREAM_SETTINGS.values()):
            # Applied by the inference thread between two frames.
            self.pipeline.configure(stream_settings(lambda n: changes.get(n, self.value(n))))
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
            started = time.perf_counter()
            try:
                self.outputs.publish(result)
            except Exception as exc:
                if self._stopping.is_set() or not self.node.context.ok():
                    return  # shutting down: publishers are gone
                reason = failure_counter(STAGE_PUBLISH)
                self.failures.report(reason, f"publishing failed: {exc!r}", exc=exc)
                continue
            now = time.perf_counter()
            self.stats.record("publish", (now - started) * 1e3)
            self.stats.record("total", (now - result.started) * 1e3)
            stamp_age_ns = self.node.get_clock().now().nanoseconds - result.frame.stamp_ns
            self.stats.record("stamp_to_publish", stamp_age_ns / 1e6)
            self.stats.count("mask_messages_out")

    def _anyone_listening(self) -> bool:
        outputs = self.outputs
        return outputs is not None and outputs.anyone_listening()

    # -- diagnostics -----------------------------------------------------------------------

    def publish_diagnostics(self) -> None:
        inputs, outputs = self.inputs, self.outputs
        self._diagnostics.publish(
            self.pipeline,
            self.stats,
            stamp=self.node.get_clock().now().to_msg(),
            loading_error=self.loading_error,
            lifecycle_state=self.lifecycle_state,
            last_image=inputs.last_image if inputs is not None else None,
            stale_after=self.value("diagnostics.stale_after"),
            overlays_skipped=outputs.overlays_skipped if outputs is not None else None,
        )
