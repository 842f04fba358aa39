"""The stream pipeline: camera frames and prompt requests in, one result per answered frame out.

ROS-free. Producers (the node's callbacks) call `add_frame` and `add_request` from any thread;
one worker calls `process_next` in a loop. Between jobs the worker applies queued settings, so
a parameter change never lands in the middle of a frame. Every frame the worker takes is marked
handled when it is chosen, whatever happens next (nobody listening, an exception, no
instances), so no frame is ever chosen twice and an idle stream costs no CPU.

Time: `clock` (monotonic seconds) paces waiting prompts; tracks age by image stamps.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.processing.image_codec import DecodedImage
from mobilesam_ros.core.processing.preprocess import FrameGeometry, encode_prompts
from mobilesam_ros.core.prompts import Prompt, PromptMask, decode_prompts
from mobilesam_ros.core.segmenter import Segmenter
from mobilesam_ros.core.settings import TrackingSettings
from mobilesam_ros.core.stream.flow import FlowFrame
from mobilesam_ros.core.stream.frame_sync import Frame, FrameSync, PromptRequest
from mobilesam_ros.core.stream.prompt_motion import move_prompts
from mobilesam_ros.core.stream.tracking import Tracker, decode_track_prompts

_log = logging.getLogger(__name__)

WARN_PERIOD_S = 5.0  # a repeated warning is logged at most once per reason in this period
# Inference failures in a row (no success in between) that turn the health to ERROR.
ERROR_AFTER_FAILURES = 3

# Counter names (diagnostics keys) of inputs rejected and of failures by the stage that raised.
IMAGES_REJECTED = "images_rejected"
PROMPTS_REJECTED = "prompts_rejected"
PROMPTS_OVER_LIMIT = "prompts_over_max_prompts"
STAGE_IMAGE_DECODE = "image_decode"
STAGE_ENCODE = "encode"
STAGE_DECODE_PROMPTS = "decode_prompts"
STAGE_TRACKING = "tracking"
STAGE_PUBLISH = "publish"
INFERENCE_STAGES = (STAGE_ENCODE, STAGE_DECODE_PROMPTS, STAGE_TRACKING)

# Totals of work done (diagnostics keys, "(total)" appended there).
IMAGES_RECEIVED = "images received"
IMAGES_ENCODED = "images encoded"
IMAGES_SKIPPED = "images skipped"  # chosen while nobody listened: handled without inference
IMAGES_WHILE_LOADING = "images received while the model loaded"
PROMPTS_WHILE_LOADING = "prompt messages received while the model loaded"
# Drop counter: prompts whose sync.max_wait ended before the model was ready.
DROP_WHILE_LOADING = "prompts_timed_out_while_the_model_loaded"
PROMPT_MESSAGES_ANSWERED = "prompt messages answered"


def failure_counter(stage: str) -> str:
    return f"{stage}_failures"


@dataclass(frozen=True)
class StreamSettings:
    """What the worker applies between jobs; mirrors the node's parameters of the same names."""

    sync_policy: str = "exact"
    sync_max_offset: float = 0.05
    sync_max_wait: float = 0.5
    max_prompts: int = 100
    mask_threshold: float = 0.0
    tracking_max_age: float = 1.0
    tracking_prompt_max_age: float = 0.0
    tracking_min_iou: float = 0.5
    tracking_iou_match: float = 0.3
    tracking_margin: float = 0.1


@dataclass
class FrameResult:
    """One answered frame: its instances (one per prompt, or per live track with tracking)."""

    frame: Frame
    instances: list[PromptMask]
    sources: tuple[str, ...]  # sources of the prompt requests answered; () for tracking only
    stage_ms: dict[str, float] = field(default_factory=dict)
    started: float = 0.0  # time.perf_counter() when the job began

    @property
    def decoded(self) -> DecodedImage:
        return self.frame.decoded


class FailureLog:
    """Counters of rejected inputs and failures by reason, each logged at most once per period.

    Thread-safe: callbacks and the worker report to one instance.
    """

    def __init__(
        self,
        logger: logging.Logger = _log,
        period: float = WARN_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self.counts: Counter[str] = Counter()

    def report(
        self, reason: str, message: str, count: int = 1, exc: BaseException | None = None
    ) -> None:
        now = self._clock()
        with self._lock:
            self.counts[reason] += count
            total = self.counts[reason]
            due = now - self._last_logged.get(reason, -float("inf")) >= self._period
            if due:
                self._last_logged[reason] = now
        if due:
            self._logger.warning("%s (counter %s: %d)", message, reason, total, exc_info=exc)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


class _StageError(Exception):
    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {cause!r}")
        self.stage = stage
        self.cause = cause


@contextmanager
def _stage(stage: str) -> Iterator[None]:
    """Tag any exception with the stage it came from (InvalidInputError of images stays)."""
    try:
        yield
    except _StageError:
        raise
    except Exception as exc:
        raise _StageError(stage, exc) from exc


@dataclass(frozen=True)
class _Job:
    frame: Frame
    ready: list[tuple[Frame, PromptRequest]]  # requests answered on `frame` (their own frames)


class StreamPipeline:
    """Frame cache, prompt matching, job choice, prompt validation and moving, tracking.

    Args:
      segmenter: encodes images and decodes prompts; may be attached later (`attach`) so a node
        can take frames while its model loads; frames before that are counted and dropped.
      decode_image: turns a frame's payload (e.g. a ROS message) into pixels; called by the
        worker at most once per frame, only for frames it uses.
      tracking: follow instances between prompts (one `Tracker`), else answer prompts only.
      cache_size: frames kept for matching late prompts.
      anyone_listening: whether any output has a subscriber now; frames chosen while it is
        False are handled without inference (tracks still age out).
    """

    def __init__(
        self,
        decode_image: Callable[[Any], DecodedImage],
        settings: StreamSettings = StreamSettings(),
        tracking: bool = True,
        cache_size: int = 30,
        segmenter: Segmenter | None = None,
        anyone_listening: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        failures: FailureLog | None = None,
    ) -> None:
        self._decode_image = decode_image
        self._anyone_listening = anyone_listening
        self._clock = clock
        self.failures = failures or FailureLog(clock=clock)
        self.segmenter = segmenter
        self.sync = FrameSync(
            settings.sync_policy, settings.sync_max_offset, settings.sync_max_wait, cache_size
        )
        self.tracker = Tracker() if tracking else None
        self.settings = settings
        self._apply(settings)
        self._pending_settings: StreamSettings | None = None
        self._condition = threading.Condition()
        self._last_job_stamp: int | None = None
        self._track_endings: Counter[str] = Counter()  # the tracker's counts, copied by the worker
        self._totals: Counter[str] = Counter()
        self._inference_failures_in_a_row = 0
        self._said_loading = False  # prompts while loading: said once per load

    # -- producers: any thread -------------------------------------------------------------

    def attach(self, segmenter: Segmenter) -> None:
        """Start inference with `segmenter` (a model loaded in the background)."""
        with self._condition:
            segmenter.mask_threshold = float(self.settings.mask_threshold)
            self.segmenter = segmenter
            self._said_loading = False
            self._condition.notify()

    def detach(self) -> None:
        """Stop inference and release the model (inputs arriving now count as during loading)."""
        with self._condition:
            self.segmenter = None

    def add_frame(self, frame: Frame) -> None:
        with self._condition:
            self._totals[IMAGES_RECEIVED] += 1
            if self.segmenter is None:
                self._totals[IMAGES_WHILE_LOADING] += 1
            self.sync.add_frame(frame)
            self._condition.notify()

    def add_request(self, request: PromptRequest) -> None:
        """Queue prompts for their frame; prompts beyond `max_prompts` are dropped and counted.
        Prompts that come while the model loads wait like any others (sync.max_wait) and are
        dropped as DROP_WHILE_LOADING when the wait ends first; that is said once per load."""
        with self._condition:
            loading = self.segmenter is None
            if loading:
                self._totals[PROMPTS_WHILE_LOADING] += 1
                say_it, self._said_loading = not self._said_loading, True
        if loading and say_it:
            _log.warning(
                "prompts arrive while the model is loading: answered if it is ready within "
                "sync.max_wait (%.2f s), else dropped and counted as '%s'",
                self.settings.sync_max_wait,
                DROP_WHILE_LOADING,
            )
        limit = self.settings.max_prompts
        if len(request.prompts) > limit:
            self.failures.report(
                PROMPTS_OVER_LIMIT,
                f"{len(request.prompts)} prompts in one message; answering the first {limit} "
                "(parameter max_prompts)",
                count=len(request.prompts) - limit,
            )
            request = dataclasses.replace(request, prompts=request.prompts[:limit])
        with self._condition:
            self.sync.add_request(request)
            self._condition.notify()

    def configure(self, settings: StreamSettings) -> None:
        """Queue new settings; the worker applies them before its next job."""
        with self._condition:
            self._pending_settings = settings
            self._condition.notify()

    def wake(self) -> None:
        """Wake a worker waiting in `process_next` (e.g. to stop it)."""
        with self._condition:
            self._condition.notify_all()

    # -- state for diagnostics -------------------------------------------------------------

    def counters(self) -> Counter[str]:
        """Inputs dropped or rejected, failures and track endings, by reason."""
        counts = self.failures.snapshot()
        with self._condition:
            counts.update(self.sync.dropped)
            counts.update(self._track_endings)
        return counts

    def totals(self) -> Counter[str]:
        with self._condition:
            return Counter(self._totals)

    def queue_sizes(self) -> tuple[int, int]:
        """(prompt messages waiting, images cached)."""
        with self._condition:
            return len(self.sync.pending), len(self.sync.frames)

    @property
    def failing(self) -> bool:
        """True after ERROR_AFTER_FAILURES inference failures in a row."""
        return self._inference_failures_in_a_row >= ERROR_AFTER_FAILURES

    # -- the worker: one thread ------------------------------------------------------------

    def process_next(self, timeout: float = 0.1) -> FrameResult | None:
        """Run the next job, or wait up to `timeout` seconds for one; None when nothing to
        publish (no job, nobody listening, or a failure: counted and logged)."""
        with self._condition:
            if self._pending_settings is not None:
                self._apply(self._pending_settings)
                self._pending_settings = None
            now = self._clock()
            if self.segmenter is None:
                self.sync.expire(now, DROP_WHILE_LOADING)
                job = None
            else:
                job = self._next_job(now)
            if job is None:
                if timeout > 0:
                    self._condition.wait(self._wait_time(timeout))
                return None
        try:
            return self._run(job)
        except _StageError as failure:
            self._count_failure(failure)
            return None
        finally:
            if self.tracker is not None:
                with self._condition:
                    self._track_endings = Counter(self.tracker.counts)

    def _apply(self, settings: StreamSettings) -> None:
        self.sync.configure(settings.sync_policy, settings.sync_max_offset, settings.sync_max_wait)
        if self.segmenter is not None:
            self.segmenter.mask_threshold = float(settings.mask_threshold)
        if self.tracker is not None:
            self.tracker.configure(
                TrackingSettings(
                    max_age=settings.tracking_max_age,
                    prompt_max_age=settings.tracking_prompt_max_age,
                    min_iou=settings.tracking_min_iou,
                    iou_match=settings.tracking_iou_match,
                    margin=settings.tracking_margin,
                )
            )
        self.settings = settings

    def _wait_time(self, timeout: float) -> float:
        deadline = self.sync.next_deadline()
        if deadline is None:
            return timeout
        return min(max(deadline - self._clock(), 0.001), timeout)

    def _next_job(self, now: float) -> _Job | None:
        """Without tracking: one ready request on its frame. With tracking: the newest frame,
        with every ready request, when prompts are ready or tracks live and it is new. Only
        the newest frame is tracked: when inference falls behind, frames are skipped, never
        queued."""
        if self.tracker is None:
            ready = self.sync.pop_ready(now)
            return None if ready is None else _Job(ready[0], [ready])
        ready = self.sync.pop_all_ready(now)
        newest = self.sync.newest
        if newest is None:
            return None
        if ready or (self.tracker.active and newest.stamp_ns != self._last_job_stamp):
            self._last_job_stamp = newest.stamp_ns  # handled from here on, whatever happens
            return _Job(newest, ready)
        return None

    def _run(self, job: _Job) -> FrameResult | None:
        frame = job.frame
        if not self._anyone_listening():
            self._count_total(IMAGES_SKIPPED)
            if self.tracker is not None:
                self.tracker.expire(frame.stamp_ns / 1e9)
            return None
        result = FrameResult(frame, [], tuple(r.source for _, r in job.ready))
        result.started = time.perf_counter()
        self._decoded(frame)
        encoded_now = frame.embedding is None
        with _stage(STAGE_ENCODE):
            if encoded_now:
                frame.embedding = self.segmenter.encode(
                    frame.decoded.pixels, frame.decoded.channel_order
                )
                self._count_total(IMAGES_ENCODED)
        fresh = self._fresh_prompts(frame, job.ready)
        decode_started = time.perf_counter()
        if self.tracker is None:
            with _stage(STAGE_DECODE_PROMPTS):
                result.instances = decode_prompts(
                    self.segmenter, frame.embedding, fresh, low_res_logits=False
                )
        else:
            with _stage(STAGE_TRACKING):
                result.instances = self.tracker.step(
                    self._flow(frame), frame.stamp_ns / 1e9, fresh, self._decode_planned(frame)
                )
        result.stage_ms["decode"] = (time.perf_counter() - decode_started) * 1e3
        if encoded_now:
            # Read after the decode: on a GPU the encoder runs asynchronously and its CUDA-event
            # times are known only once the frame's transfer has waited for them.
            result.stage_ms["preprocess"] = self.segmenter.timings.preprocess_ms
            result.stage_ms["encode"] = self.segmenter.timings.encode_ms
        self._inference_failures_in_a_row = 0
        if job.ready:
            self._count_total(PROMPT_MESSAGES_ANSWERED, len(job.ready))
        return result

    def _decode_planned(self, frame: Frame) -> Callable[[Sequence[Any]], list[PromptMask]]:
        def decode(planned: Sequence[Any]) -> list[PromptMask]:
            with _stage(STAGE_DECODE_PROMPTS):
                return decode_track_prompts(self.segmenter, frame.embedding, planned)

        return decode

    def _fresh_prompts(
        self, frame: Frame, ready: list[tuple[Frame, PromptRequest]]
    ) -> list[Prompt]:
        """The valid prompts of every ready request, moved onto `frame` when they were given
        for an older one (a slow detector)."""
        fresh: list[Prompt] = []
        for source_frame, request in ready:
            self._decoded(source_frame)
            prompts = self.valid_prompts(source_frame, request.prompts)
            if source_frame is not frame and prompts:
                with _stage(STAGE_TRACKING):
                    prompts = move_prompts(self._flow(source_frame), self._flow(frame), prompts)
            fresh.extend(prompts)
        return fresh

    def valid_prompts(self, frame: Frame, prompts: Sequence[Prompt]) -> list[Prompt]:
        """`prompts` that can be decoded on `frame`; the others are rejected and counted."""
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
                self.failures.report(
                    PROMPTS_REJECTED, f"prompt {prompt.id or index!r} rejected: {exc}"
                )
                continue
            valid.append(prompt)
        return valid

    def _decoded(self, frame: Frame) -> DecodedImage:
        """The frame's pixels, decoded once; a bad image is rejected and counted."""
        if frame.decoded is None:
            try:
                frame.decoded = self._decode_image(frame.payload)
            except Exception as exc:
                raise _StageError(STAGE_IMAGE_DECODE, exc) from exc
        return frame.decoded

    def _flow(self, frame: Frame) -> FlowFrame:
        if frame.flow is None:
            decoded = self._decoded(frame)
            frame.flow = FlowFrame.from_image(decoded.pixels, decoded.channel_order)
        return frame.flow

    def _count_total(self, name: str, count: int = 1) -> None:
        with self._condition:
            self._totals[name] += count

    def _count_failure(self, failure: _StageError) -> None:
        if failure.stage == STAGE_IMAGE_DECODE and isinstance(failure.cause, InvalidInputError):
            self.failures.report(IMAGES_REJECTED, f"image rejected: {failure.cause}")
            return
        if failure.stage in INFERENCE_STAGES:
            self._inference_failures_in_a_row += 1
        self.failures.report(
            failure_counter(failure.stage),
            f"{failure.stage} failed: {failure.cause!r}",
            exc=failure.cause,
        )
