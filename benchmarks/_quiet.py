"""Keep a benchmark's printed report readable: no warnings, load reports or weight-loading progress bars."""
from __future__ import annotations

import os
import warnings


def quiet_reports() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
