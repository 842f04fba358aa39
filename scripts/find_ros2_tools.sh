#!/usr/bin/env bash
# Print the folder of wheels of the ROS 2 launch and command-line tools (launch, launch_ros,
# launch_testing, the `ros2` CLI) and the sources of composition_interfaces, for environments
# built from the ROS 2 wheels, which lack them (see its README): $ROS2_TOOLS when set, else
# the first `shared/ros2-tools` found beside the repository or beside one of its parent
# folders. Exits 1 with the reason on stderr when there is none.
#
# Usage: scripts/find_ros2_tools.sh
set -euo pipefail

is_tools() { [[ -d "$1/kilted" && -d "$1/jazzy" && -d "$1/src" ]]; }

if [[ -n "${ROS2_TOOLS:-}" ]]; then
  is_tools "$ROS2_TOOLS" || { echo "find_ros2_tools: ROS2_TOOLS=$ROS2_TOOLS holds no kilted/, jazzy/ and src/" >&2; exit 1; }
  (cd "$ROS2_TOOLS" && pwd)
  exit 0
fi
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
while [[ "$dir" != "/" ]]; do
  dir="$(dirname "$dir")"
  if is_tools "$dir/shared/ros2-tools"; then
    printf '%s\n' "$dir/shared/ros2-tools"
    exit 0
  fi
done
echo "find_ros2_tools: no shared/ros2-tools beside the repository or its parent folders;" \
  "set ROS2_TOOLS to the folder with the wheels of launch, launch_ros, launch_testing and ros2cli" >&2
exit 1
