"""SIGINT and SIGTERM as a request to stop, however often they come.

A terminal's Ctrl-C signals the whole process group, so under `ros2 launch` the node gets one
SIGINT from the terminal and a second one from launch, which forwards it; launch may follow with
SIGTERM. Python's default handler turns every SIGINT into a KeyboardInterrupt wherever the main
thread happens to be (a thread join during shutdown, an import), which ends the node with a
traceback and a non-zero exit code. Here each signal only marks the stop as requested:

- The handlers are Python's, installed before `rclpy.init`, so rclpy's own handlers (which shut
  the ROS context down and wake the executor) chain to them instead of to KeyboardInterrupt.
- A watcher thread sees the first signal at once (through the wake-up file descriptor that
  Python's C-level handler writes to, whatever the main thread is doing) and ends the process
  with exit code 0 if the orderly shutdown has not finished `grace_s` seconds later: a model
  load or an inference in native code cannot be interrupted and holds nothing worth saving.

Only the standard library is imported, so that the executables install this before anything
slow to import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds from the first signal to a forced exit; users expect a node gone within 2 s.
DEFAULT_GRACE_S = 1.6


class StopSignals:
    """Records stop signals; see the module docstring. Use `install()`, once per process."""

    def __init__(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.grace_s = grace_s
        self.requested = threading.Event()
        self.received: list[int] = []
        self._finished = threading.Event()
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_write, False)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Python-level handler: runs later, in the main thread; never raises."""
        self.received.append(signum)
        self.requested.set()

    def _watch(self) -> None:
        os.read(self._wakeup_read, 1)  # blocks until the first signal
        self.requested.set()
        if self._finished.wait(self.grace_s):
            return
        # The orderly shutdown is stuck in native code: leave without it.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(0)

    def finished(self) -> None:
        """The orderly shutdown is done: the watcher no longer needs to force the exit, and
        stop signals are ignored from now on. The interpreter's exit resets Python-handled
        signals to their default action (but leaves ignored ones alone), so a signal still on
        its way (launch forwards the terminal's Ctrl-C) would otherwise kill the process."""
        self._finished.set()
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)


_installed: StopSignals | None = None


def install(grace_s: float = DEFAULT_GRACE_S) -> StopSignals:
    """Install the handlers (first call, from the main thread) and return the process's instance.

    Called from another thread (a test driving `main`), nothing is installed and the signals
    keep their handlers; the returned instance then never sees a signal.
    """
    global _installed
    if _installed is not None:
        return _installed
    stop = StopSignals(grace_s)
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, stop._on_signal)
        signal.set_wakeup_fd(stop._wakeup_write, warn_on_full_buffer=False)
        threading.Thread(target=stop._watch, name="mobilesam-stop-signals", daemon=True).start()
    _installed = stop
    return stop
