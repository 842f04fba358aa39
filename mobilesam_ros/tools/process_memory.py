"""Memory of a process from Linux /proc: what the demo samples of the node, and the memory
benchmark of its own process."""

from __future__ import annotations

from pathlib import Path


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size of a process in MiB (/proc/<pid>/status VmRSS); NaN once it is gone."""
    return _status_kib(pid, "VmRSS") / 1024.0


def peak_rss_mib(pid: int | str = "self") -> float:
    """Highest RSS the process reached so far, in MiB (VmHWM)."""
    return _status_kib(pid, "VmHWM") / 1024.0


def _status_kib(pid: int | str, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")
