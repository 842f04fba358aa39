"""Which Fast DDS profile file a process gets, decided in one place for the launch file,
dds_check, the demo and the tests.

Fast DDS 2.x (Humble: 2.6, Jazzy: 2.14) reads FASTRTPS_DEFAULT_PROFILES_FILE, Fast DDS 3 (Kilted
and later) FASTDDS_DEFAULT_PROFILES_FILE; Kilted's rmw still reads the first, with a deprecation
warning. Only the standard library: the launch file imports this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

FAST_DDS_2_PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
FAST_DDS_3_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_VARIABLES = (FAST_DDS_2_PROFILE_VARIABLE, FAST_DDS_3_PROFILE_VARIABLE)
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
# RMW_IMPLEMENTATION values that mean Fast DDS (unset means the default, Fast DDS, too).
FAST_DDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def profile_variable(ros_distro: str | None = None) -> str:
    """The variable that the Fast DDS of this ROS distribution reads its profile file from.

    Unknown or unset distributions (the ROS 2 wheels set no ROS_DISTRO) get the Fast DDS 3 name.
    """
    distro = (ros_distro if ros_distro is not None else os.environ.get("ROS_DISTRO", "")).lower()
    return (
        FAST_DDS_2_PROFILE_VARIABLE
        if distro.strip() in FAST_DDS_2_DISTROS
        else FAST_DDS_3_PROFILE_VARIABLE
    )


def profile_in_effect(env: Mapping[str, str] | None = None) -> str | None:
    """The profile file the environment names, in the order Fast DDS 3 and 2 read them."""
    env = os.environ if env is None else env
    for name in (FAST_DDS_3_PROFILE_VARIABLE, FAST_DDS_2_PROFILE_VARIABLE):
        if env.get(name):
            return env[name]
    return None


def with_profile(
    env: Mapping[str, str], profile: str | Path | None, ros_distro: str | None = None
) -> dict[str, str]:
    """A copy of env that names profile (None: no profile) in the variable of ros_distro."""
    result = {k: v for k, v in env.items() if k not in PROFILE_VARIABLES}
    if profile is not None:
        distro = ros_distro if ros_distro is not None else env.get("ROS_DISTRO", "")
        result[profile_variable(distro)] = str(profile)
    return result


def launch_environment(profile: str, env: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """What the launch file adds to its processes' environment for `dds_profile`, and a line
    for the log that says which middleware configuration is in effect.

    The profile applies only where nothing else decides: not when the shell already exported a
    Fast DDS profile (the user's choice, and the camera driver's processes use it too), nor when
    RMW_IMPLEMENTATION names another middleware, which would not read it.
    """
    profile = profile.strip()
    rmw = env.get("RMW_IMPLEMENTATION", "").strip()
    if rmw and rmw not in FAST_DDS_RMWS:
        return {}, (
            f"RMW_IMPLEMENTATION={rmw}: dds_profile (a Fast DDS profile) not applied; that "
            "middleware's own configuration is in effect"
        )
    exported = [name for name in PROFILE_VARIABLES if env.get(name)]
    if exported:
        named = ", ".join(f"{name}={env[name]}" for name in exported)
        return {}, f"Fast DDS profile exported in this shell ({named}): in effect, not dds_profile"
    if not profile:
        return {}, "dds_profile empty: the middleware's default configuration is in effect"
    if not Path(profile).is_file():
        raise FileNotFoundError(f"launch argument dds_profile:={profile!r}: no such file")
    variable = profile_variable(env.get("ROS_DISTRO", ""))
    return {variable: profile}, f"Fast DDS profile in effect: {profile} ({variable})"
