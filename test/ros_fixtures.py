"""Pytest fixtures for tests that run ROS 2 code in subprocesses (a pytest plugin module).

Registered with `pytest_plugins = ["ros_fixtures"]` (test/ is on sys.path through pyproject's
pytest `pythonpath`).
"""

from __future__ import annotations

import importlib.util

import pytest
from ros_test_env import TEST_MESSAGES_BUILD_ROOT, build_test_messages, prepend_env, ros_env


def _skip_without_ros_build_tools() -> None:
    for module, what in (("rclpy", "ROS 2 Python packages (rclpy)"), ("colcon_core", "colcon")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"building the test message packages needs {what}, which is not importable")


@pytest.fixture(scope="session")
def test_messages_env() -> dict[str, str]:
    """Environment additions (PYTHONPATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH) for the TEST-ONLY
    message packages (vision_msgs, yolo_msgs), built once into build/test_messages and reused
    while their sources are unchanged."""
    _skip_without_ros_build_tools()
    return build_test_messages(TEST_MESSAGES_BUILD_ROOT)


@pytest.fixture(scope="session")
def test_messages_ros_env(test_messages_env: dict[str, str]) -> dict[str, str]:
    """Full subprocess environment: install/ of the main package, the test message packages,
    loopback DDS in a ROS domain of this pytest process (see ros_test_env.ros_env)."""
    return prepend_env(ros_env([]), test_messages_env)
