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
    assert "Contracts: 1 kept, 0 broken." in out.stdout


def test_no_import_cycles_between_modules():
    """Also lazy (function-level) imports: import-linter counts them, so a cycle hidden in a function fails too."""
    import grimp

    graph = grimp.build_graph("xltlib")
    modules = sorted(m for m in graph.modules if m.count(".") == 1)
    for a in modules:
        for b in modules:
            if a < b and graph.direct_import_exists(importer=a, imported=b) \
                    and graph.chain_exists(importer=b, imported=a):
                raise AssertionError(f"import cycle between {a} and {b}")


def test_every_module_has_a_layer():
    """A module missing from the layers contract would escape it: list every module of the package."""
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    listed = {m.strip() for layer in layers for m in layer.split("|")}
    modules = {f"xltlib.{p.stem}" for p in (ROOT / "xltlib").glob("*.py") if p.stem != "__init__"}
    modules |= {f"xltlib.{p.name}" for p in (ROOT / "xltlib").iterdir() if (p / "__init__.py").exists()}
    assert modules <= listed, sorted(modules - listed)
