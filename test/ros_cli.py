"""`ros2 launch` and the `ros2` command line as users run them, for the tests of test/dds.

`LaunchedSystem` starts `ros2 launch ...` in a session of its own, the way a terminal runs it,
reads its output on a thread, and stops it the way a terminal's Ctrl-C does: SIGINT to the
whole process group (launch and every process it started), after which launch forwards a
second SIGINT to its processes. `stop_report` then says whether that ended cleanly.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# What a clean stop must show, and must not: launch's own lines and Python's.
CLEAN_EXIT = "process has finished cleanly"
BAD_OUTPUT = ("Traceback (most recent call last)", "KeyboardInterrupt", "process has died")
# Users expect the node gone within this many seconds of Ctrl-C.
STOP_WITHIN_S = 2.0


def ros2_executable() -> str:
    """The `ros2` command: beside this interpreter (a virtual environment), else on PATH."""
    beside = Path(sys.executable).parent / "ros2"
    if beside.is_file():
        return str(beside)
    found = shutil.which("ros2")
    if found is None:
        raise FileNotFoundError("no ros2 command: install the ROS 2 command-line tools")
    return found


def ros2(
    *arguments: str, env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess:
    """Run `ros2 ARGUMENTS` to the end; its output (stdout and stderr) in `.stdout`."""
    return subprocess.run(
        [ros2_executable(), *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def ros2_until(
    check: Callable[[str], bool], *arguments: str, env: dict[str, str], timeout: float = 20.0
) -> str:
    """The output of `ros2 ARGUMENTS` once `check(output)` holds, asking again until then: a
    command's fresh participant may not have discovered the whole graph on its first try."""
    deadline = time.monotonic() + timeout
    while True:
        output = ros2(*arguments, env=env).stdout
        if check(output):
            return output
        if time.monotonic() > deadline:
            raise AssertionError(f"ros2 {' '.join(arguments)} never passed its check:\n{output}")
        time.sleep(0.5)


def process_gone(pid: int) -> bool:
    """True when the process has ended (also while it waits, a zombie, for launch to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while read
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@dataclass
class StopReport:
    """How one Ctrl-C of `ros2 launch` ended."""

    node_gone_after_s: float | None  # None: still running 10 s later
    launch_exit_code: int | None
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


class LaunchedSystem:
    """`ros2 launch ARGUMENTS` in a session of its own; every output line kept with its time."""

    def __init__(self, arguments: list[str], env: dict[str, str], cwd: Path) -> None:
        self.arguments = arguments
        self.process = subprocess.Popen(
            [ros2_executable(), "launch", *arguments],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first output line matching `pattern` (a regular expression), waiting for it."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        checked = 0
        with self._changed:
            while True:
                for line in self.lines[checked:]:
                    match = compiled.search(line)
                    if match:
                        return match
                checked = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader_alive):
                    raise AssertionError(
                        f"no line matching {pattern!r} within {timeout} s; output:\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(min(remaining, 0.1))

    @property
    def _reader_alive(self) -> bool:
        return self._reader.is_alive()

    def node_pid(self, executable: str, timeout: float = 60.0) -> int:
        """The pid of the process launch started from `executable` (launch logs it)."""
        match = self.wait_for(
            rf"\[{re.escape(executable)}-\d+\]: process started with pid \[(\d+)\]", timeout
        )
        return int(match.group(1))

    def ctrl_c(self) -> None:
        """What a terminal's Ctrl-C does: SIGINT to the whole process group."""
        with contextlib.suppress(ProcessLookupError):  # all of it has ended already
            os.killpg(self.process.pid, signal.SIGINT)

    def stop(self) -> int | None:
        """Ctrl-C if still running, then the exit code (None if it had to be killed)."""
        if self.process.poll() is None:
            self.ctrl_c()
            try:
                return self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                return None
        return self.process.returncode

    def stop_report(self, executable: str) -> StopReport:
        """Ctrl-C, then: was the node gone within STOP_WITHIN_S, did launch report it finished
        cleanly, and is the output free of tracebacks?"""
        try:
            pid = self.node_pid(executable, timeout=1.0)
            started = time.monotonic()
            self.ctrl_c()
            gone_after = None
            while time.monotonic() - started < 10.0:
                if process_gone(pid):
                    gone_after = time.monotonic() - started
                    break
                time.sleep(0.01)
        finally:
            # One Ctrl-C, as a user gives it: launch ends on its own after its processes. A
            # second SIGINT while it is still exiting would interrupt its interpreter's exit
            # (a traceback of the test's making), so stop() signals again only after a wait.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10.0)
            code = self.stop()  # never leave a launch running for the next test
        self._reader.join(timeout=5)
        report = StopReport(gone_after, code)
        output = self.output
        if gone_after is None or gone_after > STOP_WITHIN_S:
            report.problems.append(f"node not gone within {STOP_WITHIN_S} s ({gone_after})")
        if f"{CLEAN_EXIT} [pid {pid}]" not in output:
            report.problems.append(f"launch did not report '{CLEAN_EXIT}' for pid {pid}")
        report.problems += [f"output holds {bad!r}" for bad in BAD_OUTPUT if bad in output]
        return report
