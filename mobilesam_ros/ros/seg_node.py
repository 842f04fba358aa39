"""The segmentation node: images and prompts in, one mask per prompt out, on the exact frame.

Callbacks only convert and enqueue; one worker thread encodes images (each at most once) and
decodes prompts, so no callback ever blocks on inference and no backlog grows.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from mobilesam_ros.core import InvalidInputError, MobileSamError, Segmenter
from mobilesam_ros.core.processing.image_codec import check_raw_image
from mobilesam_ros.core.processing.preprocess import FrameGeometry, encode_prompts
from mobilesam_ros.core.prompts import Prompt, PromptMask, decode_prompts
from mobilesam_ros.core.stream.frame_sync import Frame, FrameSync, PromptRequest
from mobilesam_ros.core.stream.tracking import (
    FlowFrame,
    Tracker,
    decode_track_prompts,
    estimate_motions,
)
from mobilesam_ros.core.visualize import draw_overlay, label_image
from mobilesam_ros.msg import InstanceMaskArray, PromptArray
from mobilesam_ros.ros import conversions
from mobilesam_ros.ros.parameters import NODE_NAME, PARAMETERS, ParameterSpec

try:  # optional: the node runs without vision_msgs
    from vision_msgs.msg import Detection2D, Detection2DArray
except ImportError:  # pragma: no cover - depends on the install
    Detection2D = Detection2DArray = None

WARN_PERIOD_S = 5.0  # throttle for repeated warnings about bad input
OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)

# Counter names that are not drops of the frame synchronizer.
IMAGES_REJECTED = "images_rejected"
PROMPTS_REJECTED = "prompts_rejected"
PROMPTS_OVER_LIMIT = "prompts_over_max_prompts"
INFERENCE_ERRORS = "inference_errors"


class SegmentationNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._declare_parameters()
        self._check_static_parameters()
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._counters: Counter[str] = Counter()  # inputs dropped or rejected, by reason
        self._totals: Counter[str] = Counter()  # work done since start
        self._stage_ms: dict[str, list[float]] = {}
        self._rates: Counter[str] = Counter()
        # Statistics are written by callbacks and the worker and swapped out by the timer.
        self._stats_lock = threading.Lock()
        self._last_warning: dict[str, float] = {}
        self._clicks = 0
        self.sync = FrameSync(
            self._param("sync.policy"),
            self._param("sync.max_offset"),
            self._param("sync.max_wait"),
            self._param("sync.cache_size"),
        )
        self.get_logger().info("loading MobileSAM (first start downloads and exports; see log)")
        self.segmenter = Segmenter(
            checkpoint=self._param("checkpoint") or None,
            backend=self._param("backend"),
            cache_dir=self._param("cache_dir") or None,
            device=self._param("device"),
            mask_threshold=self._param("mask_threshold"),
            precision=self._param("precision"),
            force_rebuild=self._param("force_rebuild"),
        )
        self.get_logger().info(f"MobileSAM ready: {self.segmenter.backend.describe()}")
        self.tracker: Tracker | None = None
        if self._param("tracking.enabled"):
            self.tracker = Tracker()
            self._configure_tracker({})
        self._last_tracked_ns: int | None = None

        self._masks_pub = self.create_publisher(InstanceMaskArray, "masks", OUTPUT_QOS)
        self._mask_image_pub = self.create_publisher(Image, "mask_image", OUTPUT_QOS)
        self._overlay_pub = self.create_publisher(Image, "overlay", OUTPUT_QOS)
        self._refined_pub = None
        if Detection2DArray is not None:
            self._refined_pub = self.create_publisher(
                Detection2DArray, "detections_refined", OUTPUT_QOS
            )
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        image_qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)
        qos_options = QoSOverridingOptions.with_default_policies()
        if self._param("use_compressed"):
            self.create_subscription(
                CompressedImage,
                "image/compressed",
                self._on_image,
                image_qos,
                qos_overriding_options=qos_options,
            )
        else:
            self.create_subscription(
                Image, "image", self._on_image, image_qos, qos_overriding_options=qos_options
            )
        self.create_subscription(PromptArray, "prompts", self._on_prompts, 10)
        self.create_subscription(PointStamped, "clicked_point", self._on_click, 10)
        if Detection2DArray is not None:
            self.create_subscription(Detection2DArray, "detections", self._on_detections, 10)
        else:
            self.get_logger().info("vision_msgs not installed: no detections input")

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics_started = time.monotonic()
        self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="mobilesam-inference", daemon=True)
        self._worker.start()

    # -- parameters -----------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        for spec in PARAMETERS:
            descriptor = ParameterDescriptor(
                description=spec.description, read_only=not spec.dynamic
            )
            if spec.choices:
                descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
            if spec.min_value is not None and isinstance(spec.default, float):
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=spec.min_value, to_value=spec.max_value)
                ]
            elif spec.min_value is not None and isinstance(spec.default, int):
                descriptor.integer_range = [
                    IntegerRange(
                        from_value=int(spec.min_value), to_value=int(spec.max_value), step=1
                    )
                ]
            self.declare_parameter(spec.name, spec.default, descriptor)

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _check_static_parameters(self) -> None:
        for spec in PARAMETERS:
            problem = _check_value(spec, self._param(spec.name))
            if problem:
                raise MobileSamError(problem)

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        specs = {spec.name: spec for spec in PARAMETERS}
        for parameter in parameters:
            spec = specs.get(parameter.name)
            if spec is None:
                continue
            problem = _check_value(spec, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        values = {p.name: p.value for p in parameters}
        with self._condition:
            self.sync.configure(
                values.get("sync.policy", self._param("sync.policy")),
                values.get("sync.max_offset", self._param("sync.max_offset")),
                values.get("sync.max_wait", self._param("sync.max_wait")),
            )
            if "mask_threshold" in values:
                self.segmenter.mask_threshold = float(values["mask_threshold"])
            if self.tracker is not None:
                self._configure_tracker(values)
            self._condition.notify()
        return SetParametersResult(successful=True)

    def _configure_tracker(self, changed: dict[str, Any]) -> None:
        def value(name: str) -> Any:
            return changed.get(name, self._param(name))

        self.tracker.configure(
            max_age=value("tracking.max_age"),
            min_iou=value("tracking.min_iou"),
            min_iou_frames=self.tracker.min_iou_frames,
            iou_match_threshold=value("tracking.iou_match"),
            margin=value("tracking.margin"),
            min_margin_px=self.tracker.min_margin_px,
            mask_prompt=self.tracker.mask_prompt,
            min_visible=self.tracker.min_visible,
            max_points=self.tracker.max_points,
        )

    # -- inputs: convert and enqueue, never block ---------------------------------------

    def _on_image(self, message: Image | CompressedImage) -> None:
        now = time.monotonic()
        self._count("images_in")
        if isinstance(message, Image):
            try:
                check_raw_image(
                    len(message.data), message.height, message.width, message.step, message.encoding
                )
            except InvalidInputError as exc:
                self._reject(IMAGES_REJECTED, f"image rejected: {exc}")
                return
        frame = Frame(
            conversions.stamp_to_ns(message.header.stamp), message.header.frame_id, message, now
        )
        with self._condition:
            self.sync.add_frame(frame)
            self._condition.notify()

    def _enqueue(
        self, header: Any, prompts: list[Prompt], source: str, context: Any = None
    ) -> None:
        now = time.monotonic()
        self._count("prompt_messages_in")
        limit = self._param("max_prompts")
        if len(prompts) > limit:
            self._reject(
                PROMPTS_OVER_LIMIT,
                f"{len(prompts)} prompts in one message; answering the first {limit} "
                "(parameter max_prompts)",
                count=len(prompts) - limit,
            )
            prompts = prompts[:limit]
        request = PromptRequest(
            conversions.stamp_to_ns(header.stamp), header.frame_id, prompts, now, source, context
        )
        with self._condition:
            self.sync.add_request(request)
            self._condition.notify()

    def _on_prompts(self, message: PromptArray) -> None:
        self._enqueue(message.header, conversions.prompts_from_prompt_array(message), "prompts")

    def _on_detections(self, message: Any) -> None:
        self._enqueue(
            message.header, conversions.prompts_from_detections(message), "detections", message
        )

    def _on_click(self, message: PointStamped) -> None:
        self._clicks += 1
        prompt = conversions.prompt_from_click(message, self._clicks)
        self._enqueue(message.header, [prompt], "clicked_point")

    # -- worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            with self._condition:
                job = self._next_job()
                if job is None:
                    deadline = self.sync.next_deadline()
                    timeout = 0.1 if deadline is None else deadline - time.monotonic()
                    self._condition.wait(timeout=min(max(timeout, 0.001), 0.1))
                    continue
            try:
                if self.tracker is None:
                    self._process(*job)
                else:
                    self._process_tracking(*job)
            except InvalidInputError as exc:
                self._reject(IMAGES_REJECTED, f"image rejected: {exc}")
            except Exception as exc:  # keep serving; the next frame may be fine
                if self._stopping.is_set() or not self.context.ok():
                    return  # shutting down: publishers are gone
                self._reject(INFERENCE_ERRORS, f"inference failed: {exc!r}")

    def _next_job(self) -> tuple[Any, Any] | None:
        """Under the lock: (frame, request) without tracking; with tracking (frame, requests)
        for the newest frame whenever it is new and tracks live, or prompts are ready."""
        now = time.monotonic()
        if self.tracker is None:
            return self.sync.pop_ready(now)
        ready = self.sync.pop_all_ready(now)
        newest = self.sync.newest
        if newest is None:
            return None
        if ready or (self.tracker.active and newest.stamp_ns != self._last_tracked_ns):
            # Only the newest frame is tracked: when inference cannot keep up, the frames in
            # between are skipped, never queued.
            return newest, ready
        return None

    def _wanted_outputs(self, request: PromptRequest | None) -> dict[str, bool]:
        refined = (
            self._refined_pub is not None
            and (request is None or request.source == "detections")
            and self._refined_pub.get_subscription_count() > 0
        )
        return {
            "masks": self._masks_pub.get_subscription_count() > 0,
            "mask_image": self._mask_image_pub.get_subscription_count() > 0,
            "overlay": self._overlay_pub.get_subscription_count() > 0,
            "detections_refined": refined,
        }

    def _process(self, frame: Frame, request: PromptRequest) -> None:
        wanted = self._wanted_outputs(request)
        if not any(wanted.values()):
            return  # nobody listens: nothing is computed
        started = time.perf_counter()
        self._prepare(frame)
        prompts = self._valid_prompts(frame, request.prompts)
        results: list[PromptMask] = []
        if prompts:
            decode_started = time.perf_counter()
            results = decode_prompts(self.segmenter, frame.embedding, prompts)
            self._record("decode", (time.perf_counter() - decode_started) * 1e3)
        self._publish(frame, results, wanted, started)

    def _prepare(self, frame: Frame, encode: bool = True) -> None:
        """Decode the image buffer and run the encoder, each at most once per frame."""
        if frame.decoded is None:
            frame.decoded = conversions.decode_image_message(frame.payload)
        if encode and frame.embedding is None:
            frame.embedding = self.segmenter.encode(
                frame.decoded.pixels, frame.decoded.channel_order
            )
            self._record("preprocess", self.segmenter.timings.preprocess_ms)
            self._record("encode", self.segmenter.timings.encode_ms)
            with self._stats_lock:
                self._totals["images encoded"] += 1

    def _flow(self, frame: Frame) -> FlowFrame:
        if frame.flow is None:
            self._prepare(frame, encode=False)
            frame.flow = FlowFrame.from_image(frame.decoded.pixels, frame.decoded.channel_order)
        return frame.flow

    def _process_tracking(self, frame: Frame, ready: list[tuple[Frame, PromptRequest]]) -> None:
        """Fresh prompts and live tracks on the newest frame, decoded together."""
        wanted = self._wanted_outputs(None)
        if not any(wanted.values()):
            return
        started = time.perf_counter()
        self._prepare(frame)
        fresh: list[Prompt] = []
        for source_frame, request in ready:
            if source_frame is not frame:
                self._prepare(source_frame, encode=False)
            prompts = self._valid_prompts(source_frame, request.prompts)
            if source_frame is not frame and prompts:
                # Detections of an older frame (a slow detector): moved to this frame by the
                # optical flow between the two cached images before they meet the tracks.
                prompts = self._move_prompts(source_frame, frame, prompts)
            fresh.extend(prompts)
        decode_started = time.perf_counter()
        embedding = frame.embedding
        results = self.tracker.step(
            self._flow(frame),
            frame.stamp_ns / 1e9,
            fresh,
            lambda planned: decode_track_prompts(self.segmenter, embedding, planned),
        )
        self._record("decode", (time.perf_counter() - decode_started) * 1e3)
        self._last_tracked_ns = frame.stamp_ns
        self._publish(frame, results, wanted, started)

    def _move_prompts(self, source: Frame, target: Frame, prompts: list[Prompt]) -> list[Prompt]:
        before, after = self._flow(source), self._flow(target)
        if before.size != after.size:
            return prompts
        height, width = before.size
        regions = []
        for prompt in prompts:
            if prompt.box is not None:
                regions.append(prompt.box)
            else:
                xs, ys = zip(*prompt.points, strict=True)
                regions.append((min(xs) - 20, min(ys) - 20, max(xs) + 20, max(ys) + 20))
        masks = []
        for x0, y0, x1, y1 in regions:
            mask = np.zeros((height, width), bool)
            mask[max(int(y0), 0) : int(y1) + 1, max(int(x0), 0) : int(x1) + 1] = True
            masks.append(mask)
        moved = []
        for prompt, motion in zip(
            prompts, estimate_motions(before, after, masks, regions), strict=True
        ):
            if not motion.reliable:
                moved.append(prompt)
                continue
            box = motion.apply(prompt.box) if prompt.box is not None else None
            points = tuple(motion.apply((x, y, x, y))[:2] for x, y in prompt.points)
            moved.append(dataclasses.replace(prompt, box=box, points=points))
        return moved

    def _publish(
        self, frame: Frame, results: list[PromptMask], wanted: dict[str, bool], started: float
    ) -> None:
        publish_started = time.perf_counter()
        header = frame.payload.header
        if wanted["masks"]:
            self._masks_pub.publish(conversions.instance_mask_array(header, results))
        if wanted["mask_image"]:
            self._mask_image_pub.publish(self._label_image_message(header, frame, results))
        if wanted["overlay"]:
            self._overlay_pub.publish(self._overlay_message(header, frame, results))
        if wanted["detections_refined"]:
            self._refined_pub.publish(
                conversions.refined_detections(header, results, (Detection2DArray, Detection2D))
            )
        now = time.perf_counter()
        self._record("publish", (now - publish_started) * 1e3)
        self._record("total", (now - started) * 1e3)
        stamp_age = self.get_clock().now().nanoseconds - frame.stamp_ns
        self._record("stamp_to_publish", stamp_age / 1e6)
        self._count("mask_messages_out")
        with self._stats_lock:
            self._totals["prompt messages answered"] += 1

    def _valid_prompts(self, frame: Frame, prompts: Any) -> list[Prompt]:
        valid = []
        geometry = FrameGeometry.for_image(*frame.decoded.pixels.shape[:2])
        for index, prompt in enumerate(prompts):
            try:
                if prompt.box is None and not prompt.points:
                    raise InvalidInputError("neither a box nor points")
                boxes = [prompt.box] if prompt.box is not None else None
                points = [prompt.points] if prompt.points else None
                labels = [prompt.point_labels] if prompt.points else None
                encode_prompts(geometry, boxes, points, labels)
            except InvalidInputError as exc:
                self._reject(PROMPTS_REJECTED, f"prompt {prompt.id or index!r} rejected: {exc}")
                continue
            valid.append(prompt)
        return valid

    def _label_image_message(self, header: Any, frame: Frame, results: list[PromptMask]) -> Image:
        labels = label_image(
            [r.mask for r in results],
            [r.predicted_iou for r in results],
            frame.embedding.original_size,
        )
        encoding = "mono8" if labels.dtype.itemsize == 1 else "mono16"
        return conversions.image_message(header, labels, encoding)

    def _overlay_message(self, header: Any, frame: Frame, results: list[PromptMask]) -> Image:
        boxes = None
        if self._param("overlay.draw_boxes"):
            boxes = [r.prompt.box for r in results]
        captions = None
        if self._param("overlay.draw_labels"):
            captions = [
                " ".join(x for x in (r.prompt.id, r.prompt.class_id) if x)
                + f" {r.predicted_iou:.2f}"
                for r in results
            ]
        masks = [r.mask for r in results]
        bgr = frame.decoded.to_bgr()
        overlay = draw_overlay(bgr, masks, boxes, captions, alpha=self._param("overlay.alpha"))
        return conversions.image_message(header, overlay, "bgr8")

    # -- diagnostics -----------------------------------------------------------------------

    def _reject(self, counter: str, message: str, count: int = 1) -> None:
        now = time.monotonic()
        with self._stats_lock:
            self._counters[counter] += count
            total = self._counters[counter]
            warn = now - self._last_warning.get(counter, -1e9) >= WARN_PERIOD_S
            if warn:
                self._last_warning[counter] = now
        if warn:
            self.get_logger().warning(f"{message} (counter {counter}: {total})")

    def _record(self, stage: str, milliseconds: float) -> None:
        with self._stats_lock:
            self._stage_ms.setdefault(stage, []).append(milliseconds)

    def _count(self, rate: str) -> None:
        with self._stats_lock:
            self._rates[rate] += 1

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        period = max(now - self._diagnostics_started, 1e-6)
        self._diagnostics_started = now
        with self._stats_lock:
            stages, self._stage_ms = self._stage_ms, {}
            rates, self._rates = self._rates, Counter()
            totals = Counter(self._totals)
            counters = Counter(self._counters)
        with self._condition:
            counters.update(self.sync.dropped)
            waiting = len(self.sync.pending)
            cached = len(self.sync.frames)
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: segmentation"
        status.hardware_id = self.segmenter.backend.describe()
        status.level = DiagnosticStatus.OK
        status.message = "running"
        values = [
            KeyValue(key=f"{name} rate (Hz)", value=f"{count / period:.2f}")
            for name, count in sorted(rates.items())
        ]
        for stage, samples in sorted(stages.items()):
            values.append(
                KeyValue(key=f"{stage} mean (ms)", value=f"{sum(samples) / len(samples):.1f}")
            )
            values.append(KeyValue(key=f"{stage} max (ms)", value=f"{max(samples):.1f}"))
        for name, count in sorted(totals.items()):
            values.append(KeyValue(key=f"{name} (total)", value=str(count)))
        values.append(KeyValue(key="prompt messages waiting", value=str(waiting)))
        values.append(KeyValue(key="images cached", value=str(cached)))
        for name, count in sorted(counters.items()):
            values.append(KeyValue(key=name, value=str(count)))
        if getattr(self, "_last_counters", None) not in (None, counters) and counters:
            status.level = DiagnosticStatus.WARN
            status.message = "inputs dropped or rejected since the last report"
        self._last_counters = counters
        status.values = values
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diagnostics_pub.publish(array)

    def stop(self, timeout: float = 1.5) -> bool:
        """Stop the worker; True if it finished within `timeout` seconds."""
        self._stopping.set()
        with self._condition:
            self._condition.notify_all()
        self._worker.join(timeout)
        return not self._worker.is_alive()


def _check_value(spec: ParameterSpec, value: Any) -> str | None:
    if spec.choices and value not in spec.choices:
        return (
            f"parameter {spec.name} = {value!r} is not accepted; "
            f"accepted values: {', '.join(spec.choices)}"
        )
    if spec.min_value is not None and not (spec.min_value <= value <= spec.max_value):
        return (
            f"parameter {spec.name} = {value!r} is out of range "
            f"[{spec.min_value}, {spec.max_value}]"
        )
    if spec.name == "device" and not (
        value in ("auto", "cpu", "cuda") or str(value).startswith("cuda:")
    ):
        return f"parameter device = {value!r} is not accepted; accepted: auto, cpu, cuda, cuda:N"
    return None


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = SegmentationNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MobileSamError as exc:
        print(f"[{NODE_NAME}] error: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    finally:
        if node is not None:
            finished = node.stop()
            node.destroy_node()
            rclpy.try_shutdown()
            if not finished:
                # An inference is still running in native code; it cannot be interrupted and
                # holds no state worth saving, so leave without waiting for it.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
