#!/usr/bin/env bash
# Runs the test suite (arguments go to pytest). Run scripts/setup.sh first.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/python ]; then
  echo "test: error: no .venv here: run scripts/setup.sh first" >&2
  exit 1
fi

.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  # pytest says 5 when it collected nothing: a suite that tests nothing must not pass.
  echo "test: error: pytest collected no tests (arguments: ${*:-none})" >&2
  exit 1
fi
exit "$status"
