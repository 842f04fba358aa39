"""The launch_testing test of seg.launch.py (test/launch_tests), run by the `launch_test`
command (its pytest plugin cannot load under pytest 9: see pyproject), and by `colcon test`
after a build with testing on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

pytest.importorskip("launch_testing", reason="launch_testing is not installed")
from ros_test_env import install_env_additions, prepend_env

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH_TEST = REPO_ROOT / "test" / "launch_tests" / "test_seg_launch.py"


def test_seg_launch_answers_then_ends_cleanly_on_ctrl_c(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch_testing.launch_test",
            str(LAUNCH_TEST),
            "--junit-xml",
            str(tmp_path / "results.xml"),
        ],
        env=dict(os.environ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    # Both the test run with the launch up and the checks after its shutdown ran and passed.
    cases = ElementTree.parse(tmp_path / "results.xml").getroot().iter("testcase")
    outcomes = {case.get("name"): [child.tag for child in case] for case in cases}
    assert sorted(outcomes) == [
        "test_answers_1280x720_frames_then_ctrl_c_ends_cleanly",
        "test_launch_and_node_exit_cleanly",
    ], outcomes
    assert all(not tags for tags in outcomes.values()), (outcomes, result.stdout)


@pytest.mark.skipif(
    not os.environ.get("MOBILESAM_ROS_COLCON_TEST"),
    reason="a build with testing on and colcon test take a minute: make test shows them once, "
    "in its Kilted step (MOBILESAM_ROS_COLCON_TEST=1)",
)
def test_colcon_test_runs_the_packages_tests_after_a_build_with_testing_on(tmp_path):
    """A build with BUILD_TESTING on registers the pytest suite and the launch test, and `colcon
    test` runs both against that install: the launch test whole, the pytest suite (with
    launch_testing's pytest plugin installed) narrowed to one module, since `make test`'s own
    pytest step runs all of it."""
    build, install = tmp_path / "build", tmp_path / "install"
    env = dict(os.environ)
    env.update(
        MOBILESAM_ROS_BUILD_TESTING="ON",
        MOBILESAM_ROS_BUILD_BASE=str(build),
        MOBILESAM_ROS_INSTALL_BASE=str(install),
        MOBILESAM_ROS_EXTRA_BASE_PATHS="",
    )
    built = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build_ros.sh")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    listed = subprocess.run(
        ["ctest", "-N"], cwd=build / "mobilesam_ros", capture_output=True, text=True, check=True
    ).stdout
    assert "Test #1: pytest" in listed and "Test #2: seg_launch" in listed
    # The package from this install first (its setup script is what a user sources).
    test_env = prepend_env(dict(os.environ), install_env_additions([install]))
    test_env["PYTEST_ADDOPTS"] = "-k test_config_files"
    # As in a user's shell: this runner's marker for the DDS suite would make pytest collect it.
    test_env.pop("MOBILESAM_ROS_INSTALL_PREFIX")
    colcon = str(Path(sys.executable).parent / "colcon")
    common = ["--log-base", str(tmp_path / "log")]
    tested = subprocess.run(
        [
            colcon,
            *common,
            "test",
            "--base-paths",
            str(REPO_ROOT),
            "--build-base",
            str(build),
            "--install-base",
            str(install),
        ],
        env=test_env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    result = subprocess.run(
        [colcon, *common, "test-result", "--test-result-base", str(build), "--verbose"],
        env=test_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors, 0 failures" in result.stdout, result.stdout
    # Both ctest entries ran: the launch test's two cases and the config files' tests.
    ran = re.search(r"Summary: (\d+) tests", result.stdout)
    assert ran and int(ran.group(1)) > 3, result.stdout
