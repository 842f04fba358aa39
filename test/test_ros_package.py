"""Checks of the ROS 2 package: package.xml and the colcon install space.

The install space is built by scripts/build_ros.sh (make builds it before the tests). These tests
only import from it in a fresh interpreter, with the repository kept off sys.path; no node is
started and no rclpy context is created.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from ros_test_env import ros_env, run_python

pytest.importorskip("rclpy", reason="needs ROS 2 Python packages (rclpy)")

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_BASE = REPO_ROOT / "install"
PACKAGE_NAME = "mobilesam_ros"
MESSAGES = ("Prompt", "PromptArray", "InstanceMask", "InstanceMaskArray")

# A rosdep key or ROS package name: lower case letters, digits, '_' and '-'.
DEPENDENCY_KEY = re.compile(r"[a-z0-9][a-z0-9_\-]*")

# Runs in a fresh interpreter whose sys.path holds the install space but not the repository.
# argv: install base, repository root.
INSTALL_SPACE_CHECK = textwrap.dedent(
    """
    import array
    import sys
    from pathlib import Path

    import numpy as np
    from geometry_msgs.msg import Point
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image, RegionOfInterest
    from std_msgs.msg import Header

    import mobilesam_ros.core
    import mobilesam_ros.msg
    from mobilesam_ros.core import Segmenter
    from mobilesam_ros.msg import InstanceMask, InstanceMaskArray, Prompt, PromptArray

    install_base = Path(sys.argv[1]).resolve()
    repo_root = Path(sys.argv[2]).resolve()

    def check(condition, message):
        if not condition:
            raise SystemExit(f"FAILED: {message}")

    for entry in sys.path:
        check(Path(entry or ".").resolve() != repo_root, f"repository root on sys.path: {entry!r}")
    for module in (mobilesam_ros.msg, mobilesam_ros.core):
        check(install_base in Path(module.__file__).resolve().parents,
              f"{module.__name__} imported from {module.__file__}, not from {install_base}")
    check(callable(Segmenter), "Segmenter is not a class")

    prompt = Prompt()
    check(prompt.id == "" and prompt.has_box is False, "Prompt defaults")
    check(isinstance(prompt.box, np.ndarray) and prompt.box.dtype == np.float32
          and prompt.box.shape == (4,) and not prompt.box.any(), f"Prompt.box: {prompt.box!r}")
    check(isinstance(prompt.point_labels, array.array) and prompt.point_labels.typecode == "B"
          and len(prompt.point_labels) == 0, f"Prompt.point_labels: {prompt.point_labels!r}")
    check(prompt.points == [], "Prompt.points default")
    check((Prompt.LABEL_BACKGROUND, Prompt.LABEL_FOREGROUND) == (0, 1), "label constants")
    try:
        Prompt(box=[1.0, 2.0, 3.0])
    except (AssertionError, ValueError):
        pass
    else:
        check(False, "Prompt.box accepted 3 values")

    prompt = Prompt(id="cup", has_box=True, box=[10.0, 20.0, 110.5, 220.0],
                    points=[Point(x=50.0, y=60.0)], point_labels=[Prompt.LABEL_FOREGROUND])
    prompts = PromptArray(header=Header(frame_id="camera"), prompts=[prompt])
    check(deserialize_message(serialize_message(prompts), PromptArray) == prompts,
          "PromptArray serialization round trip")

    instance = InstanceMask()
    check(instance.id == "" and instance.class_id == "", "InstanceMask string defaults")
    check(instance.detection_score == 0.0 and instance.predicted_iou == 0.0, "score defaults")
    check(isinstance(instance.roi, RegionOfInterest), f"roi is {type(instance.roi)}")
    check(isinstance(instance.mask, Image), f"mask is {type(instance.mask)}")

    header = Header(frame_id="camera")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    mask = Image(header=header, height=2, width=3, encoding="mono8", step=3,
                 data=[0, 255, 255, 0, 255, 0])
    # Scores are float32 on the wire: 0.75 and 0.5 survive the round trip exactly.
    instance = InstanceMask(id="cup", class_id="41", detection_score=0.75, predicted_iou=0.5,
                            roi=RegionOfInterest(x_offset=4, y_offset=5, height=2, width=3),
                            mask=mask)
    masks = InstanceMaskArray(header=header, instances=[instance])
    check(len(masks.instances) == 1 and masks.instances[0].mask.width == 3, "InstanceMaskArray")
    round_trip = deserialize_message(serialize_message(masks), InstanceMaskArray)
    check(round_trip == masks, "InstanceMaskArray serialization round trip")
    check(bytes(round_trip.instances[0].mask.data) == bytes([0, 255, 255, 0, 255, 0]),
          "mask pixels after round trip")
    print("install space ok")
    """
)


def _install_site_packages() -> list[Path]:
    """Python folders of the install space that hold the package (isolated or merged layout)."""
    patterns = (
        f"{PACKAGE_NAME}/lib/python3*/site-packages",
        f"{PACKAGE_NAME}/lib/python3*/dist-packages",
        "lib/python3*/site-packages",
        "lib/python3*/dist-packages",
    )
    folders = [folder for pattern in patterns for folder in sorted(INSTALL_BASE.glob(pattern))]
    return [folder for folder in folders if (folder / PACKAGE_NAME / "msg").is_dir()]


def test_install_space_provides_messages_and_core(tmp_path: Path) -> None:
    if not (INSTALL_BASE / "setup.sh").is_file():
        pytest.skip(
            "install/setup.sh is missing: build the ROS package first with "
            "`bash scripts/build_ros.sh` (the Makefile does this before the tests)"
        )
    assert _install_site_packages(), (
        f"{INSTALL_BASE} has no Python folder with {PACKAGE_NAME}/msg: rebuild it with "
        "`bash scripts/build_ros.sh`"
    )
    # The install space first, the repository's sources off the path (see ros_test_env).
    env = ros_env([])

    output = run_python(INSTALL_SPACE_CHECK, env, tmp_path, str(INSTALL_BASE), str(REPO_ROOT))
    assert "install space ok" in output


def test_package_xml_describes_an_ament_cmake_interface_package() -> None:
    catkin_package = pytest.importorskip("catkin_pkg.package")
    package = catkin_package.parse_package(str(REPO_ROOT / "package.xml"))

    assert package.name == PACKAGE_NAME
    assert package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]

    dependency_lists = {
        "buildtool_depend": package.buildtool_depends,
        "build_depend": package.build_depends,
        "build_export_depend": package.build_export_depends,
        "exec_depend": package.exec_depends,
        "test_depend": package.test_depends,
    }
    for tag, dependencies in dependency_lists.items():
        for dependency in dependencies:
            assert DEPENDENCY_KEY.fullmatch(dependency.name), f"<{tag}> {dependency.name!r}"

    build = {dependency.name for dependency in package.build_depends}
    run = {dependency.name for dependency in package.exec_depends}
    assert {"rosidl_default_generators", "ament_cmake"} <= {
        dependency.name for dependency in package.buildtool_depends
    }
    assert {"std_msgs", "sensor_msgs", "geometry_msgs"} <= build & run
    assert {"rclpy", "rosidl_default_runtime", "vision_msgs"} <= run
    # The node runs without vision_msgs, so building must not need it.
    assert "vision_msgs" not in build


def test_every_message_file_is_generated() -> None:
    message_files = {path.stem for path in (REPO_ROOT / "msg").glob("*.msg")}
    assert message_files == set(MESSAGES)
    cmake_lists = (REPO_ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for name in MESSAGES:
        assert f'"msg/{name}.msg"' in cmake_lists, f"msg/{name}.msg is not generated"


def test_rosdep_keys_leave_pip_packages_to_the_requirements_file() -> None:
    """rosdep pip keys fail on Ubuntu 24.04 (PEP 668): pip-only needs go in requirements/ros.txt"""
    catkin_package = pytest.importorskip("catkin_pkg.package")
    from mobilesam_ros.core.model.export import EXPORT_DEPENDENCIES

    package = catkin_package.parse_package(str(REPO_ROOT / "package.xml"))
    keys = [
        dependency.name
        for dependencies in (
            package.buildtool_depends,
            package.build_depends,
            package.exec_depends,
            package.test_depends,
        )
        for dependency in dependencies
    ]
    assert not [key for key in keys if key.endswith("-pip")]
    lines = (REPO_ROOT / "requirements" / "ros.txt").read_text(encoding="utf-8").splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    names = {re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].lower() for line in requirements}
    assert "onnxruntime" in names
    for _, requirement in EXPORT_DEPENDENCIES:
        assert requirement in requirements or requirement in names, requirement
