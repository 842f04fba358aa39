"""Cache files written safely by concurrent processes: an exclusive lock and atomic replacement."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the block."""
    with open(path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def write_atomically(target: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Let `write(tmp_path)` fill a temporary file beside `target`, then rename it into place.

    Readers see the old file or the complete new one, never a partial one; the temporary file is
    removed when `write` raises. Combine with `exclusive_lock` so two writers do not race.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def write_bytes_atomically(target: str | os.PathLike[str], data: bytes) -> Path:
    return write_atomically(target, lambda tmp: tmp.write_bytes(data))
