"""Shared fixtures: a random-weight checkpoint in the official layout, real photos, segmenters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["ros_fixtures"]

# The DDS tests import the generated messages from the install space; test/dds/run_dds_tests.py
# runs them in a process prepared for that (it sets MOBILESAM_ROS_INSTALL_PREFIX).
if not os.environ.get("MOBILESAM_ROS_INSTALL_PREFIX"):
    collect_ignore = ["dds"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from mobilesam_ros.core.model.modules import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("weights") / "mobile_sam.pt", seed=0)


@pytest.fixture(scope="session")
def segmenters(random_checkpoint: Path, cache_dir: Path) -> dict:
    """One Segmenter per backend, built once for the whole test run."""
    from mobilesam_ros.core import Segmenter

    return {
        name: Segmenter(
            random_checkpoint, backend=name, cache_dir=cache_dir, device="cpu", progress=False
        )
        for name in ("torch", "onnxruntime")
    }
