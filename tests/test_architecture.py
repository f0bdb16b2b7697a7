"""Imports go one way: the import-linter contracts in pyproject.toml hold (a cycle or an upward import fails)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_cycles_between_modules():
    """Between any two modules at any depth: a cycle inside a layer fails too."""
    import grimp

    graph = grimp.build_graph("xltlib")
    modules = sorted(graph.modules)
    for a in modules:
        for b in graph.find_modules_directly_imported_by(a):
            if b != a and not a.startswith(b + ".") and graph.chain_exists(importer=b, imported=a):
                raise AssertionError(f"import cycle between {a} and {b}")


def test_every_module_has_a_layer():
    """A module outside every layer of the contract would escape it."""
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    listed = {m.strip() for layer in layers for m in layer.split("|")}
    for p in (ROOT / "xltlib").rglob("*.py"):
        parts = ("xltlib",) + p.relative_to(ROOT / "xltlib").with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if len(parts) == 1 or (len(parts) == 2 and p.name == "__init__.py"):
            continue  # the root package and a layer package's own __init__
        assert any(".".join(parts[:k]) in listed for k in range(2, len(parts) + 1)), ".".join(parts)


def test_imports_sit_at_the_top_of_modules():
    """A module's header shows what it depends on: no import inside a function, except optional packages."""
    import ast

    optional = {"ray"}  # the Ray executor's extra (pip install xltlib[scale])
    for p in (ROOT / "xltlib").rglob("*.py"):
        tree = ast.parse(p.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            guarded = {id(x) for t in ast.walk(fn) if isinstance(t, ast.Try) for x in ast.walk(t)}
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in guarded:
                    mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    assert mod.split(".")[0] in optional, f"{p.relative_to(ROOT)}:{node.lineno} imports {mod} in {fn.name}"
