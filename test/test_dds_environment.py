"""The environment that every DDS test process gets names the installed Fast DDS profile.

The tests run the node and its peers the way the README tells users to: the profile variable that
their Fast DDS reads points at the installed config/fastdds.xml, whatever the calling shell had.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ros_test_env

from mobilesam_ros.ros.dds_profile import (
    FAST_DDS_2_PROFILE_VARIABLE,
    FAST_DDS_3_PROFILE_VARIABLE,
    launch_environment,
    with_profile,
)


@pytest.fixture()
def fake_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated colcon install base holding only mobilesam_ros's config/fastdds.xml."""
    prefix = tmp_path / "install" / "mobilesam_ros"
    (prefix / "share" / "ament_index").mkdir(parents=True)
    profile = prefix / "share" / "mobilesam_ros" / "config" / "fastdds.xml"
    profile.parent.mkdir(parents=True)
    profile.write_text("<profiles/>")
    monkeypatch.setattr(ros_test_env, "MAIN_INSTALL", tmp_path / "install")
    return profile


def test_ros_env_names_the_installed_profile(fake_install, monkeypatch) -> None:
    monkeypatch.delenv("ROS_DISTRO", raising=False)
    monkeypatch.setenv(FAST_DDS_2_PROFILE_VARIABLE, "/elsewhere/profile.xml")  # from the shell
    env = ros_test_env.ros_env([])
    assert env[FAST_DDS_3_PROFILE_VARIABLE] == str(fake_install)
    assert FAST_DDS_2_PROFILE_VARIABLE not in env


@pytest.mark.parametrize(
    ("distro", "variable", "other"),
    [
        ("humble", FAST_DDS_2_PROFILE_VARIABLE, FAST_DDS_3_PROFILE_VARIABLE),
        ("jazzy", FAST_DDS_2_PROFILE_VARIABLE, FAST_DDS_3_PROFILE_VARIABLE),
        ("kilted", FAST_DDS_3_PROFILE_VARIABLE, FAST_DDS_2_PROFILE_VARIABLE),
    ],
)
def test_ros_env_uses_the_variable_of_the_distribution(
    fake_install, monkeypatch, distro, variable, other
) -> None:
    monkeypatch.setenv("ROS_DISTRO", distro)
    env = ros_test_env.ros_env([])
    assert env[variable] == str(fake_install)
    assert other not in env


def test_install_without_the_profile_is_an_error(fake_install) -> None:
    fake_install.unlink()
    with pytest.raises(RuntimeError, match=r"fastdds\.xml is missing"):
        ros_test_env.ros_env([])


def test_with_profile_none_removes_both_variables() -> None:
    env = {FAST_DDS_2_PROFILE_VARIABLE: "a", FAST_DDS_3_PROFILE_VARIABLE: "b", "PATH": "/bin"}
    assert with_profile(env, None) == {"PATH": "/bin"}


def test_launch_environment_gives_the_profile_only_where_nothing_else_decides(tmp_path) -> None:
    profile = tmp_path / "fastdds.xml"
    profile.write_text("<profiles/>")
    env, said = launch_environment(str(profile), {"ROS_DISTRO": "humble"})
    assert env == {FAST_DDS_2_PROFILE_VARIABLE: str(profile)} and str(profile) in said
    env, said = launch_environment(str(profile), {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"})
    assert env == {FAST_DDS_3_PROFILE_VARIABLE: str(profile)}
    # The user's exported profile (which the camera driver's shell uses too) wins.
    env, said = launch_environment(str(profile), {FAST_DDS_3_PROFILE_VARIABLE: "/mine.xml"})
    assert env == {} and "/mine.xml" in said
    # Another middleware does not read Fast DDS profiles.
    env, said = launch_environment(str(profile), {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"})
    assert env == {} and "rmw_cyclonedds_cpp" in said
    env, said = launch_environment("", {})
    assert env == {} and "empty" in said
    with pytest.raises(FileNotFoundError, match="dds_profile"):
        launch_environment(str(tmp_path / "missing.xml"), {})
