"""One camera's stream: its frame cache and prompt matching, its tracker, its totals.

ROS-free. The pipeline (`pipeline.py`) owns the streams and the one worker; producers reach a
stream only through the pipeline's lock, and only the worker runs a stream's jobs. Every frame
a job takes is marked handled when it is chosen, whatever happens next, so no frame is chosen
twice and an idle stream costs no CPU.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.image_codec import DecodedImage
from mobilesam_ros.core.processing.preprocess import FrameGeometry, encode_prompts
from mobilesam_ros.core.prompts import Prompt, PromptMask, decode_prompts
from mobilesam_ros.core.segmenter import Segmenter
from mobilesam_ros.core.settings import NodeSettings
from mobilesam_ros.core.stream.detections import DETECTOR_SOURCES, detection_prompts
from mobilesam_ros.core.stream.failures import (
    PROMPTS_REJECTED,
    STAGE_DECODE_PROMPTS,
    STAGE_ENCODE,
    STAGE_IMAGE_DECODE,
    STAGE_TRACKING,
    FailureLog,
    StageError,
    stage,
)
from mobilesam_ros.core.stream.flow import FlowFrame
from mobilesam_ros.core.stream.frame_sync import Frame, FrameSync, PromptRequest
from mobilesam_ros.core.stream.prompt_motion import move_prompts
from mobilesam_ros.core.stream.tracking import Tracker, decode_track_prompts

# Totals of work done (diagnostics keys, "(total)" appended there).
IMAGES_RECEIVED = "images received"
IMAGES_ENCODED = "images encoded"
IMAGES_SKIPPED = "images skipped"  # chosen while nobody listened: handled without inference
IMAGES_WHILE_LOADING = "images received while the model loaded"
PROMPT_MESSAGES_ANSWERED = "prompt messages answered"
PROMPTS_WHILE_LOADING = "prompt messages received while the model loaded"
# Drop counter: prompts whose sync.max_wait ended before the model was ready.
DROP_WHILE_LOADING = "prompts_timed_out_while_the_model_loaded"


@dataclass
class FrameResult:
    """One answered frame of a stream: its instances (one per prompt, or per live track with
    tracking), and the settings in force for it (its outputs are drawn with them)."""

    frame: Frame
    instances: list[PromptMask]
    sources: tuple[str, ...]  # sources of the prompt requests answered; () for tracking only
    settings: NodeSettings = field(default_factory=NodeSettings)
    stream: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)
    started: float = 0.0  # time.perf_counter() when the job began
    everything: bool = False  # segment everything's masks (everything/ outputs), no tracking

    @property
    def decoded(self) -> DecodedImage:
        return self.frame.decoded


@dataclass(frozen=True)
class Job:
    frame: Frame
    ready: list[tuple[Frame, PromptRequest]]  # requests answered on `frame` (their own frames)


class Stream:
    """One camera (see the module docstring).

    Args:
      name: the stream's name (a camera's; "" for a node's single camera).
      decode_image: turns a frame's payload (e.g. a ROS message) into pixels; called by the
        worker at most once per frame, only for frames it uses.
      settings: sync, tracking and decode settings of this stream.
      failures: where rejected prompts and failures are counted.
      lock: the pipeline's lock (reentrant), under which the worker updates the totals that
        other threads read.
    """

    def __init__(
        self,
        name: str,
        decode_image: Callable[[Any], DecodedImage],
        settings: NodeSettings,
        failures: FailureLog,
        lock: threading.Condition,
    ) -> None:
        self.name = name
        self._lock = lock
        self._decode_image = decode_image
        self.failures = failures
        sync = settings.sync
        self.sync = FrameSync(sync.policy, sync.max_offset, sync.max_wait, sync.cache_size)
        self.tracker = (
            Tracker(settings.tracking, id_prefix=f"{name}/" if name else "")
            if settings.tracking.enabled
            else None
        )
        self.settings = settings
        self.totals: Counter[str] = Counter()
        self.track_endings: Counter[str] = Counter()  # the tracker's counts, copied by the worker
        self._last_job_stamp: int | None = None

    # -- under the pipeline's lock ---------------------------------------------------------

    def apply(self, settings: NodeSettings) -> None:
        """New settings for the next job (the cache size and tracking on/off stay)."""
        self.sync.configure(settings.sync.policy, settings.sync.max_offset, settings.sync.max_wait)
        if self.tracker is not None:
            self.tracker.configure(settings.tracking)
        self.settings = settings

    def add_frame(self, frame: Frame, loading: bool) -> None:
        self.totals[IMAGES_RECEIVED] += 1
        if loading:
            self.totals[IMAGES_WHILE_LOADING] += 1
        self.sync.add_frame(frame)

    def next_job(self, now: float) -> Job | None:
        """Without tracking: one ready request on its frame. With tracking: the newest frame,
        with every ready request, when prompts are ready or tracks live and it is new. Only
        the newest frame is tracked: when inference falls behind, frames are skipped, never
        queued."""
        if self.tracker is None:
            ready = self.sync.pop_ready(now)
            return None if ready is None else Job(ready[0], [ready])
        ready = self.sync.pop_all_ready(now)
        newest = self.sync.newest
        if newest is None:
            return None
        if ready or (self.tracker.active and newest.stamp_ns != self._last_job_stamp):
            self._last_job_stamp = newest.stamp_ns  # handled from here on, whatever happens
            return Job(newest, ready)
        return None

    def counters(self) -> Counter[str]:
        return self.sync.dropped + self.track_endings

    # -- the worker only -------------------------------------------------------------------

    def run(self, job: Job, segmenter: Segmenter, listening: bool) -> FrameResult | None:
        """The job's instances; None when nobody listens. Raises StageError."""
        try:
            return self._run(job, segmenter, listening)
        finally:
            if self.tracker is not None:
                with self._lock:
                    self.track_endings = Counter(self.tracker.counts)

    def _run(self, job: Job, segmenter: Segmenter, listening: bool) -> FrameResult | None:
        frame = job.frame
        if not listening:
            self._count(IMAGES_SKIPPED)
            if self.tracker is not None:
                self.tracker.expire(frame.stamp_ns / 1e9)
            return None
        sources = tuple(r.source for _, r in job.ready)
        result = FrameResult(frame, [], sources, self.settings, self.name)
        result.started = time.perf_counter()
        encoded_now = self.encode(frame, segmenter)
        fresh = self._fresh_prompts(frame, job.ready)
        decode_started = time.perf_counter()
        if self.tracker is None:
            with stage(STAGE_DECODE_PROMPTS):
                result.instances = decode_prompts(
                    segmenter, frame.embedding, fresh, low_res_logits=False
                )
        else:
            with stage(STAGE_TRACKING):
                result.instances = self.tracker.step(
                    self._flow(frame),
                    frame.stamp_ns / 1e9,
                    fresh,
                    self._decode_planned(segmenter, frame),
                )
        result.stage_ms["decode"] = (time.perf_counter() - decode_started) * 1e3
        if encoded_now:
            # Read after the decode: on a GPU the encoder runs asynchronously and its CUDA-event
            # times are known only once the frame's transfer has waited for them.
            result.stage_ms["preprocess"] = segmenter.timings.preprocess_ms
            result.stage_ms["encode"] = segmenter.timings.encode_ms
        if job.ready:
            self._count(PROMPT_MESSAGES_ANSWERED, len(job.ready))
        return result

    def encode(self, frame: Frame, segmenter: Segmenter) -> bool:
        """Decode and encode `frame` unless done before; True when encoded now."""
        self.decoded(frame)
        if frame.embedding is not None:
            return False
        with stage(STAGE_ENCODE):
            frame.embedding = segmenter.encode(frame.decoded.pixels, frame.decoded.channel_order)
        self._count(IMAGES_ENCODED)
        return True

    def _count(self, total: str, count: int = 1) -> None:
        with self._lock:
            self.totals[total] += count

    def _decode_planned(
        self, segmenter: Segmenter, frame: Frame
    ) -> Callable[[Sequence[Any]], list[PromptMask]]:
        def decode(planned: Sequence[Any]) -> list[PromptMask]:
            with stage(STAGE_DECODE_PROMPTS):
                return decode_track_prompts(segmenter, frame.embedding, planned)

        return decode

    def _fresh_prompts(
        self, frame: Frame, ready: list[tuple[Frame, PromptRequest]]
    ) -> list[Prompt]:
        """The valid prompts of every ready request, moved onto `frame` when they were given
        for an older one (a slow detector)."""
        fresh: list[Prompt] = []
        for source_frame, request in ready:
            image = self.decoded(source_frame)
            prompts = request.prompts
            if request.source in DETECTOR_SOURCES:
                left_out: Counter[str] = Counter()
                prompts = detection_prompts(
                    prompts,
                    image.pixels.shape[:2],
                    self.settings.detections,
                    left_out,
                    network_space=DETECTOR_SOURCES[request.source],
                )
                with self._lock:
                    self.totals.update(left_out)
            prompts = self.valid_prompts(source_frame, prompts)
            if source_frame is not frame and prompts:
                with stage(STAGE_TRACKING):
                    prompts = move_prompts(self._flow(source_frame), self._flow(frame), prompts)
            fresh.extend(prompts)
        return fresh

    def valid_prompts(self, frame: Frame, prompts: Sequence[Prompt]) -> list[Prompt]:
        """`prompts` that can be decoded on `frame`; the others are rejected and counted."""
        valid = []
        for index, prompt in enumerate(prompts):
            problem = prompt_problem(frame.decoded, prompt)
            if problem:
                self.failures.report(
                    PROMPTS_REJECTED, f"prompt {prompt.id or index!r} rejected: {problem}"
                )
                continue
            valid.append(prompt)
        return valid

    def decoded(self, frame: Frame) -> DecodedImage:
        """The frame's pixels, decoded once; a bad image raises StageError."""
        if frame.decoded is None:
            try:
                frame.decoded = self._decode_image(frame.payload)
            except Exception as exc:
                raise StageError(STAGE_IMAGE_DECODE, exc) from exc
        return frame.decoded

    def _flow(self, frame: Frame) -> FlowFrame:
        if frame.flow is None:
            decoded = self.decoded(frame)
            frame.flow = FlowFrame.from_image(decoded.pixels, decoded.channel_order)
        return frame.flow


def prompt_problem(image: DecodedImage, prompt: Prompt) -> str | None:
    """Why `prompt` cannot be decoded on `image`, or None."""
    geometry = FrameGeometry.for_image(*image.pixels.shape[:2])
    try:
        if prompt.box is None and not prompt.points:
            raise InvalidInputError("neither a box nor points")
        boxes = [prompt.box] if prompt.box is not None else None
        points = [prompt.points] if prompt.points else None
        labels = [prompt.point_labels] if prompt.points else None
        encode_prompts(geometry, boxes, points, labels)
    except InvalidInputError as exc:
        return str(exc)
    return None
