"""Shared fixtures: the real data folder (read-only) and one model cache for the whole session."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# One converted me5-small / tiny-random checkpoint reused by every test (and every run).
os.environ.setdefault("XLT_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "xlt-test-cache"))

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_data_dir() -> Path | None:
    """$XLT_DATA_DIR or ../shared/data next to the repository; None when absent."""
    d = Path(os.environ.get("XLT_DATA_DIR") or DEFAULT_DATA_DIR)
    return d if d.is_dir() else None


def pytest_report_header(config) -> str:
    """Say which tier runs: a plain `pytest` deselects e2e / data / model (pyproject addopts)."""
    expr = config.getoption("markexpr")
    if not expr:
        return "test tiers: all (unit, e2e, data, model)"
    return f"test tiers: -m {expr!r}; every tier: pytest -m '' (what make test runs)"


@pytest.fixture(scope="session")
def _real_data_dir() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip("real data folder not found (set XLT_DATA_DIR or provide ../shared/data)")
    return d


@pytest.fixture
def data_dir(request, _real_data_dir) -> Path:
    """The real XTREME-layout data folder (read-only; never copy from it). Skips when absent.

    Only for tests marked ``data``: an unmarked test that reads it would run in the fast default tier."""
    if request.node.get_closest_marker("data") is None:
        pytest.fail(f"{request.node.nodeid} uses the real data folder (fixture data_dir) without "
                    f"@pytest.mark.data; mark it so that it runs in the data tier only", pytrace=False)
    return _real_data_dir
