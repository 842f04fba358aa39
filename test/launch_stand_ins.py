"""Launch files run by the real launch and launch_ros with stand-in executables (helpers).

A package prefix of its own goes in front of AMENT_PREFIX_PATH: the package's config and launch
files, and in place of seg_node, seg_lifecycle_node and rviz2 a small program that writes down
its command line, the parameter files it was given and its Fast DDS variables, then exits. So
the tests see exactly what each process would be started with.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

from mobilesam_ros.ros.dds_profile import FAST_DDS_2_PROFILE_VARIABLE, FAST_DDS_3_PROFILE_VARIABLE

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "seg.launch.py"
PACKAGE = "mobilesam_ros"

STAND_IN = """#!{python}
import json, os, sys
from pathlib import Path
arguments = sys.argv[1:]
files = [arguments[i + 1] for i, a in enumerate(arguments) if a == "--params-file"]
record = {{
    "argv": arguments,
    "params_files": [Path(f).read_text() for f in files],
    "env": {{k: v for k, v in os.environ.items() if k.endswith("_DEFAULT_PROFILES_FILE")}},
}}
name = Path(sys.argv[0]).name
Path(os.environ["LAUNCH_RECORD_DIR"], name + ".json").write_text(json.dumps(record))
"""


def make_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package prefix with the package's config and stand-ins for its executables and rviz2."""
    root = tmp_path / "prefix"
    for package, executables in (
        (PACKAGE, ("seg_node", "seg_lifecycle_node")),
        ("rviz2", ("rviz2",)),
    ):
        index = root / "share" / "ament_index" / "resource_index" / "packages" / package
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text("")
        (root / "share" / package).mkdir(parents=True, exist_ok=True)
        for executable in executables:
            add_stand_in(root, package, executable)
    shutil.copytree(REPO_ROOT / "config", root / "share" / PACKAGE / "config")
    shutil.copytree(REPO_ROOT / "launch", root / "share" / PACKAGE / "launch")
    records = tmp_path / "records"
    records.mkdir()
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{root}{os.pathsep}{os.environ['AMENT_PREFIX_PATH']}")
    monkeypatch.setenv("LAUNCH_RECORD_DIR", str(records))
    for variable in (
        FAST_DDS_2_PROFILE_VARIABLE,
        FAST_DDS_3_PROFILE_VARIABLE,
        "RMW_IMPLEMENTATION",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("ROS_DISTRO", raising=False)
    return root


class _ParameterFileLoader(yaml.SafeLoader):
    """Reads parameter files as rcl does: launch_ros writes a list parameter as a tuple
    (`!!python/tuple`), whose tag rcl ignores."""


_ParameterFileLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple",
    lambda loader, node: loader.construct_sequence(node),
)


class Started:
    """What one stand-in was started with."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.argv: list[str] = record["argv"]
        self.env: dict[str, str] = record["env"]
        # Each --params-file's parameters (of every node block), in the order given.
        self.parameter_files: list[dict[str, Any]] = [
            {
                name: value
                for block in (yaml.load(text, _ParameterFileLoader) or {}).values()
                for name, value in block.get("ros__parameters", {}).items()
            }
            for text in record["params_files"]
        ]
        self.parameters = {k: v for f in self.parameter_files for k, v in f.items()}
        self.remappings = dict(
            self.argv[i + 1].split(":=", 1) for i, a in enumerate(self.argv) if a == "-r"
        )

    @property
    def log_level(self) -> str:
        return self.argv[self.argv.index("--log-level") + 1]


def run_launch(
    prefix: Path, launch_file: Path = LAUNCH_FILE, **arguments: str
) -> tuple[int, dict[str, Started]]:
    """Run a launch file with these arguments until every process has exited."""
    service = LaunchService()
    service.include_launch_description(
        LaunchDescription(
            [
                IncludeLaunchDescription(
                    PythonLaunchDescriptionSource(str(launch_file)),
                    launch_arguments=list(arguments.items()),
                )
            ]
        )
    )
    code = service.run()
    records = Path(os.environ["LAUNCH_RECORD_DIR"])
    started = {
        path.stem: Started(json.loads(path.read_text())) for path in sorted(records.glob("*.json"))
    }
    for path in records.glob("*.json"):
        path.unlink()
    return code, started


def load_launch_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("seg_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def installed(prefix: Path, *parts: str) -> str:
    return str(prefix / "share" / PACKAGE / Path(*parts))


def add_stand_in(prefix: Path, package: str, executable: str) -> None:
    """`executable` of `package` in `prefix`: the program that writes down how it was started."""
    path = prefix / "lib" / package / executable
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STAND_IN.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
