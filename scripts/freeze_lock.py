"""Print `pip freeze` of a virtual environment as a lock file body, without the ROS wheels' own
egg-info entries (std_msgs, rclpy, ...): the ros-* wheels lay those down themselves, and pip
cannot install them by those names.

Usage: <venv>/bin/python scripts/freeze_lock.py > requirements/<name>.lock.body
"""

from __future__ import annotations

import re
import subprocess
import sys


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    pins = [line for line in frozen if "==" in line and not line.startswith("#")]
    names = {canonical(line.split("==")[0]) for line in pins}
    for line in sorted(pins, key=str.lower):
        name = canonical(line.split("==")[0])
        if not name.startswith("ros-") and f"ros-{name}" in names:
            continue
        print(line)


if __name__ == "__main__":
    main()
