"""The node's /diagnostics status: health, stage latencies, rates, totals and drop counters."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from mobilesam_ros.core.settings import NodeSettings
from mobilesam_ros.core.stream.frame_sync import DROP_TIMEOUT
from mobilesam_ros.core.stream.pipeline import StreamPipeline
from mobilesam_ros.core.stream.stream import FrameResult

LOST_IMAGES_HINT = (
    "prompts waited for images that never arrived: camera frames are likely lost in transport "
    "(large best-effort images over DDS); see the README section 'Camera frames lost?'"
)


class StageStats:
    """Per-period latency samples and event counts; written by several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, list[float]] = {}
        self._events: Counter[str] = Counter()

    def record(self, stage: str, milliseconds: float) -> None:
        with self._lock:
            self._samples.setdefault(stage, []).append(milliseconds)

    def count(self, event: str) -> None:
        with self._lock:
            self._events[event] += 1

    def published(self, result: FrameResult, started: float, now_ns: int) -> None:
        """A frame's outputs went out: publishing began at `started` (time.perf_counter())."""
        now = time.perf_counter()
        self.record("publish", (now - started) * 1e3)
        self.record("total", (now - result.started) * 1e3)
        self.record("stamp_to_publish", (now_ns - result.frame.stamp_ns) / 1e6)
        self.count("mask_messages_out")

    def take(self) -> tuple[dict[str, list[float]], Counter[str]]:
        """The samples and counts since the last call."""
        with self._lock:
            samples, self._samples = self._samples, {}
            events, self._events = self._events, Counter()
        return samples, events


@dataclass
class Health:
    level: bytes
    message: str


# The lifecycle node's states as /diagnostics reports them (the plain node has none).
LIFECYCLE_MESSAGES = {
    "unconfigured": "unconfigured (lifecycle): configure loads the model",
    "configuring": "loading model",
    "inactive": "inactive (lifecycle): activate to process images",
    "finalized": "finalized (lifecycle)",
}
LOADING_MESSAGE = "loading model"


def health(
    loading_error: str | None,
    model_ready: bool,
    failing: bool,
    seconds_since_image: float | None,
    stale_after: float,
    counters: Counter[str],
    previous_counters: Counter[str] | None,
    lifecycle_state: str | None = None,
) -> Health:
    """The status level and message, most severe first."""
    if loading_error:
        return Health(DiagnosticStatus.ERROR, f"model failed to load: {loading_error}")
    if lifecycle_state in LIFECYCLE_MESSAGES:
        return Health(DiagnosticStatus.OK, LIFECYCLE_MESSAGES[lifecycle_state])
    if failing:
        return Health(DiagnosticStatus.ERROR, "inference fails on every frame; see the log")
    if not model_ready:
        return Health(DiagnosticStatus.OK, LOADING_MESSAGE)
    if seconds_since_image is None or seconds_since_image > stale_after:
        waited = "yet" if seconds_since_image is None else f"for {seconds_since_image:.1f} s"
        return Health(DiagnosticStatus.WARN, f"no image received {waited}")
    if previous_counters is not None and counters != previous_counters:
        if counters[DROP_TIMEOUT] > previous_counters[DROP_TIMEOUT]:
            return Health(DiagnosticStatus.WARN, LOST_IMAGES_HINT)
        return Health(DiagnosticStatus.WARN, "inputs dropped or rejected since the last report")
    return Health(DiagnosticStatus.OK, "ready")


class NodeStatus(Protocol):
    """What the report reads from the node's runtime."""

    pipeline: StreamPipeline
    stats: StageStats
    settings: NodeSettings
    loading_error: str | None
    lifecycle_state: str | None  # None: the plain node
    cameras: dict[str, Any]  # CameraTopics (last_image, overlays_skipped) by camera name


class DiagnosticsReport:
    """The node's status in /diagnostics, every `diagnostics_period` seconds: health, then
    rates, latencies and counters of the period since the last report; with named cameras,
    one status more per camera (`<node>: <camera>`: its images, totals and drops).

    Its timer has a callback group of its own: /diagnostics keeps coming while a multi-threaded
    executor runs a long transition (the lifecycle node's configure loads the model).
    """

    def __init__(self, node: Node, status: NodeStatus) -> None:
        self._node = node
        self._status = status
        self._node_name = node.get_fully_qualified_name()
        self._name = f"{self._node_name}: segmentation"
        self._publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._previous_counters: Counter[str] | None = None
        self._period_started = time.monotonic()
        node.create_timer(
            status.settings.diagnostics.period,
            self.publish,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )

    def publish(self) -> None:
        node_status = self._status
        pipeline, cameras = node_status.pipeline, dict(node_status.cameras)
        now = time.monotonic()
        period = max(now - self._period_started, 1e-6)
        self._period_started = now
        samples, events = node_status.stats.take()
        counters = pipeline.counters()
        waiting, cached = pipeline.queue_sizes()
        segmenter = pipeline.segmenter
        images = [c.last_image for c in cameras.values() if c.last_image is not None]
        last_image = max(images, default=None)
        state = health(
            node_status.loading_error,
            segmenter is not None,
            pipeline.failing,
            None if last_image is None else now - last_image,
            node_status.settings.diagnostics.stale_after,
            counters,
            self._previous_counters,
            node_status.lifecycle_state,
        )
        self._previous_counters = counters
        values = status_values(
            period, samples, events, pipeline.totals(), counters, waiting, cached
        )
        if node_status.lifecycle_state is not None:
            values.append(KeyValue(key="lifecycle state", value=node_status.lifecycle_state))
        if cameras:
            skipped = str(sum(camera.overlays_skipped for camera in cameras.values()))
            values.append(KeyValue(key="overlays skipped by max_rate", value=skipped))
        fallback = getattr(segmenter.backend, "fallback_reason", None) if segmenter else None
        if fallback:
            values.append(KeyValue(key="backend fallback reason", value=fallback))
        status = DiagnosticStatus(
            name=self._name,
            hardware_id=segmenter.backend.describe() if segmenter is not None else "",
            level=state.level,
            message=state.message,
            values=values,
        )
        statuses = [status]
        statuses += [
            self._camera_status(name, camera, now) for name, camera in cameras.items() if name
        ]
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)

    def _camera_status(self, name: str, camera: Any, now: float) -> DiagnosticStatus:
        """One named camera: stale when its images stopped, with its own totals and drops."""
        totals, counters, waiting, cached = self._status.pipeline.stream_report(name)
        stale_after = self._status.settings.diagnostics.stale_after
        last_image = camera.last_image
        level, message = DiagnosticStatus.OK, "receiving images"
        if last_image is None or now - last_image > stale_after:
            waited = "yet" if last_image is None else f"for {now - last_image:.1f} s"
            level, message = DiagnosticStatus.WARN, f"no image received {waited}"
        values = [KeyValue(key=f"{k} (total)", value=str(v)) for k, v in sorted(totals.items())]
        values.append(KeyValue(key="prompt messages waiting", value=str(waiting)))
        values.append(KeyValue(key="images cached", value=str(cached)))
        values.append(
            KeyValue(key="overlays skipped by max_rate", value=str(camera.overlays_skipped))
        )
        values += [KeyValue(key=k, value=str(v)) for k, v in sorted(counters.items())]
        return DiagnosticStatus(
            name=f"{self._node_name}: {name}", level=level, message=message, values=values
        )


def status_values(
    period: float,
    samples: dict[str, list[float]],
    events: Counter[str],
    totals: Counter[str],
    counters: Counter[str],
    waiting: int,
    cached: int,
) -> list[KeyValue]:
    values = [
        KeyValue(key=f"{name} rate (Hz)", value=f"{count / period:.2f}")
        for name, count in sorted(events.items())
    ]
    for stage, stage_samples in sorted(samples.items()):
        mean = sum(stage_samples) / len(stage_samples)
        values.append(KeyValue(key=f"{stage} mean (ms)", value=f"{mean:.1f}"))
        values.append(KeyValue(key=f"{stage} max (ms)", value=f"{max(stage_samples):.1f}"))
    values += [KeyValue(key=f"{k} (total)", value=str(v)) for k, v in sorted(totals.items())]
    values.append(KeyValue(key="prompt messages waiting", value=str(waiting)))
    values.append(KeyValue(key="images cached", value=str(cached)))
    values += [KeyValue(key=k, value=str(v)) for k, v in sorted(counters.items())]
    return values
