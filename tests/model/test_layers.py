"""``model`` stands on its own: it never imports ``service`` (the service imports the model).

Two checks, because each misses what the other sees: the import check runs every module of
``model`` with ``service`` made unimportable (catches an import hidden behind a helper), the
static check reads every file (catches an import inside a function nobody called).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "model"
FORBIDDEN = "service"

_IMPORT_ALL = f"""
import importlib, importlib.abc, pkgutil, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {FORBIDDEN!r} or name.startswith({FORBIDDEN!r} + "."):
            raise ImportError(f"model must not import {{name}}")
        return None

sys.meta_path.insert(0, Refuse())
import model
names = [m.name for m in pkgutil.walk_packages(model.__path__, "model.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(n for n in sys.modules if n == {FORBIDDEN!r} or n.startswith({FORBIDDEN!r} + "."))
assert not leaked, leaked
print(len(names))
"""


def test_every_model_module_imports_without_the_service() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) >= 15, "the walk found too few model modules"


def _names_the_service(node: ast.AST) -> bool:
    def forbidden(name: str | None) -> bool:
        return name is not None and (name == FORBIDDEN or name.startswith(FORBIDDEN + "."))

    if isinstance(node, ast.Import):
        return any(forbidden(alias.name) for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and forbidden(node.module)
    if isinstance(node, ast.Call) and node.args:
        # importlib.import_module("service..."), __import__("service")
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        return (
            called in ("import_module", "__import__")
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and forbidden(first.value)
        )
    return False


def test_no_model_file_imports_the_service() -> None:
    files = sorted(MODEL.rglob("*.py"))
    assert len(files) >= 15
    offenders = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in files
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if _names_the_service(node)
    ]
    assert not offenders, f"model imports service at {offenders}"


def test_the_static_check_sees_each_kind_of_import() -> None:
    for source in (
        "import service",
        "import service.config as c",
        "from service.errors import ConfigError",
        "def f():\n    from service import main",
        "import importlib\nimportlib.import_module('service.main')",
        "__import__('service')",
    ):
        assert any(_names_the_service(n) for n in ast.walk(ast.parse(source))), source
    for source in ("import services_extra", "from . import service", "x = 'service'"):
        assert not any(_names_the_service(n) for n in ast.walk(ast.parse(source))), source
