"""Shared fixtures: a random-weight checkpoint in the official layout, real photos, segmenters."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["ros_fixtures"]

# launch_tests/ holds launch_testing files, run by the `launch_test` command (see
# test/dds/test_launch_testing.py and CMakeLists.txt), not by pytest.
collect_ignore = ["launch_tests"]
# The tests of ros/ and dds/ import the generated messages from the install space;
# test/run_ros_tests.py runs them in a process prepared for that (it sets
# MOBILESAM_ROS_INSTALL_PREFIX).
if not os.environ.get("MOBILESAM_ROS_INSTALL_PREFIX"):
    collect_ignore += ["ros", "dds"]


_FOLDER_MARKERS = {"ros": pytest.mark.ros, "dds": pytest.mark.dds}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The folder's marker on every test of test/ros and test/dds."""
    for item in items:
        folder = item.path.parent.name
        if folder in _FOLDER_MARKERS and item.path.parent.parent.name == "test":
            item.add_marker(_FOLDER_MARKERS[folder])


# A folder that scripts/prepare_test_models.py filled (random checkpoint + its ONNX graphs), for
# environments without PyTorch: their tests use those graphs instead of exporting their own.
PREPARED_MODELS = os.environ.get("MOBILESAM_ROS_TEST_MODELS")


def _prepared(name: str) -> Path:
    path = Path(PREPARED_MODELS or "") / name
    if not path.exists():
        raise FileNotFoundError(
            f"MOBILESAM_ROS_TEST_MODELS={PREPARED_MODELS} has no {name}: fill it first with "
            "scripts/prepare_test_models.py (in an environment with PyTorch)"
        )
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    if PREPARED_MODELS:  # a copy: tests may add to a cache, the prepared one stays as it is
        shutil.copytree(_prepared("cache"), folder, dirs_exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if PREPARED_MODELS:
        return _prepared("mobile_sam.pt")
    pytest.importorskip("torch")
    from mobilesam_ros.core.model.modules import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("weights") / "mobile_sam.pt", seed=0)


class _SegmentersByBackend(dict):
    """Segmenters by backend name; a test asking for one whose runtime is missing is skipped."""

    def __missing__(self, backend: str) -> None:
        pytest.skip(f"backend {backend!r}: its runtime is not installed here")


@pytest.fixture(scope="session")
def segmenters(random_checkpoint: Path, cache_dir: Path) -> dict:
    """One Segmenter per backend whose runtime is installed, built once for the whole test run."""
    from mobilesam_ros.core import Segmenter

    backends = [
        name
        for name, module in (
            ("torch", "torch"),
            ("onnxruntime", "onnxruntime"),
            ("openvino", "openvino"),
        )
        if importlib.util.find_spec(module) is not None
    ]
    return _SegmentersByBackend(
        {
            name: Segmenter(
                random_checkpoint, backend=name, cache_dir=cache_dir, device="cpu", progress=False
            )
            for name in backends
        }
    )
