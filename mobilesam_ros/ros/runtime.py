"""What both node variants share: parameters, inputs, outputs, the two threads, diagnostics.

Callbacks only convert and enqueue. The inference thread runs the stream pipeline (one job at a
time); the publishing thread builds and publishes the outputs of the previous frame meanwhile,
handed over through a one-slot queue (no backlog: inference waits while it is full).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node

from mobilesam_ros.core import InvalidInputError, MobileSamError, Segmenter
from mobilesam_ros.core.depth import LiftParams
from mobilesam_ros.core.stream.pipeline import (
    STAGE_PUBLISH,
    FailureLog,
    FrameResult,
    StreamPipeline,
    failure_counter,
)
from mobilesam_ros.ros import conversions
from mobilesam_ros.ros.diagnostics import StageStats, health, status_values
from mobilesam_ros.ros.inputs import InputSubscriptions
from mobilesam_ros.ros.outputs import OutputPublishers
from mobilesam_ros.ros.outputs_3d import DepthInputs, Outputs3D
from mobilesam_ros.ros.parameters import (
    PARAMETERS,
    STREAM_SETTINGS,
    ParameterSpec,
    check_value,
    stream_settings,
)
from mobilesam_ros.ros.process import RosLogHandler

_POLL_S = 0.1  # longest wait of the threads before they look at the stop flag again


def _descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=not spec.dynamic)
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.min_value is not None and isinstance(spec.default, float):
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=spec.min_value, to_value=spec.max_value)
        ]
    elif spec.min_value is not None and isinstance(spec.default, int):
        descriptor.integer_range = [
            IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)
        ]
    return descriptor


class SegmentationRuntime:
    """Declares and validates the parameters (MobileSamError names a bad one), then waits for
    `start` (inputs, outputs, threads) and a model (`load_model*`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        for spec in PARAMETERS:
            node.declare_parameter(spec.name, spec.default, _descriptor(spec))
            problem = check_value(spec, self.value(spec.name))
            if problem:
                raise MobileSamError(problem)
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
        self.outputs: OutputPublishers | None = None
        self.inputs: InputSubscriptions | None = None
        self.depth_inputs: DepthInputs | None = None
        self._threads: list[threading.Thread] = []
        self._loader: threading.Thread | None = None  # background model load
        self._stopping = threading.Event()
        self._handoff: queue.Queue[FrameResult] = queue.Queue(maxsize=1)
        self._previous_counters: Counter[str] | None = None
        self._diagnostics_started = time.monotonic()
        node.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        node.create_timer(self.value("diagnostics_period"), self.publish_diagnostics)

    def value(self, name: str) -> Any:
        return self.node.get_parameter(name).value

    # -- model -----------------------------------------------------------------------------

    def load_model(self) -> None:
        """Load (first start: download and export) the model and hand it to the pipeline."""
        self.node.get_logger().info("loading MobileSAM (first start downloads and exports)")
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
        except MobileSamError as exc:
            self.loading_error = str(exc)
            raise
        self.pipeline.attach(segmenter)
        self.node.get_logger().info(f"MobileSAM ready: {segmenter.backend.describe()}")

    def load_model_in_background(self, on_failure: Callable[[], None]) -> None:
        def load() -> None:
            try:
                self.load_model()
            except Exception as exc:
                self.loading_error = self.loading_error or repr(exc)
                self.node.get_logger().error(f"cannot load the model: {self.loading_error}")
                on_failure()

        self._loader = threading.Thread(target=load, name="mobilesam-load", daemon=True)
        self._loader.start()

    def unload_model(self) -> None:
        self.pipeline.segmenter = None

    # -- start and stop --------------------------------------------------------------------

    def start(self) -> None:
        """Publishers, subscriptions, the inference and publishing threads."""
        node = self.node
        self.depth_inputs = DepthInputs(node, self.failures)
        outputs_3d = Outputs3D(node, self.value, self.depth_inputs, self.failures)
        self.outputs = OutputPublishers(
            node, self.value, self.pipeline.tracker is not None, outputs_3d
        )
        self.inputs = InputSubscriptions(
            node, self.pipeline, self.failures, self.stats, self.value("use_compressed")
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

    def stop(self, timeout: float = 1.5) -> bool:
        """Stop the threads and remove inputs and outputs; True if the threads finished."""
        self._stopping.set()
        self.pipeline.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        # A model still loading (native code: ONNX Runtime, an export) cannot be interrupted
        # either: the process must then leave without tearing it down under its feet.
        busy = [*self._threads, *([self._loader] if self._loader is not None else [])]
        finished = not any(thread.is_alive() for thread in busy)
        if self.inputs is not None:
            self.inputs.destroy()
            self.depth_inputs.destroy()
            self.inputs = self.depth_inputs = None
        if finished and self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None
        return finished

    def close(self) -> None:
        logging.getLogger("mobilesam_ros").removeHandler(self._log_handler)

    # -- inputs: convert and enqueue, never block ---------------------------------------

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        specs = {spec.name: spec for spec in PARAMETERS}
        for parameter in parameters:
            spec = specs.get(parameter.name)
            problem = check_value(spec, parameter.value) if spec is not None else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        values = {p.name: p.value for p in parameters}
        try:  # ranges that depend on each other
            LiftParams(
                min_depth=values.get("depth.min", self.value("depth.min")),
                max_depth=values.get("depth.max", self.value("depth.max")),
            )
        except InvalidInputError as exc:
            return SetParametersResult(successful=False, reason=f"depth.min/depth.max: {exc}")
        if values.keys() & set(STREAM_SETTINGS.values()):
            # Applied by the inference thread between two frames.
            self.pipeline.configure(stream_settings(lambda n: values.get(n, self.value(n))))
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
        now = time.monotonic()
        period = max(now - self._diagnostics_started, 1e-6)
        self._diagnostics_started = now
        samples, events = self.stats.take()
        counters = self.pipeline.counters()
        waiting, cached = self.pipeline.queue_sizes()
        segmenter = self.pipeline.segmenter
        last_image = self.inputs.last_image if self.inputs is not None else None
        since_image = None if last_image is None else now - last_image
        state = health(
            self.loading_error,
            segmenter is not None,
            self.pipeline.failing,
            since_image,
            self.value("diagnostics.stale_after"),
            counters,
            self._previous_counters,
        )
        self._previous_counters = counters
        status = DiagnosticStatus(
            name=f"{self.node.get_fully_qualified_name()}: segmentation",
            hardware_id=segmenter.backend.describe() if segmenter is not None else "",
            level=state.level,
            message=state.message,
            values=status_values(
                period, samples, events, self.pipeline.totals(), counters, waiting, cached
            ),
        )
        if self.outputs is not None:
            skipped = str(self.outputs.overlays_skipped)
            status.values.append(KeyValue(key="overlays skipped by max_rate", value=skipped))
        fallback = getattr(segmenter.backend, "fallback_reason", None) if segmenter else None
        if fallback:
            status.values.append(KeyValue(key="backend fallback reason", value=fallback))
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)
