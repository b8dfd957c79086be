#!/usr/bin/env bash
# Run the whole suite. Assumes scripts/setup.sh ran (make test does that first).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
# pytest's 5 means "no tests collected": that is a failure for CI, never a pass.
exit $status
