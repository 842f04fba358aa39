"""Environments for tests that run ROS 2 code from colcon install spaces in subprocesses.

- `ros_env()`: a full environment for running the main package's install space (`install/` at the
  repository root, or $MOBILESAM_ROS_INSTALL_BASE, built by scripts/build_ros.sh) plus other
  install spaces, with DDS traffic kept on loopback, a ROS domain of its own per pytest process,
  and the installed Fast DDS profile (config/fastdds.xml) named the way the README tells users to.
- `build_test_messages()`: builds the TEST-ONLY message packages of test/message_packages
  (vision_msgs, yolo_msgs) with colcon (through scripts/build_ros.sh, so with the same
  environment and CMake arguments as the main package) and caches the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from mobilesam_ros.ros.dds_profile import with_profile

REPO_ROOT = Path(__file__).resolve().parents[1]
# build/ and install/ unless scripts/build_ros.sh was told otherwise by the same variables (a
# second ROS 2 distribution's build, e.g. build-jazzy/ and install-jazzy/).
MAIN_BUILD = REPO_ROOT / os.environ.get("MOBILESAM_ROS_BUILD_BASE", "build")
MAIN_INSTALL = REPO_ROOT / os.environ.get("MOBILESAM_ROS_INSTALL_BASE", "install")
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_ros.sh"
# TEST-ONLY message packages the node reads when they are installed: vision_msgs (a subset of
# 4.x) and yolo_msgs (yolo_ros's), with their upstream field layouts.
TEST_MESSAGES_SOURCE = REPO_ROOT / "test" / "message_packages"
# vision_msgs' definitions are the package's own copy (its CMakeLists.txt names them there).
TEST_MESSAGES_DEFINITIONS = REPO_ROOT / "mobilesam_ros" / "data" / "vision_msgs"
TEST_MESSAGE_PACKAGES = ("vision_msgs", "yolo_msgs")
# Where the test fixtures build it (build/ is ignored by git).
TEST_MESSAGES_BUILD_ROOT = MAIN_BUILD / "test_messages"

# Written into the install base after a successful build; names the hash of the sources it holds.
_STAMP_NAME = ".test_messages.sha256"


def _prefixes(install_base: Path) -> list[Path]:
    """Install prefixes of a colcon install base: one per package (isolated) or the base (merged).

    A prefix is a folder with an ament resource index, which every ament package installs.
    """
    install_base = Path(install_base)
    if (install_base / "share" / "ament_index").is_dir():
        return [install_base]
    if not install_base.is_dir():
        return []
    return sorted(
        folder for folder in install_base.iterdir() if (folder / "share" / "ament_index").is_dir()
    )


def _python_folders(prefix: Path) -> list[Path]:
    return sorted(prefix.glob("lib/python3.*/site-packages")) + sorted(
        prefix.glob("lib/python3.*/dist-packages")
    )


def _has_python_package(install_base: Path, package: str) -> bool:
    """True when the install base holds the generated Python messages of package."""
    return any(
        (folder / package / "msg").is_dir()
        for prefix in _prefixes(install_base)
        for folder in _python_folders(prefix)
    )


def install_env_additions(install_bases: Iterable[Path]) -> dict[str, str]:
    """PYTHONPATH, LD_LIBRARY_PATH and AMENT_PREFIX_PATH entries of colcon install bases.

    Each value holds only the entries of these install spaces (os.pathsep-joined, in order); use
    `prepend_env()` to put them in front of an environment's own entries.
    """
    prefixes = [prefix for base in install_bases for prefix in _prefixes(base)]
    python_folders = [folder for prefix in prefixes for folder in _python_folders(prefix)]
    library_folders = [prefix / "lib" for prefix in prefixes if (prefix / "lib").is_dir()]
    return {
        "PYTHONPATH": os.pathsep.join(str(folder) for folder in python_folders),
        "LD_LIBRARY_PATH": os.pathsep.join(str(folder) for folder in library_folders),
        "AMENT_PREFIX_PATH": os.pathsep.join(str(prefix) for prefix in prefixes),
    }


def _split(value: str | None) -> list[str]:
    return [entry for entry in (value or "").split(os.pathsep) if entry]


def prepend_env(env: dict[str, str], additions: dict[str, str]) -> dict[str, str]:
    """A copy of env with the path lists of additions put in front of its own (no duplicates)."""
    merged = dict(env)
    for name, value in additions.items():
        entries = _split(value) + _split(env.get(name))
        merged[name] = os.pathsep.join(dict.fromkeys(entries))
    return merged


def _is_repository_source(entry: str) -> bool:
    """True for a path into the repository's sources (install/ and build/ do not count)."""
    path = Path(entry).resolve()
    if path != REPO_ROOT and REPO_ROOT not in path.parents:
        return False
    return not any(
        folder == path or folder in path.parents
        for folder in (MAIN_INSTALL, MAIN_BUILD, REPO_ROOT / ".venv")
    )


def ros_domain_id() -> int:
    """A ROS domain per pytest process, so that parallel test runs do not see each other.

    1 to 101: the range that ROS 2 documents as safe on Linux (higher domains can reach into the
    ephemeral port range), leaving out 0, the default domain of any other ROS 2 on the machine.
    """
    return 1 + os.getpid() % 101


def _venv_prefix() -> Path | None:
    """The virtual environment with the ROS 2 wheels, when the tests run in one."""
    for candidate in (os.environ.get("VIRTUAL_ENV"), sys.prefix, str(REPO_ROOT / ".venv")):
        if candidate and (Path(candidate) / "share" / "ament_cmake").is_dir():
            return Path(candidate)
    return None


def installed_dds_profile() -> Path | None:
    """config/fastdds.xml of the main install space; None when nothing is installed yet."""
    profiles = [
        prefix / "share" / "mobilesam_ros" / "config" / "fastdds.xml"
        for prefix in _prefixes(MAIN_INSTALL)
        if (prefix / "share" / "mobilesam_ros").is_dir()
    ]
    if not profiles:
        return None
    if not profiles[0].is_file():
        raise RuntimeError(f"{profiles[0]} is missing: rebuild with scripts/build_ros.sh")
    return profiles[0]


def ros_env(extra_installs: list[Path]) -> dict[str, str]:
    """Environment for running nodes and scripts of install/ and extra_installs in a subprocess.

    PYTHONPATH starts with the install spaces' Python folders and has the repository root (and any
    other source folder of it) removed, so that the installed mobilesam_ros, which holds the
    generated `msg` module, is imported instead of the source tree. Run the subprocess with a
    working directory outside the repository as well: Python puts the script's folder or the
    working directory (for `-c`) in front of sys.path.
    """
    additions = install_env_additions([MAIN_INSTALL, *extra_installs])
    venv = _venv_prefix()
    if venv is not None:
        additions["AMENT_PREFIX_PATH"] = os.pathsep.join(
            [*_split(additions["AMENT_PREFIX_PATH"]), str(venv)]
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        entry for entry in _split(env.get("PYTHONPATH")) if not _is_repository_source(entry)
    )
    env = prepend_env(env, additions)
    # As an activated virtual environment has it: executables that start with
    # `#!/usr/bin/env python3` (the installed nodes, started by ros2 launch) run on this
    # interpreter, and `ros2` is on PATH.
    env = prepend_env(env, {"PATH": str(Path(sys.executable).parent)})
    # Newer ROS 2 releases check message field types and sizes only when asked to.
    env["ROS_PYTHON_CHECK_FIELDS"] = "1"
    env["ROS_DOMAIN_ID"] = str(ros_domain_id())
    # Keep discovery and traffic on loopback: ROS_AUTOMATIC_DISCOVERY_RANGE from Iron on,
    # ROS_LOCALHOST_ONLY for Humble (ignored by releases that dropped it).
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOCALHOST_ONLY"] = "1"
    env.pop("ROS_STATIC_PEERS", None)
    # Every process gets the installed profile through the variable its Fast DDS reads, as the
    # README's "Camera frames lost?" tells users; one set in the calling shell is replaced.
    return with_profile(env, installed_dds_profile())


def _source_hash(source: Path) -> str:
    """Hash of the package's sources and of the interpreter they are built for."""
    digest = hashlib.sha256(f"{sys.version}\n{sys.executable}\n".encode())
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(source).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Holds an exclusive lock on lock_file, so that parallel pytest workers build only once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no parallel builds to guard against
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def installed_test_messages(build_root: Path) -> Path:
    """The colcon install base that build_test_messages() builds into."""
    return Path(build_root) / "install"


def build_test_messages(build_root: Path) -> dict[str, str]:
    """Builds the test-only message packages under build_root; returns its environment additions.

    The build goes to build_root/build and build_root/install; colcon's logs go to the repository's
    log/ as for the main package, and the build's output replaces log/build_ros.log (the script
    names that file itself). It is skipped when build_root/install holds a build of the same
    sources; changed sources are built from scratch.
    The returned PYTHONPATH, LD_LIBRARY_PATH and AMENT_PREFIX_PATH hold only this install's
    entries; add them to an environment with `prepend_env()` (or use
    `ros_env([installed_test_messages(build_root)])`), after which a subprocess can import
    `vision_msgs.msg` and `yolo_msgs.msg`. Raises RuntimeError with the build output when the
    build fails.
    """
    build_root = Path(build_root).resolve()
    install_base = installed_test_messages(build_root)
    stamp = install_base / _STAMP_NAME
    expected = _source_hash(TEST_MESSAGES_SOURCE) + _source_hash(TEST_MESSAGES_DEFINITIONS)

    def up_to_date() -> bool:
        return (
            stamp.is_file()
            and stamp.read_text(encoding="utf-8").strip() == expected
            and all(_has_python_package(install_base, p) for p in TEST_MESSAGE_PACKAGES)
        )

    with _locked(build_root / ".lock"):
        if not up_to_date():
            # rosidl turns .msg files into .idl files when CMake configures, so an incremental
            # build would keep the old definitions: changed sources are built from scratch.
            for folder in (build_root / "build", install_base):
                shutil.rmtree(folder, ignore_errors=True)
            env = dict(os.environ)
            venv = _venv_prefix()
            if venv is not None:
                env["VIRTUAL_ENV"] = str(venv)
            # build_ros.sh passes its arguments to `colcon build` after its own --base-paths,
            # --build-base and --install-base, and colcon keeps the last value of each.
            command = [
                "bash",
                str(BUILD_SCRIPT),
                "--base-paths",
                str(TEST_MESSAGES_SOURCE.relative_to(REPO_ROOT)),
                "--build-base",
                str(build_root / "build"),
                "--install-base",
                str(install_base),
            ]
            result = subprocess.run(
                command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"building the test message packages failed ({' '.join(command)}):\n"
                    f"{result.stdout}\n{result.stderr}"
                )
            if not all(_has_python_package(install_base, p) for p in TEST_MESSAGE_PACKAGES):
                raise RuntimeError(
                    f"colcon built nothing importable into {install_base}:\n{result.stdout}"
                )
            stamp.write_text(expected + "\n", encoding="utf-8")
    return install_env_additions([install_base])


def run_python(script: str, env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run `python -c script args` in `env` from `cwd`; fail with its output, else return it."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout
