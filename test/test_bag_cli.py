"""`mobilesam-ros process-bag` as users run it: a terminal's Ctrl-C (SIGINT to the process group)
in the middle of a recording, then `--resume`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rosbags")

from recordings import process_bag_arguments, write_recording
from test_bag_process import read_outputs

from mobilesam_ros.messages.readers import stamp_to_ns

pytestmark = pytest.mark.slow
FRAMES = 6


def test_ctrl_c_leaves_a_valid_output_that_resume_completes(
    tmp_path: Path, random_checkpoint: Path, cache_dir: Path
) -> None:
    recording = write_recording(tmp_path / "in", frames=FRAMES)
    command = [
        sys.executable,
        "-m",
        "mobilesam_ros.cli",
        *process_bag_arguments(recording, tmp_path / "out", random_checkpoint, cache_dir),
    ]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    assert process.stderr is not None
    seen = b""
    deadline = time.monotonic() + 300
    while b"1/6" not in seen and time.monotonic() < deadline:  # tqdm's count after a frame
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert b"1/6" in seen, seen.decode(errors="replace")
    os.killpg(process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    out, err = process.communicate(timeout=300)
    err = seen + err
    assert process.returncode == 130, err.decode(errors="replace")
    assert b"Traceback" not in err, err.decode(errors="replace")
    assert b"stopped early: --resume continues it" in out
    partial = read_outputs(tmp_path / "out")["/mobilesam/masks"]
    assert 1 <= len(partial) < FRAMES

    resumed = subprocess.run([*command, "--resume"], capture_output=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr.decode(errors="replace")
    masks = read_outputs(tmp_path / "out")["/mobilesam/masks"]
    assert [stamp_to_ns(m.header.stamp) for _, m in masks] == recording.stamps
