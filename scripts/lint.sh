#!/usr/bin/env bash
# The lint gate, written once: `make lint`, .ci/run (through make lint) and the pre-commit hook
# all run this script. ruff check, ruff format --check, then mypy; each runs even when one before
# failed, so one pass shows every problem, and any failure fails the gate.
# Usage: scripts/lint.sh [PATH...]   (default: ruff on the repo, mypy on model/ and service/)
set -uo pipefail
paths=()
for p in "$@"; do paths+=("$(realpath "$p")"); done  # before the cd: paths are the caller's
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
if ((${#paths[@]})); then
    ruff_paths=("${paths[@]}")
    mypy_paths=("${paths[@]}")
else
    ruff_paths=(.)
    mypy_paths=(model service)
fi
# --config: paths outside the repo (the gate's own test) get the repo's rules too.
config=(--config "$PWD/pyproject.toml")
failed=()
"$VENV/bin/ruff" check "${config[@]}" "${ruff_paths[@]}" || failed+=("ruff check")
"$VENV/bin/ruff" format --check "${config[@]}" "${ruff_paths[@]}" || failed+=("ruff format")
"$VENV/bin/mypy" "${mypy_paths[@]}" || failed+=(mypy)
if ((${#failed[@]})); then
    echo "lint: failed: ${failed[*]} (\`make format\` fixes what ruff can)" >&2
    exit 1
fi
echo "lint: passed"
