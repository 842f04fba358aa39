#!/usr/bin/env bash
# Build the ROS 2 package at the repository root with colcon into build/ and install/.
# Quiet: the build's output goes to log/build_ros.log and is shown only when the build fails.
#
# MOBILESAM_ROS_BUILD_BASE and MOBILESAM_ROS_INSTALL_BASE (relative to the repository root or
# absolute) put the build elsewhere, e.g. build-jazzy/ and install-jazzy/ for a second ROS 2
# distribution's wheels in another virtual environment; test/ros_test_env.py reads the same names.
# MOBILESAM_ROS_EXTRA_BASE_PATHS (space-separated folders) builds other packages into the same
# install base, e.g. composition_interfaces, which launch_ros needs and the wheels lack.
# MOBILESAM_ROS_BUILD_TESTING=ON builds with BUILD_TESTING on (then `colcon test` runs the
# package's tests); default OFF.
#
# Builds against the ROS 2 wheels of a virtual environment ($VIRTUAL_ENV, else .venv at the
# repository root) when it holds them; otherwise against a sourced ROS 2 install
# (source /opt/ros/<distro>/setup.bash first). Safe to run again: an unchanged tree only
# re-checks the build.
#
# Usage: scripts/build_ros.sh [extra `colcon build` arguments]
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
build_base="${MOBILESAM_ROS_BUILD_BASE:-build}"
install_base="${MOBILESAM_ROS_INSTALL_BASE:-install}"

log() { printf '[build_ros] %s\n' "$*"; }
die() {
  printf '[build_ros] error: %s\n' "$*" >&2
  exit 1
}

# The wheels' exported CMake targets name include folders of the machine that built them (a
# manylinux Python under /opt/python/...). CMake refuses targets whose include folders do not
# exist, so each missing one is linked to the matching folder of this interpreter.
link_missing_wheel_include_dirs() {
  local venv="$1" python="$2"
  local missing=() dir target
  # Absolute entries of INTERFACE_INCLUDE_DIRECTORIES; the wheels' own ones start with
  # ${_IMPORT_PREFIX} and are left out by the grep for a leading slash.
  wheel_include_dirs="$(grep -rhoE --include='*.cmake' 'INTERFACE_INCLUDE_DIRECTORIES "[^"]*"' \
    "$venv/share" 2>/dev/null | sed -E 's/^[^"]*"(.*)"$/\1/' | tr ';' '\n' | grep '^/' |
    sort -u || true)"
  while IFS= read -r dir; do
    [[ -z "$dir" || -e "$dir" ]] && continue
    missing+=("$dir")
  done <<<"$wheel_include_dirs"
  ((${#missing[@]} == 0)) && return 0

  for dir in "${missing[@]}"; do
    case "$dir" in
      */include/python3*)
        target="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" ;;
      */numpy/_core/include | */numpy/core/include)
        target="$("$python" -c 'import numpy; print(numpy.get_include())')" ;;
      *)
        die "the ROS wheels need the include folder $dir, which does not exist and is" \
          "neither a Python nor a NumPy include folder; create it by hand" ;;
    esac
    [[ -d "$target" ]] || die "include folder $target of $python not found (needed for $dir)"
    log "linking $dir -> $target (include folder named by the ROS wheels)"
    if ! { mkdir -p "$(dirname "$dir")" && ln -sfn "$target" "$dir"; } 2>/dev/null; then
      die "cannot create $dir (no write access to $(dirname "$dir")). Create it as root:" \
        "sudo mkdir -p '$(dirname "$dir")' && sudo ln -sfn '$target' '$dir'"
    fi
  done
}

# CMake packages this build finds in a wheels prefix; each comes from the wheel ros-<name with
# dashes>. Checked first so that a missing one is named instead of failing deep inside CMake.
# (The same list holds for Jazzy's and Kilted's wheels.)
required_wheel_packages=(
  ament_cmake ament_cmake_python ament_cmake_ros python_cmake_module
  rosidl_default_generators rosidl_core_generators rosidl_default_runtime
  std_msgs sensor_msgs geometry_msgs
)

check_wheel_packages() {
  local venv="$1" package missing=()
  for package in "${required_wheel_packages[@]}"; do
    [[ -d "$venv/share/$package/cmake" ]] || missing+=("ros-${package//_/-}")
  done
  if ((${#missing[@]} > 0)); then
    die "the ROS 2 wheels in $venv lack: ${missing[*]} (install them with pip into $venv)"
  fi
}

wheel_include_dirs=""
cmake_args=()
venv=""
for candidate in "${VIRTUAL_ENV:-}" "$repo_root/.venv"; do
  if [[ -n "$candidate" && -d "$candidate/share/ament_cmake" ]]; then
    venv="$candidate"
    break
  fi
done

if [[ -n "$venv" ]]; then
  python="$venv/bin/python"
  colcon="$venv/bin/colcon"
  [[ -x "$python" ]] || die "$python not found"
  [[ -x "$colcon" ]] || die "colcon is not installed in $venv (install the dev requirements)"
  check_wheel_packages "$venv"
  link_missing_wheel_include_dirs "$venv" "$python"
  # The generated Python bindings export NumPy's include folder. CMake refuses exported include
  # folders inside the source tree, where .venv lives, so name NumPy's headers through a path
  # outside it: the one the wheels use (linked above), else a link in the user's cache folder.
  numpy_include="$("$python" -c 'import numpy; print(numpy.get_include())')"
  if [[ "$numpy_include/" == "$repo_root/"* ]]; then
    outside_link="$(printf '%s\n' "$wheel_include_dirs" | grep -E '/numpy/_?core/include$' |
      head -n 1 || true)"
    if [[ -z "$outside_link" ]]; then
      outside_link="${XDG_CACHE_HOME:-$HOME/.cache}/mobilesam_ros/numpy-include"
      if [[ "$(readlink "$outside_link" 2>/dev/null || true)" != "$numpy_include" ]]; then
        mkdir -p "$(dirname "$outside_link")"
        ln -sfn "$numpy_include" "$outside_link"
        log "linking $outside_link -> $numpy_include"
      fi
    fi
    cmake_args+=("-DPython3_NumPy_INCLUDE_DIR=$outside_link")
  fi
  # Only the wheels' prefix: a workspace sourced earlier must not leak into this build.
  export AMENT_PREFIX_PATH="$venv"
  export CMAKE_PREFIX_PATH="$venv"
  export PATH="$venv/bin:$PATH"
  log "building against the ROS 2 wheels in $venv"
elif [[ -n "${AMENT_PREFIX_PATH:-}" ]]; then
  python="$(command -v python3)" || die "python3 not found"
  colcon="$(command -v colcon)" || die "colcon not found (apt install python3-colcon-common-extensions)"
  log "building against the sourced ROS 2 ${ROS_DISTRO:-install} ($AMENT_PREFIX_PATH)"
else
  die "no ROS 2 found: neither a virtual environment with the ROS 2 wheels" \
    "(\$VIRTUAL_ENV or $repo_root/.venv) nor a sourced ROS 2 install" \
    "(source /opt/ros/<distro>/setup.bash)"
fi

# colcon's own console output is long; it goes to a log file, shown in part when the build fails.
mkdir -p log
build_log="log/build_ros.log"
start_s=$SECONDS
extra_base_paths=()
read -r -a extra_base_paths <<<"${MOBILESAM_ROS_EXTRA_BASE_PATHS:-}"
if ! "$colcon" --log-base log build \
  --base-paths "$repo_root" ${extra_base_paths[@]+"${extra_base_paths[@]}"} \
  --build-base "$build_base" \
  --install-base "$install_base" \
  "$@" \
  --cmake-args "-DPython3_EXECUTABLE=$python" "-DBUILD_TESTING=${MOBILESAM_ROS_BUILD_TESTING:-OFF}" \
  ${cmake_args[@]+"${cmake_args[@]}"} >"$build_log" 2>&1; then
  printf '%s\n' "----- last lines of $build_log -----" >&2
  tail -n 60 "$build_log" >&2
  die "colcon build failed; full output in $build_log"
fi
grep -E '^(Finished|Summary)' "$build_log" || true
log "done in $((SECONDS - start_s)) s (output in $build_log); use it with: source $install_base/setup.sh"
