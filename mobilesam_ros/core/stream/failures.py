"""Inputs rejected and work that failed: counters by reason, each logged at most once a period.

ROS-free. The counter names are the node's /diagnostics keys.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_log = logging.getLogger(__name__)

WARN_PERIOD_S = 5.0  # a repeated warning is logged at most once per reason in this period
# Inference failures in a row (no success in between) that turn the health to ERROR.
ERROR_AFTER_FAILURES = 3

# Counter names of inputs rejected, and the stages whose failures are counted.
IMAGES_REJECTED = "images_rejected"
PROMPTS_REJECTED = "prompts_rejected"
PROMPTS_OVER_LIMIT = "prompts_over_max_prompts"
STAGE_IMAGE_DECODE = "image_decode"
STAGE_ENCODE = "encode"
STAGE_DECODE_PROMPTS = "decode_prompts"
STAGE_TRACKING = "tracking"
STAGE_PUBLISH = "publish"
INFERENCE_STAGES = (STAGE_ENCODE, STAGE_DECODE_PROMPTS, STAGE_TRACKING)


def failure_counter(stage: str) -> str:
    return f"{stage}_failures"


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


class StageError(Exception):
    """A failure of one stage of a frame's work, with the exception it came from."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {cause!r}")
        self.stage = stage
        self.cause = cause


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Tag any exception of the block with the stage it came from."""
    try:
        yield
    except StageError:
        raise
    except Exception as exc:
        raise StageError(name, exc) from exc
