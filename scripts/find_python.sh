#!/usr/bin/env bash
# Print the path of a Python interpreter of the given version (e.g. 3.10): `pythonX.Y` on PATH,
# else one that pyenv installed. Exits 1 with the reason on stderr when there is none.
#
# Usage: scripts/find_python.sh 3.10
set -euo pipefail

version="${1:?usage: scripts/find_python.sh X.Y}"
[[ "$version" =~ ^3\.[0-9]+$ ]] || { echo "find_python: version must look like 3.10, got '$version'" >&2; exit 2; }

works() { "$1" -c "import sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" 2>/dev/null; }

candidates=()
# A pyenv shim on PATH fails when that version is not selected, so each candidate is run once.
command -v "python$version" >/dev/null 2>&1 && candidates+=("$(command -v "python$version")")
# pyenv's root as pyenv names it, else its default place (pyenv itself may not be on PATH).
pyenv_root="$(pyenv root 2>/dev/null || printf '%s' "${PYENV_ROOT:-$HOME/.pyenv}")"
for dir in "$pyenv_root"/versions/"$version".*/; do
  [[ -x "${dir}bin/python$version" ]] && candidates+=("${dir}bin/python$version")
done
for candidate in ${candidates[@]+"${candidates[@]}"}; do
  if works "$candidate"; then
    printf '%s\n' "$candidate"
    exit 0
  fi
done
echo "find_python: no Python $version with venv found (looked for python$version on PATH and in" \
  "pyenv's versions); install it, e.g. 'pyenv install $version' or 'apt install python$version-venv'" >&2
exit 1
