"""Camera-sized images over DDS with the installed Fast DDS profile, as users are told to run.

Runs in the environment of run_ros_tests.py, which names the installed config/fastdds.xml the way
the README tells users to (ros_test_env.ros_env). A publisher process sends best-effort bgr8 frames,
as camera drivers do, and a subscriber process counts them (mobilesam_ros.tools.dds_check): none
may be lost. Counts only, no timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mobilesam_ros.ros.dds_profile import profile_in_effect, profile_variable

INSTALL_PREFIX = Path(os.environ["MOBILESAM_ROS_INSTALL_PREFIX"])
INSTALLED_PROFILE = INSTALL_PREFIX / "share" / "mobilesam_ros" / "config" / "fastdds.xml"
FRAMES = 20
RATE_HZ = 10.0


def test_environment_names_the_installed_profile() -> None:
    variable = profile_variable(os.environ.get("ROS_DISTRO"))
    assert os.environ.get(variable) == str(INSTALLED_PROFILE)
    assert profile_in_effect() == str(INSTALLED_PROFILE)
    assert INSTALLED_PROFILE.is_file()


@pytest.mark.parametrize("size", ["1280x720", "1920x1080"])
def test_best_effort_frames_all_arrive_with_the_profile(size: str, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "mobilesam_ros.tools.dds_check",
        "--sizes",
        size,
        "--frames",
        str(FRAMES),
        "--rate",
        str(RATE_HZ),
        "--reliability",
        "best_effort",
        "--json",
    ]
    # Outside the repository, so that the installed mobilesam_ros is imported.
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["counts"] == {size: {"sent": FRAMES, "received": FRAMES}}, result.stderr
    assert report["profile"] == str(INSTALLED_PROFILE)
    assert report["reliability"] == "best_effort"
    assert result.returncode == 0
