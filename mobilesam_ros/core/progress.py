"""Progress of long work (downloads, exports, engine builds) for people and for logs.

A terminal gets a tqdm bar on stderr; every `step` percent also becomes a `logging` record, which
a ROS node routes to its logger (rosout), where a progress bar never arrives.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def say(logger: logging.Logger, message: str, enabled: bool = True) -> None:
    """One progress line: a log record (a ROS node routes it to rosout), and on stderr too when
    nothing handles the package's records (a script, the CLI)."""
    if not enabled:
        return
    logger.info(message)
    if not logger.hasHandlers():
        print(message, file=sys.stderr, flush=True)


class Progress:
    def __init__(
        self,
        total: int,
        description: str,
        logger: logging.Logger,
        enabled: bool = True,
        step_percent: int = 10,
    ) -> None:
        self._total = max(int(total), 1)
        self._description = description
        self._logger = logger
        self._step = step_percent
        self._done = 0
        self._next_percent = step_percent
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=description,
                file=sys.stderr,
            )
        self._logger.info("%s: started", description)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, amount: int) -> None:
        self._done += amount
        if self._bar is not None:
            self._bar.update(amount)
        percent = 100 * self._done // self._total
        if percent >= self._next_percent:
            self._logger.info("%s: %d %%", self._description, percent)
            self._next_percent = (percent // self._step + 1) * self._step
