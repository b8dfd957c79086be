"""The same gates everywhere: CI, `make lint` and pre-commit run one lint script, and that script
fails on a lint error. Runs the script on a small temporary folder, never on the repo (mypy over
model/ and service/ is `make lint`'s job, not the suite's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
LINT = REPO / "scripts" / "lint.sh"
CLEAN = '"""A module the gate accepts."""\n\n\ndef double(x: int) -> int:\n    return 2 * x\n'


def lint(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(LINT), str(folder)], capture_output=True, text=True, timeout=120
    )


def test_lint_gate_passes_clean_code_and_fails_each_kind_of_problem(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "good.py").write_text(CLEAN)
    result = lint(clean)
    assert result.returncode == 0, result.stdout + result.stderr

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "unused.py").write_text('import os\n\n"""Imports what it never uses."""\n')
    (bad / "layout.py").write_text("x = {'a':1}\n")
    (bad / "typed.py").write_text('count: int = "three"\n')
    result = lint(bad)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "F401" in out, out  # ruff check
    assert "layout.py" in out and "reformat" in out, out  # ruff format --check
    assert 'type "str", variable has type "int"' in out, out  # mypy
    assert "failed: ruff check ruff format mypy" in out


def test_ci_make_and_pre_commit_all_run_the_one_script() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "make lint" in ci and "make test" in ci
    makefile = (REPO / "Makefile").read_text()
    lint_recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/lint.sh" in lint_recipe
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in config["repos"]), "no hook downloads"
    assert [hook["entry"] for hook in hooks] == ["scripts/lint.sh"]
    assert all(hook["language"] == "system" for hook in hooks)


def test_ci_fails_when_either_gate_fails(tmp_path: Path) -> None:
    """.ci/run with a `make` that fails one target: CI fails and still runs the other."""
    for failing in ("lint", "test"):
        fake = tmp_path / failing
        fake.mkdir()
        (fake / "make").write_text(
            f'#!/bin/sh\necho "ran $1" >> "{fake}/log"\n[ "$1" != {failing} ]\n'
        )
        (fake / "make").chmod(0o755)
        result = subprocess.run(
            ["bash", str(REPO / ".ci" / "run")],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": f"{fake}:/usr/bin:/bin"},
        )
        assert result.returncode != 0, failing
        assert (fake / "log").read_text().split("\n")[:2] == ["ran lint", "ran test"]
