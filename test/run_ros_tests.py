"""Run the tests that need the colcon install space (test/ros: the ROS layer in one process;
test/dds: the installed node as users run it) in a pytest process prepared for it.

The node's messages are generated into install/, not the source tree, and the compiled message
libraries load only with the install's lib folders on LD_LIBRARY_PATH, which must be set when a
process starts. So this builds the test-only message packages (cached), prepares that
environment (which names the installed Fast DDS profile, see ros_test_env.ros_env) and replaces
itself with pytest. Extra arguments go to pytest.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# test/ for ros_test_env; the repository root for the package's ROS-free modules, which an
# environment without the package installed (the Jazzy venv) does not otherwise find.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from ros_test_env import (  # noqa: E402
    MAIN_INSTALL,
    REPO_ROOT,
    TEST_MESSAGES_BUILD_ROOT,
    build_test_messages,
    installed_dds_profile,
    installed_test_messages,
    ros_env,
)


def main() -> None:
    package_prefix = MAIN_INSTALL / "mobilesam_ros"
    if not (package_prefix / "lib" / "mobilesam_ros" / "seg_node").is_file():
        sys.exit(f"{package_prefix} has no seg_node: run scripts/build_ros.sh (make setup) first")
    if installed_dds_profile() is None:
        sys.exit(f"{package_prefix} has no config/fastdds.xml: rebuild with scripts/build_ros.sh")
    build_test_messages(TEST_MESSAGES_BUILD_ROOT)
    env = ros_env([installed_test_messages(TEST_MESSAGES_BUILD_ROOT)])
    env["MOBILESAM_ROS_INSTALL_PREFIX"] = str(package_prefix)
    pytest = Path(sys.executable).parent / "pytest"
    # The console script puts its own folder first on sys.path, not the working directory, so
    # the installed mobilesam_ros (with its generated msg module) wins over the source tree.
    os.chdir(REPO_ROOT)
    # Both folders unless the arguments name test files or folders themselves.
    named = [a for a in sys.argv[1:] if Path(a.split("::")[0]).exists()]
    folders = [] if named else [str(Path("test") / "ros"), str(Path("test") / "dds")]
    args = [str(pytest), "-q", *folders, *sys.argv[1:]]
    os.execve(args[0], args, env)


if __name__ == "__main__":
    main()
