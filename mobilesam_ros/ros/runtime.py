"""What both node variants share: parameters, inputs, outputs, the two threads, diagnostics.

Callbacks only convert and enqueue. The inference thread runs the stream pipeline (one job at a
time); the publishing thread builds and publishes the outputs of the previous frame meanwhile,
handed over through a one-slot queue (no backlog: inference waits while it is full).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from mobilesam_ros.core import InvalidInputError, MobileSamError, Segmenter
from mobilesam_ros.core.processing.image_codec import check_raw_image
from mobilesam_ros.core.prompts import Prompt
from mobilesam_ros.core.stream.frame_sync import Frame, PromptRequest
from mobilesam_ros.core.stream.pipeline import (
    IMAGES_REJECTED,
    STAGE_PUBLISH,
    FailureLog,
    FrameResult,
    StreamPipeline,
    failure_counter,
)
from mobilesam_ros.msg import PromptArray
from mobilesam_ros.ros import conversions
from mobilesam_ros.ros.diagnostics import StageStats, health, status_values
from mobilesam_ros.ros.outputs import Detection2DArray, OutputPublishers
from mobilesam_ros.ros.parameters import (
    PARAMETERS,
    STREAM_SETTINGS,
    ParameterSpec,
    check_value,
    stream_settings,
)

CLICKS_IN_OTHER_FRAME = "clicks_in_another_frame"
_POLL_S = 0.1  # longest wait of the threads before they look at the stop flag again


class RosLogHandler(logging.Handler):
    """Routes the package's `logging` records (progress, warnings) to the node's ROS logger."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.levelno >= logging.ERROR:
            self._ros_logger.error(message)
        elif record.levelno >= logging.WARNING:
            self._ros_logger.warning(message)
        else:
            self._ros_logger.info(message)


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
        self._subscriptions: list[Any] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._handoff: queue.Queue[FrameResult] = queue.Queue(maxsize=1)
        self._last_image: float | None = None
        self._image_frame_id = ""
        self._clicks = 0
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

        threading.Thread(target=load, name="mobilesam-load", daemon=True).start()

    def unload_model(self) -> None:
        self.pipeline.segmenter = None

    # -- start and stop --------------------------------------------------------------------

    def start(self) -> None:
        """Publishers, subscriptions, the inference and publishing threads."""
        node = self.node
        self.outputs = OutputPublishers(node, self.value, self.pipeline.tracker is not None)
        image_qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
        options = QoSOverridingOptions.with_default_policies()
        image_type, image_topic = Image, "image"
        if self.value("use_compressed"):
            image_type, image_topic = CompressedImage, "image/compressed"
        self._subscriptions = [
            node.create_subscription(
                image_type, image_topic, self._on_image, image_qos, qos_overriding_options=options
            ),
            node.create_subscription(PromptArray, "prompts", self._on_prompts, 10),
            node.create_subscription(PointStamped, "clicked_point", self._on_click, 10),
            node.create_subscription(Point, "clicked_pixel", self._on_clicked_pixel, 10),
        ]
        if Detection2DArray is not None:
            self._subscriptions.append(
                node.create_subscription(Detection2DArray, "detections", self._on_detections, 10)
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
        finished = not any(thread.is_alive() for thread in self._threads)
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
        if finished and self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None
        return finished

    def close(self) -> None:
        logging.getLogger("mobilesam_ros").removeHandler(self._log_handler)

    # -- inputs: convert and enqueue, never block ---------------------------------------

    def _on_image(self, message: Image | CompressedImage) -> None:
        now = time.monotonic()
        self._last_image = now
        self._image_frame_id = message.header.frame_id
        self.stats.count("images_in")
        if isinstance(message, Image):
            try:
                check_raw_image(
                    len(message.data), message.height, message.width, message.step, message.encoding
                )
            except InvalidInputError as exc:
                self.failures.report(IMAGES_REJECTED, f"image rejected: {exc}")
                return
        stamp_ns = conversions.stamp_to_ns(message.header.stamp)
        self.pipeline.add_frame(Frame(stamp_ns, message.header.frame_id, message, now))

    def _enqueue(self, header: Any, prompts: list[Prompt], source: str) -> None:
        self.stats.count("prompt_messages_in")
        stamp_ns = conversions.stamp_to_ns(header.stamp) if header is not None else 0
        frame_id = header.frame_id if header is not None else ""
        request = PromptRequest(stamp_ns, frame_id, prompts, time.monotonic(), source)
        self.pipeline.add_request(request)

    def _on_prompts(self, message: PromptArray) -> None:
        self._enqueue(message.header, conversions.prompts_from_prompt_array(message), "prompts")

    def _on_detections(self, message: Any) -> None:
        self._enqueue(message.header, conversions.prompts_from_detections(message), "detections")

    def _on_click(self, message: PointStamped) -> None:
        frame_id = message.header.frame_id
        if frame_id and self._image_frame_id and frame_id != self._image_frame_id:
            self.failures.report(
                CLICKS_IN_OTHER_FRAME,
                f"clicked_point in frame {frame_id!r}, not the image's {self._image_frame_id!r}: "
                "it holds no pixel coordinates (rviz's Publish Point tool sends metres); "
                "click in rqt_image_view, which publishes clicked_pixel",
            )
            return
        self._clicks += 1
        self._enqueue(
            message.header, [conversions.prompt_from_click(message.point, self._clicks)], "clicks"
        )

    def _on_clicked_pixel(self, message: Point) -> None:
        """rqt_image_view's clicks: pixels of the image it shows, no stamp (newest frame)."""
        self._clicks += 1
        self._enqueue(None, [conversions.prompt_from_click(message, self._clicks)], "clicks")

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        specs = {spec.name: spec for spec in PARAMETERS}
        for parameter in parameters:
            spec = specs.get(parameter.name)
            problem = check_value(spec, parameter.value) if spec is not None else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        values = {p.name: p.value for p in parameters}
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
        since_image = None if self._last_image is None else now - self._last_image
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
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def run(
    make_node: Callable[[], Any],
    runtime_of: Callable[[Any], SegmentationRuntime | None],
    args: list[str] | None = None,
) -> int:
    """Spin a node until shutdown; exit codes: 0 clean, 2 bad parameter or model, 1 a defect."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MobileSamError as exc:
        print(
            f"[{node.get_name() if node else 'mobilesam'}] error: {exc}",
            file=sys.stderr,
            flush=True,
        )
        code = 2
    except Exception:
        traceback.print_exc()
        code = 1
    finally:
        finished = True
        if node is not None:
            runtime = runtime_of(node)
            if runtime is not None:
                finished = runtime.stop()
                runtime.close()
                if runtime.loading_error:
                    code = 2
            node.destroy_node()
        rclpy.try_shutdown()
    if not finished:
        # An inference is still running in native code; it cannot be interrupted and holds no
        # state worth saving, so leave without waiting for it (with the real exit code).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
