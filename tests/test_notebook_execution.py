"""A stage notebook run through papermill (xltlib.runner.notebook.execute_notebook) leaves a clean log: its kernel's
shutdown prints no ERROR line."""
from __future__ import annotations

import json

import nbformat
import pytest

from xltlib.runner import notebook as N

# The kernel stays inside its handler of papermill's last kernel_info_request for a second after replying: the
# moment at which papermill shuts it down. With an interrupt sent before the shutdown request (jupyter_client's
# default), ipykernel logs "ERROR | KeyboardInterrupt caught in kernel." here every time; on a busy machine a
# real stage notebook hit the same window now and then.
TINY = '''# %% tags=["parameters"]
greeting = ""

# %%
import asyncio
import inspect
import time

from IPython import get_ipython

kernel = get_ipython().kernel
reply_to_kernel_info = kernel.shell_handlers["kernel_info_request"]


async def reply_then_linger(*args):
    result = reply_to_kernel_info(*args)
    if inspect.isawaitable(result):
        await result
    time.sleep(1)


kernel.shell_handlers["kernel_info_request"] = reply_then_linger
print(greeting)
'''


@pytest.mark.e2e
def test_kernel_shutdown_logs_no_error(tmp_path, monkeypatch, capfd):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "tiny.py").write_text(TINY)
    monkeypatch.setattr(N, "NOTEBOOK_DIR", tmp_path / "notebooks")
    capfd.readouterr()

    status = N.execute_notebook(tmp_path / "run", "tiny", "tiny", {"greeting": "hello from the kernel"}, live=False)

    out, err = capfd.readouterr()  # the kernel writes its log to the stderr it inherited from this process
    assert status["ok"], status["error"]
    executed = nbformat.read(tmp_path / "run" / status["notebook"], as_version=4)
    assert "hello from the kernel" in json.dumps(executed.cells[-1].outputs)
    log = (out + err).splitlines()
    assert not [line for line in log if "ERROR" in line], log
