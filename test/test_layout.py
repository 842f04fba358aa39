"""The import rules of docs/ARCHITECTURE.md, and what the package installs, checked on the
sources."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "mobilesam_ros"
ROS_MODULES = (
    "rclpy",
    "sensor_msgs",
    "std_msgs",
    "geometry_msgs",
    "vision_msgs",
    "yolo_msgs",
    "diagnostic_msgs",
)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def is_message_module(module: str) -> bool:
    """A message package (sensor_msgs, rcl_interfaces, ...) or generated message classes (the
    package's own mobilesam_ros.msg and .srv among them)."""
    parts = module.split(".")
    return parts[0].endswith(("_msgs", "_interfaces")) or bool(
        {"msg", "srv", "action"} & set(parts[1:])
    )


def violations(folder: str, forbidden: tuple[str, ...], messages: bool = False) -> list[str]:
    """Imports of `folder` from `forbidden` (modules and their submodules) and, with `messages`,
    of any message module."""
    found = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden) or (
                messages and is_message_module(module)
            ):
                found.append(f"{path.relative_to(PACKAGE)} imports {module}")
    return found


LAYERS_ABOVE_CORE = ("mobilesam_ros.ros", "mobilesam_ros.tools", "mobilesam_ros.cli")


def test_core_imports_neither_ros_nor_the_layers_above_it():
    forbidden = (*ROS_MODULES, "mobilesam_ros.messages", *LAYERS_ABOVE_CORE)
    assert violations("core", forbidden) == []


def test_messages_import_neither_ros_nor_message_classes_nor_the_layers_above_them():
    """messages/ (core/ and numpy, OpenCV) runs without a ROS install: the bag tools read and
    build messages with it from rosbags' classes, the node from rclpy's; ros/ and tools/ import
    it."""
    assert violations("messages", (*ROS_MODULES, *LAYERS_ABOVE_CORE), messages=True) == []


def test_the_message_module_rule_knows_message_imports():
    assert all(
        is_message_module(name)
        for name in ("sensor_msgs.msg", "visualization_msgs", "mobilesam_ros.msg", "rcl_interfaces")
    )
    assert not any(
        is_message_module(name) for name in ("numpy", "mobilesam_ros.messages.readers", "cv2")
    )


def test_the_ros_layer_does_not_import_the_tools():
    assert violations("ros", ("mobilesam_ros.tools", "mobilesam_ros.cli")) == []


def test_the_package_holds_no_benchmark_and_imports_none():
    """colcon installs every module under mobilesam_ros/; benchmarks/ is not installed, so no
    installed module may import it."""
    benchmarks = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name.startswith(("bench", "profile"))
    ]
    assert benchmarks == []
    assert violations(".", ("benchmarks",)) == []


def test_setup_py_installs_only_the_package():
    """pip's packages: mobilesam_ros and its subpackages, not benchmarks/ (a package too).

    In a fresh interpreter: setuptools refuses to import where the standard library's distutils
    is already loaded, which an earlier test of this process may have done."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed")
    script = (
        "import json, runpy, setuptools; found = {}; "
        "setuptools.setup = lambda **kwargs: found.update(kwargs); "
        "runpy.run_path('setup.py'); print(json.dumps(found['packages']))"
    )
    # find_packages looks in the working directory.
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    packages = json.loads(result.stdout.strip().splitlines()[-1])
    assert "mobilesam_ros.tools" in packages
    assert [name for name in packages if name.partition(".")[0] != "mobilesam_ros"] == []


def test_torch_is_imported_only_inside_functions_outside_the_torch_modules():
    """Top-level `import torch` only where the module is PyTorch code by nature."""
    allowed = {
        "core/model/tiny_vit.py",
        "core/model/modules.py",
        "core/backends/torch_device/pipeline.py",
        "core/backends/torch_device/programs.py",
        "core/backends/torch_device/precision.py",
        "core/backends/torch_device/resize.py",
        "core/backends/torch_device/memory.py",
    }
    offenders = []
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "torch" or n.startswith("torch.") for n in names):
                relative = str(path.relative_to(PACKAGE))
                if relative not in allowed:
                    offenders.append(relative)
    assert offenders == []
