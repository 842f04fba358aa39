#!/usr/bin/env bash
# Install the ROS 2 launch and command-line tools (launch, launch_ros, launch_testing,
# launch_testing_ros, ros2launch, the `ros2` CLI packages) for one ROS 2 distribution into a
# virtual environment built from the ROS 2 wheels, from the folder that
# scripts/find_ros2_tools.sh finds. Their index dependencies are pinned in the environment's
# lock file; composition_interfaces, which launch_ros imports, is built by scripts/build_ros.sh
# (MOBILESAM_ROS_EXTRA_BASE_PATHS, see the Makefile). A stamp in the venv names the wheels
# installed, so a second run does nothing.
#
# Without the folder the step is skipped with a message, except in CI (CI=true), which must
# test with the real tools.
#
# Usage: scripts/install_ros2_tools.sh VENV DISTRO    (DISTRO: kilted or jazzy)
set -euo pipefail

venv="${1:?usage: scripts/install_ros2_tools.sh VENV DISTRO}"
distro="${2:?usage: scripts/install_ros2_tools.sh VENV DISTRO}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! tools="$(bash "$repo_root/scripts/find_ros2_tools.sh")"; then
  if [[ "${CI:-}" == true ]]; then
    echo "[ros2-tools] CI must test with the real ros2 launch, launch_testing and ros2 CLI" >&2
    exit 1
  fi
  echo "[ros2-tools] SKIPPED: launch, launch_testing and the ros2 CLI are not installed into $venv;" \
    "their tests will skip (see the message above)"
  exit 0
fi
wheels=("$tools/$distro"/*.whl)
[[ -f "${wheels[0]}" ]] || { echo "[ros2-tools] no wheels in $tools/$distro" >&2; exit 1; }
stamp="$venv/.ros2-tools-$(ls -l "${wheels[@]}" | awk '{print $5, $9}' | sed "s|$tools/||" | cksum | cut -d' ' -f1)"
[[ -f "$stamp" ]] && exit 0
echo "[ros2-tools] installing ${#wheels[@]} wheels of $tools/$distro into $venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${wheels[@]}"
rm -f "$venv"/.ros2-tools-*
touch "$stamp"
