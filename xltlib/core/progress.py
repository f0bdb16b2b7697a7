"""Progress of long loops, seen where someone is watching and nowhere else.

Two sides, one small JSON file between them:

* inside a loop (training steps, examples scored, sentences encoded) :func:`progress` draws a tqdm bar when
  someone can see it (a terminal, or a JupyterLab kernel) and, when ``$XLT_PROGRESS_FILE`` names a file,
  writes ``{desc, n, total, unit}`` there a few times a second;
* ``xlt run`` executes stage notebooks in kernels whose bars are off (``TQDM_DISABLE=1``: the executed
  notebooks and their HTML show results, not bars). :class:`LiveProgress` points ``$XLT_PROGRESS_FILE`` at
  ``DIR/.progress.json`` for the kernel, polls it, and draws the stage's bar on the driver's terminal: the grid
  position (``[k/n] stage``), the loop's counts, rate and ETA. When stderr is not a terminal (CI logs, a pipe)
  it draws nothing and the kernel writes no file.

No xltlib imports: the loops that report (train, evaluate, alignment) sit low in the import order.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from tqdm.std import tqdm

PROGRESS_FILE_ENV = "XLT_PROGRESS_FILE"
PROGRESS_FILE_NAME = ".progress.json"
WRITE_INTERVAL_S = 0.5  # a kernel writes the file at most this often (plus at the start and end of a loop)

_loops = 0  # loops started in this process: the driver starts a fresh bar when this changes
_done: dict[str, int] = {}  # per loop description, counts finished in this process (e.g. sentences encoded)


def _in_kernel() -> bool:
    """Inside a Jupyter kernel (JupyterLab, nbclient), whose stderr is shown under the cell."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and shell.get_ipython() is not None \
            and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except AttributeError:
        return False


def bars_visible() -> bool:
    """Draw tqdm bars here? Not when TQDM_DISABLE is set (batch kernels), else in a kernel or on a terminal."""
    if os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false"):
        return False
    return _in_kernel() or sys.stderr.isatty()


def _tqdm_class():
    # tqdm.auto draws a widget in Jupyter but raises there when ipywidgets is missing; the text bar works anywhere
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm
    return tqdm


class Progress:
    """One loop's progress: ``update(k)`` after each batch, ``close()`` at the end (or use ``with``)."""

    def __init__(self, total: int | None, desc: str, unit: str = "it"):
        global _loops
        _loops += 1
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self._loop, self._started, self._last_write = _loops, time.time(), 0.0
        target = os.environ.get(PROGRESS_FILE_ENV)
        self._file = Path(target) if target else None
        self._bar = _tqdm_class()(total=total, desc=desc, unit=unit, leave=False, disable=False) \
            if bars_visible() else None
        self._write(force=True)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self._bar is not None:
            self._bar.update(k)
        self._write()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._file is not None:
            self._write(force=True)
            _done[self.desc] = _done.get(self.desc, 0) + self.n
            self._file = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, force: bool = False) -> None:
        if self._file is None:
            return
        now = time.time()
        if not force and now - self._last_write < WRITE_INTERVAL_S:
            return
        self._last_write = now
        state = dict(desc=self.desc, unit=self.unit, n=self.n, total=self.total, loop=self._loop,
                     started=self._started, updated=now, pid=os.getpid(),
                     done=_done.get(self.desc, 0) + self.n)
        tmp = self._file.with_name(f"{self._file.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self._file)  # the driver never reads half a file
        except OSError:  # progress must never break the work it reports on
            self._file = None


def progress(total: int | None, desc: str, unit: str = "it") -> Progress:
    """Start reporting a loop of ``total`` units (see the module docstring for where it shows)."""
    return Progress(total, desc, unit)


def read_progress(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class LiveProgress:
    """Driver side of one stage notebook: ``with LiveProgress(run_dir, "[3/7] 03_transfer"):`` around papermill.

    On a terminal, a poller thread redraws one bar from the kernel's progress file; elsewhere it does nothing.
    """

    def __init__(self, run_dir: str | Path, label: str, stream=None, interval: float = 0.2):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.path = Path(run_dir) / PROGRESS_FILE_NAME
        self.label, self.interval = label, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._env_before: str | None = None

    def __enter__(self) -> "LiveProgress":
        if not self.enabled:
            return self
        self.path.unlink(missing_ok=True)  # a stale file of an earlier stage is not this stage's progress
        self._env_before = os.environ.get(PROGRESS_FILE_ENV)
        os.environ[PROGRESS_FILE_ENV] = str(self.path)  # the kernel papermill starts inherits it
        self._thread = threading.Thread(target=self._poll, name="xlt-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._env_before is None:
            os.environ.pop(PROGRESS_FILE_ENV, None)
        else:
            os.environ[PROGRESS_FILE_ENV] = self._env_before
        self.path.unlink(missing_ok=True)

    def _poll(self) -> None:

        try:  # a pseudo-terminal may report a 0 x 0 size, and tqdm then draws nothing at all
            size = os.get_terminal_size(self.stream.fileno())
            sized = size.columns > 0 and size.lines > 0
        except (AttributeError, OSError, ValueError):
            sized = False
        # explicit disable=False: the driver's environment carries TQDM_DISABLE for its kernels
        bar = tqdm(total=None, desc=self.label, file=self.stream, leave=False, disable=False, dynamic_ncols=sized,
                   ncols=None if sized else 100, nrows=None if sized else 24, mininterval=self.interval)
        loop = None
        try:
            while not self._stop.wait(self.interval):
                state = read_progress(self.path)
                if not state:
                    bar.refresh()  # elapsed time keeps moving while the kernel starts or loads data
                    continue
                if (state.get("pid"), state.get("loop")) != loop:
                    loop = (state.get("pid"), state.get("loop"))
                    bar.unit = state.get("unit", "it")
                    bar.set_description_str(f"{self.label} · {state.get('desc', '')}", refresh=False)
                    bar.set_postfix_str("", refresh=False)
                    bar.reset(total=state.get("total"))
                    # elapsed time, rate and ETA from when the kernel started the loop, not when we first saw it
                    bar.start_t = bar.last_print_t = float(state.get("started", bar.start_t))
                done = int(state.get("done", 0))
                if done > int(state.get("n", 0)):  # earlier loops of the same kind in this stage
                    bar.set_postfix_str(f"stage total {done:,} {bar.unit}", refresh=False)
                bar.update(max(0, int(state.get("n", 0)) - bar.n))
                bar.refresh()
        finally:
            bar.close()
