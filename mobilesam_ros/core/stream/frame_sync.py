"""Matching prompts to the image they refer to, by stamp, with a short cache of recent images.

ROS-free and single-threaded: the node calls it under its lock; tests drive it with plain
values. Stamps are integer nanoseconds; `now` is a monotonic time in seconds.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mobilesam_ros.core.choices import SYNC_POLICIES, check_choice
from mobilesam_ros.core.errors import InvalidInputError
from mobilesam_ros.core.prompts import Prompt

# Images whose stamps go back further than this are taken as a clock jump (a bag restarted, sim
# time reset): the cache is cleared instead of mixing two timelines.
CLOCK_JUMP_NS = 1_000_000_000

# Why prompts or frames were dropped (diagnostics counter names).
DROP_TIMEOUT = "prompts_timed_out_waiting_for_image"
DROP_TOO_OLD = "prompts_older_than_image_cache"
DROP_NO_NEAR_FRAME = "prompts_without_image_within_max_offset"
DROP_FRAME_ID = "prompts_with_other_frame_id"
DROP_QUEUE_FULL = "prompt_messages_over_queue_limit"
DROP_SUPERSEDED = "prompts_superseded_by_newer"
FRAMES_CLOCK_JUMP = "image_cache_cleared_by_clock_jump"
FRAMES_DUPLICATE = "images_with_duplicate_stamp"


@dataclass
class Frame:
    """One received image. `payload` is whatever the node keeps (the message, decoded lazily)."""

    stamp_ns: int
    frame_id: str
    payload: Any
    received: float
    decoded: Any = None  # filled by the worker on first use
    embedding: Any = None  # likewise: each image is encoded at most once
    flow: Any = None  # grayscale for optical flow, when tracking needs it


@dataclass
class PromptRequest:
    """The prompts of one message, for the image stamped `stamp_ns` (0: the newest image)."""

    stamp_ns: int
    frame_id: str
    prompts: Sequence[Prompt]
    received: float
    source: str = ""  # which input it came from; the newest request per source wins


class StampCache:
    """The last `size` items of a side input (e.g. depth images) by stamp, matched to a frame's
    stamp with a sync policy: exact, nearest within `max_offset_ns`, or latest."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[int, Any] = OrderedDict()
        self._size = max(int(size), 1)

    def add(self, stamp_ns: int, item: Any) -> None:
        self._items[stamp_ns] = item
        self._items.move_to_end(stamp_ns)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def match(self, stamp_ns: int, policy: str, max_offset_ns: int) -> Any | None:
        if not self._items:
            return None
        if policy == "latest":
            return next(reversed(self._items.values()))
        if policy == "exact":
            return self._items.get(stamp_ns)
        best = min(self._items, key=lambda stamp: abs(stamp - stamp_ns))
        return self._items[best] if abs(best - stamp_ns) <= max_offset_ns else None


class FrameSync:
    def __init__(
        self,
        policy: str = "exact",
        max_offset: float = 0.05,
        max_wait: float = 0.5,
        cache_size: int = 30,
        max_pending: int = 100,
    ) -> None:
        if cache_size < 1 or max_pending < 1:
            raise InvalidInputError("cache_size and max_pending must be at least 1")
        self.configure(policy, max_offset, max_wait)
        self.cache_size = cache_size
        self.max_pending = max_pending
        self.frames: OrderedDict[int, Frame] = OrderedDict()  # oldest first
        self.pending: deque[PromptRequest] = deque()
        self.dropped: Counter[str] = Counter()

    def configure(self, policy: str, max_offset: float, max_wait: float) -> None:
        check_choice("sync policy", policy, SYNC_POLICIES)
        if max_offset < 0 or max_wait < 0:
            raise InvalidInputError("max_offset and max_wait must not be negative")
        self.policy = policy
        self.max_offset_ns = int(max_offset * 1e9)
        self.max_wait = max_wait

    @property
    def newest(self) -> Frame | None:
        return next(reversed(self.frames.values())) if self.frames else None

    def add_frame(self, frame: Frame) -> None:
        newest = self.newest
        if newest is not None and frame.stamp_ns < newest.stamp_ns - CLOCK_JUMP_NS:
            self.frames.clear()
            self.dropped[FRAMES_CLOCK_JUMP] += 1
        if frame.stamp_ns in self.frames:
            self.dropped[FRAMES_DUPLICATE] += 1
            return
        self.frames[frame.stamp_ns] = frame
        if newest is not None and frame.stamp_ns < newest.stamp_ns:  # arrived out of order
            self.frames = OrderedDict(sorted(self.frames.items()))
        while len(self.frames) > self.cache_size:
            self.frames.popitem(last=False)

    def add_request(self, request: PromptRequest) -> None:
        self.pending.append(request)
        while len(self.pending) > self.max_pending:
            self.pending.popleft()
            self.dropped[DROP_QUEUE_FULL] += 1

    def pop_ready(self, now: float) -> tuple[Frame, PromptRequest] | None:
        """A request whose image is known, with that image; drops hopeless requests.

        Newest wins: of several ready requests from one source (a detector that outpaces the
        inference), only the newest is answered and the older ones are dropped and counted, so
        the work never falls behind the camera. Sources are answered oldest first.
        """
        ready = self._ready_by_source(now)
        if not ready:
            return None
        frame, request = min(ready.values(), key=lambda item: item[1].received)
        self.pending.remove(request)
        return frame, request

    def pop_all_ready(self, now: float) -> list[tuple[Frame, PromptRequest]]:
        """Every answerable request (newest per source), oldest first; drops hopeless ones."""
        ready = sorted(self._ready_by_source(now).values(), key=lambda item: item[1].received)
        for _, request in ready:
            self.pending.remove(request)
        return ready

    def _ready_by_source(self, now: float) -> dict[str, tuple[Frame, PromptRequest]]:
        ready: dict[str, tuple[Frame, PromptRequest]] = {}
        for request in list(self.pending):
            outcome = self._match(request, now)
            if outcome is None:
                continue
            if isinstance(outcome, str):
                self._drop(request, outcome)
            elif request.frame_id and outcome.frame_id and request.frame_id != outcome.frame_id:
                self._drop(request, DROP_FRAME_ID)
            else:
                superseded = ready.pop(request.source, None)
                if superseded is not None:
                    self._drop(superseded[1], DROP_SUPERSEDED)
                ready[request.source] = (outcome, request)
        return ready

    def expire(self, now: float, reason: str) -> None:
        """Drop, counted as `reason`, every request whose wait is over (nothing can answer now,
        e.g. while the model loads)."""
        for request in list(self.pending):
            if now - request.received >= self.max_wait:
                self._drop(request, reason)

    def _drop(self, request: PromptRequest, reason: str) -> None:
        self.pending.remove(request)
        self.dropped[reason] += len(request.prompts) or 1

    def next_deadline(self) -> float | None:
        """When the first waiting request times out (monotonic seconds), if any wait."""
        return min((r.received + self.max_wait for r in self.pending), default=None)

    def _match(self, request: PromptRequest, now: float) -> Frame | str | None:
        """A frame, a drop reason, or None to keep waiting."""
        timed_out = now - request.received >= self.max_wait
        newest = self.newest
        if newest is None:
            return DROP_TIMEOUT if timed_out else None
        if request.stamp_ns == 0 or self.policy == "latest":
            return newest
        stamp = request.stamp_ns
        oldest_stamp = next(iter(self.frames))
        if self.policy == "exact":
            frame = self.frames.get(stamp)
            if frame is not None:
                return frame
            if stamp < oldest_stamp:
                return DROP_TOO_OLD
            # Not here yet (or lost): images may arrive late or out of order, so wait.
            return DROP_TIMEOUT if timed_out else None
        # nearest
        if stamp < oldest_stamp - self.max_offset_ns:
            return DROP_TOO_OLD
        best = min(self.frames.values(), key=lambda f: abs(f.stamp_ns - stamp))
        within = abs(best.stamp_ns - stamp) <= self.max_offset_ns
        if newest.stamp_ns >= stamp:  # no later image can come closer
            return best if within else DROP_NO_NEAR_FRAME
        if timed_out:
            return best if within else DROP_TIMEOUT
        return None
