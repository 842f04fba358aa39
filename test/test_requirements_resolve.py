"""The GPU requirement files resolve, for the machines they are for, to versions that run there.

pip's resolver answers from the package index, as if installing on that machine (nothing is
installed), so a new release that breaks a file fails here first. Needs the index:
MOBILESAM_ROS_OFFLINE=1 skips these tests where there is none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(os.environ.get("MOBILESAM_ROS_OFFLINE")),
        reason="MOBILESAM_ROS_OFFLINE is set: no package index to resolve against",
    ),
]

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"
# --dry-run and --report came with pip 22.2.
pytest.importorskip("pip", minversion="22.2")

# pip evaluates environment markers (python_version, platform_machine) for the interpreter that
# runs it even with --platform and --python-version; this evaluates them for the target machine.
_PIP_FOR_TARGET = """
import sys
from pip._vendor.packaging import markers
machine, version = sys.argv[1:3]
target = dict(markers.default_environment(), platform_machine=machine, python_version=version,
              python_full_version=version + ".0", implementation_version=version + ".0")
markers.default_environment = lambda: dict(target)
from pip._internal.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


@dataclass(frozen=True)
class Machine:
    """Where a requirement file is installed: CPU, Python and the system's glibc 2.x."""

    name: str
    arch: str
    python: str
    glibc_minor: int

    def platforms(self) -> list[str]:
        # pip does not widen manylinux_2_N to older glibc versions by itself.
        tags = [f"manylinux_2_{minor}_{self.arch}" for minor in range(17, self.glibc_minor + 1)]
        return [f"manylinux2014_{self.arch}", *tags]


JETPACK6 = Machine("jetpack6", "aarch64", "3.10", 35)  # Ubuntu 22.04
JETPACK7 = Machine("jetpack7", "aarch64", "3.12", 39)  # Ubuntu 24.04
UBUNTU22 = Machine("ubuntu22", "x86_64", "3.10", 35)
UBUNTU24 = Machine("ubuntu24", "x86_64", "3.12", 39)

# NumPy 1.x for ROS, cv_bridge and NVIDIA's torch wheels; OpenCV 4.12 and later need NumPy 2.
COMMON = {"numpy": "<2", "opencv-python-headless": "<4.12"}
CASES = [
    ("jetpack6.txt", JETPACK6, {"cuda-python": "==12.6.*"}, None),
    ("jetpack7.txt", JETPACK7, {"cuda-python": "==13.*", "cuda-bindings": "==13.*"}, None),
    ("desktop-tensorrt.txt", UBUNTU22, {"cuda-python": "==13.*"}, "tensorrt"),
    ("desktop-tensorrt.txt", UBUNTU24, {"cuda-python": "==13.*"}, "tensorrt"),
    ("desktop-tensorrt-cu12.txt", UBUNTU22, {"cuda-python": "==12.*"}, "tensorrt-cu12"),
    ("desktop-tensorrt-cu12.txt", UBUNTU24, {"cuda-python": "==12.*"}, "tensorrt-cu12"),
]


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _is_tensorrt(name: str) -> bool:
    return canonicalize_name(name).startswith("tensorrt")


def _resolve(requirements: list[Requirement], machine: Machine, tmp_path: Path) -> dict[str, str]:
    """Name -> version of everything pip would install on `machine` for `requirements`."""
    file, report = tmp_path / "requirements.txt", tmp_path / "report.json"
    file.write_text("".join(f"{requirement}\n" for requirement in requirements))
    platforms = [argument for tag in machine.platforms() for argument in ("--platform", tag)]
    command = [
        sys.executable, "-c", _PIP_FOR_TARGET, machine.arch, machine.python,
        "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
        "--only-binary=:all:", *platforms, "--python-version", machine.python,
        "--implementation", "cp", "--timeout", "30", "--retries", "3", "-r", str(file),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"pip could not resolve them for {machine.name} (this test needs the package index; "
            f"MOBILESAM_ROS_OFFLINE=1 skips it where there is none):\n{result.stderr[-3000:]}"
        )
    resolved = json.loads(report.read_text())
    assert resolved["environment"]["platform_machine"] == machine.arch, "markers not retargeted"
    return {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in resolved["install"]
    }


@pytest.mark.parametrize(
    ("file_name", "machine", "expected", "tensorrt"),
    CASES,
    ids=[f"{file_name.removesuffix('.txt')}-{machine.name}" for file_name, machine, *_ in CASES],
)
def test_requirements_resolve_to_versions_that_run_there(
    file_name: str,
    machine: Machine,
    expected: dict[str, str],
    tensorrt: str | None,
    tmp_path: Path,
) -> None:
    requirements = _requirements(REQUIREMENTS / file_name)
    named_tensorrt = [r.name for r in requirements if _is_tensorrt(r.name)]
    # JetPack's TensorRT comes from apt; on the index, tensorrt and tensorrt-cu12 are source
    # packages that fetch their libraries from NVIDIA's index, which pip cannot resolve for
    # another machine: their name is checked, the rest resolved.
    assert named_tensorrt == ([tensorrt] if tensorrt else []), named_tensorrt
    resolved = _resolve([r for r in requirements if not _is_tensorrt(r.name)], machine, tmp_path)
    print(file_name, machine.name, json.dumps(resolved, sort_keys=True))

    assert "torch" not in resolved, "PyTorch comes from requirements/ros.txt or NVIDIA's wheels"
    assert not [name for name in resolved if _is_tensorrt(name)], resolved
    for name, specifier in {**COMMON, **expected}.items():
        assert name in resolved, f"{name} is not among {sorted(resolved)}"
        assert Version(resolved[name]) in SpecifierSet(specifier), (name, resolved[name])
    if "cuda-bindings" in resolved:  # from 12.8 on, cuda-python only depends on it
        bindings = Version(resolved["cuda-bindings"]).release[:2]
        assert bindings == Version(resolved["cuda-python"]).release[:2], resolved
