#!/usr/bin/env bash
# Run one step of `make test` and print how long it took: `[step] NAME: N s (exit CODE)`.
# The same line is appended to log/steps.txt, so that a whole run's costs can be read together.
#
# Usage: scripts/timed_step.sh NAME COMMAND [ARGS...]
set -uo pipefail

name="${1:?usage: scripts/timed_step.sh NAME COMMAND [ARGS...]}"
shift
start_s=$SECONDS
"$@"
code=$?
line="[step] $name: $((SECONDS - start_s)) s (exit $code)"
printf '%s\n' "$line"
mkdir -p log
printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$line" >>log/steps.txt
exit "$code"
