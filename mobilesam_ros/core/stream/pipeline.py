"""The pipeline: camera streams and on-demand requests in, one model, one worker.

ROS-free. Producers (the node's callbacks) call `add_frame`, `add_request` and `submit` from any
thread; one worker calls `process_next` in a loop. The worker serves the streams and the
on-demand requests in turn (round robin: none starves), one job at a time, with the one
Segmenter they share. Between jobs it applies queued settings, so a parameter change never lands
in the middle of a frame. A stream job's result is returned for publishing; an on-demand
request's reply goes to its own future.

Time: `clock` (monotonic seconds) paces waiting prompts; tracks age by image stamps.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.everything import everything_prompt_masks, segment_everything
from mobilesam_ros.core.processing.image_codec import DecodedImage
from mobilesam_ros.core.prompts import decode_prompts
from mobilesam_ros.core.segmenter import Segmenter
from mobilesam_ros.core.settings import NodeSettings
from mobilesam_ros.core.stream.failures import (
    ERROR_AFTER_FAILURES,
    IMAGES_REJECTED,
    INFERENCE_STAGES,
    PROMPTS_OVER_LIMIT,
    STAGE_DECODE_PROMPTS,
    STAGE_IMAGE_DECODE,
    FailureLog,
    StageError,
    failure_counter,
    stage,
)
from mobilesam_ros.core.stream.frame_sync import Frame, PromptRequest
from mobilesam_ros.core.stream.requests import PendingRequest, SegmentReply, SegmentRequest
from mobilesam_ros.core.stream.stream import (
    DROP_WHILE_LOADING,
    PROMPTS_WHILE_LOADING,
    FrameResult,
    Stream,
    prompt_problem,
)

_log = logging.getLogger(__name__)

# The turns of the on-demand requests and of segment everything among the streams' names.
_REQUESTS = object()
_EVERYTHING = object()
# On-demand requests waiting at most; more are refused at once.
MAX_PENDING_REQUESTS = 16


class StreamPipeline:
    """Streams (one per camera, by name), on-demand requests, one worker (module docstring).

    Args:
      decode_image: turns a frame's payload (e.g. a ROS message) into pixels.
      settings: the settings of every stream (sync, tracking, decode).
      streams: the streams' names; "" is a node's single camera.
      segmenter: encodes and decodes; may be attached later (`attach`) so a node can take
        inputs while its model loads.
      anyone_listening: whether a stream's outputs have a subscriber now; frames chosen while
        they have none are handled without inference (tracks still age out).
      everything_listening: whether a stream's everything outputs have a subscriber now: with
        everything.max_rate > 0, its newest frame is then segmented whole at that rate at most,
        in a turn of its own among the streams' (a long job on a CPU: the cameras wait).
    """

    def __init__(
        self,
        decode_image: Callable[[Any], DecodedImage],
        settings: NodeSettings | None = None,
        streams: Iterable[str] = ("",),
        segmenter: Segmenter | None = None,
        anyone_listening: Callable[[str], bool] = lambda stream: True,
        everything_listening: Callable[[str], bool] = lambda stream: False,
        clock: Callable[[], float] = time.monotonic,
        failures: FailureLog | None = None,
    ) -> None:
        self.settings = settings or NodeSettings()
        self._anyone_listening = anyone_listening
        self._everything_listening = everything_listening
        self._clock = clock
        self.failures = failures or FailureLog(clock=clock)
        self.segmenter = segmenter
        self._condition = threading.Condition()
        self.streams = {
            name: Stream(name, decode_image, self.settings, self.failures, self._condition)
            for name in streams
        }
        self._turns: deque[Any] = deque([*self.streams, _REQUESTS, _EVERYTHING])
        self._everything_next = dict.fromkeys(self.streams, -float("inf"))  # clock seconds
        self._requests: deque[PendingRequest] = deque()
        self._pending_settings: NodeSettings | None = None
        self._totals: Counter[str] = Counter()
        self._inference_failures_in_a_row = 0
        self._said_loading = False  # prompts while loading: said once per load

    # -- producers: any thread -------------------------------------------------------------

    def attach(self, segmenter: Segmenter) -> None:
        """Start inference with `segmenter` (a model loaded in the background)."""
        with self._condition:
            segmenter.mask_threshold = float(self.settings.decode.mask_threshold)
            self.segmenter = segmenter
            self._said_loading = False
            self._condition.notify()

    def detach(self) -> None:
        """Stop inference and release the model (inputs arriving now count as during loading)."""
        with self._condition:
            self.segmenter = None

    def add_frame(self, frame: Frame, stream: str = "") -> None:
        with self._condition:
            self.streams[stream].add_frame(frame, loading=self.segmenter is None)
            self._condition.notify()

    def add_request(self, request: PromptRequest, stream: str = "") -> None:
        """Queue prompts for their frame; prompts beyond `max_prompts` are dropped and counted.
        Prompts that come while the model loads wait like any others (sync.max_wait) and are
        dropped as DROP_WHILE_LOADING when the wait ends first; that is said once per load."""
        with self._condition:
            loading = self.segmenter is None
            if loading:
                self._totals[PROMPTS_WHILE_LOADING] += 1
                say_it, self._said_loading = not self._said_loading, True
            limit = self.settings.decode.max_prompts
        if loading and say_it:
            _log.warning(
                "prompts arrive while the model is loading: answered if it is ready within "
                "sync.max_wait (%.2f s), else dropped and counted as '%s'",
                self.settings.sync.max_wait,
                DROP_WHILE_LOADING,
            )
        if len(request.prompts) > limit:
            self.failures.report(
                PROMPTS_OVER_LIMIT,
                f"{len(request.prompts)} prompts in one message; answering the first {limit} "
                "(parameter max_prompts)",
                count=len(request.prompts) - limit,
            )
            request = dataclasses.replace(request, prompts=request.prompts[:limit])
        with self._condition:
            self.streams[stream].sync.add_request(request)
            self._condition.notify()

    def submit(self, request: SegmentRequest) -> Future[SegmentReply]:
        """Queue an on-demand request; its reply (or error) arrives through the future."""
        pending = PendingRequest(request)
        with self._condition:
            if request.image is None and request.stream not in self.streams:
                pending.reply.set_exception(
                    InvalidInputError(
                        f"no stream {request.stream!r}; streams: {list(self.streams)}"
                    )
                )
            elif len(self._requests) >= MAX_PENDING_REQUESTS:
                pending.reply.set_exception(
                    InvalidInputError(f"{MAX_PENDING_REQUESTS} requests wait already; try again")
                )
            else:
                self._requests.append(pending)
                self._condition.notify()
        return pending.reply

    def configure(self, settings: NodeSettings) -> None:
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
            for stream in self.streams.values():
                counts.update(stream.counters())
        return counts

    def totals(self) -> Counter[str]:
        with self._condition:
            totals = Counter(self._totals)
            for stream in self.streams.values():
                totals.update(stream.totals)
        return totals

    def queue_sizes(self) -> tuple[int, int]:
        """(prompt messages waiting, images cached) over every stream."""
        with self._condition:
            syncs = [stream.sync for stream in self.streams.values()]
            return sum(len(s.pending) for s in syncs), sum(len(s.frames) for s in syncs)

    def stream_report(self, name: str) -> tuple[Counter[str], Counter[str], int, int]:
        """One stream's (totals, drops and track endings, prompt messages waiting, images
        cached)."""
        with self._condition:
            stream = self.streams[name]
            return (
                Counter(stream.totals),
                stream.counters(),
                len(stream.sync.pending),
                len(stream.sync.frames),
            )

    @property
    def failing(self) -> bool:
        """True after ERROR_AFTER_FAILURES inference failures in a row."""
        return self._inference_failures_in_a_row >= ERROR_AFTER_FAILURES

    # -- the worker: one thread ------------------------------------------------------------

    def process_next(self, timeout: float = 0.1) -> FrameResult | None:
        """Run the next job, or wait up to `timeout` seconds for one; None when there is
        nothing to publish (no job, an on-demand request, nobody listening, or a failure:
        counted and logged)."""
        job = self._take_job(timeout)
        return None if job is None else self._run(*job)

    def process_ready(self) -> list[FrameResult]:
        """Run every job that is ready at the clock's present time, without waiting: for a
        driver that owns the clock (a recording's time), one call per step of it."""
        results = []
        while (job := self._take_job(0)) is not None:
            result = self._run(*job)
            if result is not None:
                results.append(result)
        return results

    def _take_job(self, timeout: float) -> tuple[Any, Any, Segmenter] | None:
        with self._condition:
            if self._pending_settings is not None:
                self._apply(self._pending_settings)
                self._pending_settings = None
            job = self._next_job(self._clock())
            if job is None:
                if timeout > 0:
                    self._condition.wait(self._wait_time(timeout))
                return None
            return (*job, self.segmenter)

    def _run(self, turn: Any, work: Any, segmenter: Segmenter) -> FrameResult | None:
        if turn is _REQUESTS:
            self._answer(work, segmenter)
            return None
        if turn is _EVERYTHING:
            return self._everything(*work, segmenter)
        stream = self.streams[turn]
        try:
            result = stream.run(work, segmenter, self._anyone_listening(turn))
        except StageError as failure:
            self._count_failure(failure)
            return None
        if result is not None:
            self._inference_failures_in_a_row = 0
        return result

    def _apply(self, settings: NodeSettings) -> None:
        if self.segmenter is not None:
            self.segmenter.mask_threshold = float(settings.decode.mask_threshold)
        for stream in self.streams.values():
            stream.apply(settings)
        self.settings = settings

    def _next_job(self, now: float) -> tuple[Any, Any] | None:
        """The next turn with work, round robin; while loading, waiting prompts only expire."""
        if self.segmenter is None:
            for stream in self.streams.values():
                stream.sync.expire(now, DROP_WHILE_LOADING)
            return None
        for _ in range(len(self._turns)):
            turn = self._turns[0]
            self._turns.rotate(-1)
            if turn is _REQUESTS:
                if self._requests:
                    return turn, self._requests.popleft()
                continue
            if turn is _EVERYTHING:
                due = self._everything_due(now)
                if due is not None:
                    return turn, due
                continue
            job = self.streams[turn].next_job(now)
            if job is not None:
                return turn, job
        return None

    def _everything_due(self, now: float) -> tuple[str, Frame] | None:
        """The stream whose segment-everything turn is most overdue, with its newest frame."""
        rate = self.settings.everything.max_rate
        if rate <= 0:
            return None
        for name in sorted(self.streams, key=self._everything_next.__getitem__):
            frame = self.streams[name].sync.newest
            if now < self._everything_next[name] or frame is None:
                continue
            if not self._everything_listening(name):
                continue
            self._everything_next[name] = now + 1.0 / rate
            return name, frame
        return None

    def _everything(self, name: str, frame: Frame, segmenter: Segmenter) -> FrameResult | None:
        """Every mask of a stream's frame, for its everything outputs; tracks are untouched."""
        stream = self.streams[name]
        result = FrameResult(frame, [], ("everything",), self.settings, name, everything=True)
        result.started = time.perf_counter()
        try:
            stream.encode(frame, segmenter)
            with stage(STAGE_DECODE_PROMPTS):
                image = frame.decoded
                masks = segment_everything(
                    segmenter,
                    image.pixels,
                    self.settings.everything,
                    image.channel_order,
                    frame.embedding,
                )
        except StageError as failure:
            self._count_failure(failure)
            return None
        result.instances = everything_prompt_masks(masks)
        result.stage_ms["everything"] = (time.perf_counter() - result.started) * 1e3
        return result

    def _wait_time(self, timeout: float) -> float:
        deadlines = [s.sync.next_deadline() for s in self.streams.values()]
        deadline = min((d for d in deadlines if d is not None), default=None)
        if deadline is None:
            return timeout
        return min(max(deadline - self._clock(), 0.001), timeout)

    def _answer(self, pending: PendingRequest, segmenter: Segmenter) -> None:
        """An on-demand request: its image or cached frame, encoded at most once, its prompts
        decoded; the stream's tracks are not touched."""
        request = pending.request
        try:
            frame, stream = self._request_frame(request)
            if stream is not None:
                stream.encode(frame, segmenter)
            else:
                frame.embedding = segmenter.encode(
                    frame.decoded.pixels, frame.decoded.channel_order
                )
            for index, prompt in enumerate(request.prompts):
                problem = prompt_problem(frame.decoded, prompt)
                if problem:
                    raise InvalidInputError(f"prompt {prompt.id or index!r}: {problem}")
            instances = decode_prompts(
                segmenter, frame.embedding, request.prompts, low_res_logits=False
            )
            if request.everything:
                pixels = frame.decoded
                instances += everything_prompt_masks(
                    segment_everything(
                        segmenter,
                        pixels.pixels,
                        self.settings.everything,
                        pixels.channel_order,
                        frame.embedding,
                    )
                )
        except StageError as failure:
            pending.reply.set_exception(failure.cause)
        except Exception as exc:
            pending.reply.set_exception(exc)
        else:
            pending.reply.set_result(
                SegmentReply(instances, frame.decoded, frame.stamp_ns, frame.frame_id)
            )

    def _request_frame(self, request: SegmentRequest) -> tuple[Frame, Stream | None]:
        if request.image is not None:
            frame = Frame(request.stamp_ns, "", None, self._clock())
            frame.decoded = request.image
            return frame, None
        stream = self.streams[request.stream]
        with self._condition:
            frames = stream.sync.frames
            frame = frames.get(request.stamp_ns) if request.stamp_ns else stream.sync.newest
            if frame is None:
                cached = f"{len(frames)} cached" + (
                    f", stamps {next(iter(frames))} to {next(reversed(frames))} ns"
                    if frames
                    else ""
                )
                raise InvalidInputError(
                    f"no cached image with stamp {request.stamp_ns} ns ({cached})"
                    if request.stamp_ns
                    else "no image received yet"
                )
        return frame, stream

    def _count_failure(self, failure: StageError) -> None:
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
