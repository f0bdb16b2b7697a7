"""Wall time of the named parts of a stage (model loading, tokenisation, scoring, each metric), kept where
``xlt cost`` reads it.

``with timed("alignment: encoding", unit=ck):`` times a block; :func:`record` adds a part measured elsewhere
(the training loop's own clock, a metric's total over many calls) as a child of the enclosing block. When
``$XLT_TIMINGS_FILE`` names a file (``xlt run`` sets it for each stage kernel,
:func:`xltlib.runner.notebook.execute_notebook`), each finished part appends one JSON line there:
``{id, parent, component, start, end, seconds, cpu, cpu_start, **labels}`` with epoch-second ``start``/``end``, so
the report can place it inside the notebook cell that ran it, and the process's CPU seconds during the part
(``cpu``) and before it (``cpu_start``: for a stage kernel's first part, its start-up and imports), which a busy
shared machine does not inflate as it does wall time. Without the variable nothing is written (tests, a notebook opened by
hand). Parts nest: a parent's own time is its ``seconds`` minus its children's (:func:`exclusive_seconds`).

No xltlib imports: every layer times its parts through this module.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from pathlib import Path

import pandas as pd

TIMINGS_FILE_ENV = "XLT_TIMINGS_FILE"

_ids = itertools.count(1)
_stack: list[tuple[int, dict]] = []  # (id, labels) of the open timed blocks of this process, innermost last


def _target() -> Path | None:
    target = os.environ.get(TIMINGS_FILE_ENV)
    return Path(target) if target else None


def _append(entry: dict) -> None:
    path = _target()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:  # one short line per part: a killed kernel leaves whole lines
        f.write(json.dumps(entry) + "\n")


def _enclosing(labels: dict) -> tuple[int | None, dict]:
    """The innermost open block's id, and ``labels`` on top of its labels (a part inherits ``unit=...``)."""
    if not _stack:
        return None, labels
    parent, inherited = _stack[-1]
    return parent, {**inherited, **labels}


@contextlib.contextmanager
def timed(component: str, **labels):
    """Time the block (or, as a decorator, each call) as ``component`` (e.g. ``"transfer: scoring"``); ``labels``
    (``unit=cell_id``) go along, and to the parts timed inside it."""
    ident = next(_ids)
    parent, labels = _enclosing(labels)
    _stack.append((ident, labels))
    start, t0, c0 = time.time(), time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        _stack.pop()
        _append(dict(id=ident, parent=parent, component=component, start=start, end=start + seconds,
                     seconds=seconds, cpu=cpu, cpu_start=c0, **labels))


def record(component: str, seconds: float, cpu: float | None = None, **labels) -> None:
    """A part timed elsewhere (ending now; ``cpu``: its CPU seconds, if known) as a child of the enclosing
    :func:`timed` block, if any."""
    end = time.time()
    parent, labels = _enclosing(labels)
    _append(dict(id=next(_ids), parent=parent, component=component, start=end - seconds, end=end,
                 seconds=float(seconds), cpu=cpu, **labels))


def read_timings(path: str | Path) -> pd.DataFrame:
    """The parts one process wrote to ``path`` (a JSON-lines file), one row each; empty when there is none."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=["id", "parent", "component", "start", "end", "seconds"])
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pd.DataFrame(lines, columns=None if lines else ["id", "parent", "component", "start", "end", "seconds"])


def exclusive_seconds(parts: pd.DataFrame, column: str = "seconds") -> pd.Series:
    """Each part's own time: its ``seconds`` (or ``cpu``) minus those of its direct children (ids are per
    process/file); NaN where a child's is unknown (CPU of a part measured elsewhere)."""
    if not len(parts) or column not in parts:
        return pd.Series(float("nan"), index=parts.index)
    parts = parts.assign(**{column: pd.to_numeric(parts[column], errors="coerce")})  # JSON null: unknown
    kids = parts.dropna(subset=["parent"])
    children = kids.groupby(kids["parent"].astype(int))[column].sum()
    unknown = kids[column].isna().groupby(kids["parent"].astype(int)).any()
    own = parts[column] - parts["id"].map(children).fillna(0.0)
    own[parts["id"].map(unknown).fillna(False).astype(bool)] = float("nan")
    return own.clip(lower=0.0)
