"""English training sets for the zero-shot protocol, registered by name.

XTREME's protocol trains on the task's English training data and scores every language's test split.
Offline, MNLI and PAWS-X's full train file are absent, so XNLI trains on English XNLI dev (free to train
on once test is what is scored) and optionally the English NLI sets in ``nli-en/``; PAWS-X trains on the
PAWS-Wiki subset ``pawsx/train-en.tsv``. Where a full XTREME download or the hub is reachable, ``mnli``
and the same ``pawsx_train_en`` name read the full sets.

Some English sets must never be trained on when test is scored: XNLI/PAWS-X English test (the other
languages are translations of the same pairs) and PAWS-X English dev (it shares 1,339 sentences with
test). They are registered with the reason, so naming one is refused with that reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from xltlib.core.registry import Registry
from xltlib.data.formats import DataError, load_hub, need_file
from xltlib.data.tasks.xnli_pawsx import read_nli_pairs, read_paraphrase_pairs


@dataclass(frozen=True)
class TrainSet:
    name: str
    task: str  # the task whose head and label set these records train
    layout: str  # file under the data folder, for messages
    local_reader: Callable[[Path], list[dict]]
    hub_reader: Callable[[], list[dict]] | None = None
    notes: str = ""
    refused: str = ""  # non-empty: why training on it would leak into the scored rows


TRAIN_SETS: Registry[TrainSet] = Registry("training set")


def _nli_file(rel: str, *, header_ok: bool = False) -> Callable[[Path], list[dict]]:
    # XNLI files keep XNLI's premise blocks (3 rows) as groups; the other NLI sets have one row per group
    group_size = 3 if rel.startswith("xnli/") else 1
    return lambda data_dir: read_nli_pairs(need_file(Path(data_dir) / rel, rel), group_size=group_size,
                                           header_ok=header_ok)


def _pawsx_file(rel: str) -> Callable[[Path], list[dict]]:
    return lambda data_dir: read_paraphrase_pairs(need_file(Path(data_dir) / rel, rel), header_ok=True)


def _hub_pairs(path: str, name: str | None, split: str, a: str, b: str, label: str = "label"):
    def read() -> list[dict]:
        ds = load_hub(path, name, split)
        # SNLI marks pairs without a gold label with -1: not trainable
        return [dict(id=i, group=i, text_a=r[a], text_b=r[b], label=int(r[label]))
                for i, r in enumerate(ds) if int(r[label]) >= 0]
    return read


LEAK_TEST = "its rows are the English side of the scored test set; the other languages are translations of them"
for ts in (
    TrainSet("xnli_dev_en", "xnli", "xnli/dev-en.tsv", _nli_file("xnli/dev-en.tsv"),
             _hub_pairs("facebook/xnli", "en", "validation", "premise", "hypothesis"),
             "XNLI English dev, 2,490 pairs (830 premises x 3); MNLI's ten genres"),
    TrainSet("mnli", "xnli", "xnli/train-en.tsv", _nli_file("xnli/train-en.tsv", header_ok=True),
             _hub_pairs("nyu-mll/multi_nli", None, "train", "premise", "hypothesis"),
             "MultiNLI train (392k), XTREME's XNLI training set; absent offline"),
    TrainSet("snli_dev", "xnli", "nli-en/snli-dev.tsv", _nli_file("nli-en/snli-dev.tsv"),
             _hub_pairs("stanfordnlp/snli", None, "validation", "premise", "hypothesis"),
             "SNLI dev, 9,842 caption pairs (space-tokenised text)"),
    TrainSet("snli_test", "xnli", "nli-en/snli-test.tsv", _nli_file("nli-en/snli-test.tsv"),
             _hub_pairs("stanfordnlp/snli", None, "test", "premise", "hypothesis"),
             "SNLI test, 9,824 caption pairs (not XNLI's test: free to train on)"),
    TrainSet("cad_snli", "xnli", "nli-en/cad-snli-train.tsv", _nli_file("nli-en/cad-snli-train.tsv"), None,
             "counterfactually augmented SNLI train, 8,330 pairs"),
    TrainSet("sick", "xnli", "nli-en/sick.tsv", _nli_file("nli-en/sick.tsv"), None,
             "SICK, 9,840 caption-derived pairs (neutral-heavy)"),
    TrainSet("pawsx_train_en", "pawsx", "pawsx/train-en.tsv", _pawsx_file("pawsx/train-en.tsv"),
             _hub_pairs("google-research-datasets/paws-x", "en", "train", "sentence1", "sentence2"),
             "PAWS-Wiki pairs: offline an 8,311-row subset with near-duplicates of dev/test removed; "
             "the full 49,401 rows where XTREME's download or the hub provides them"),
    TrainSet("xnli_test_en", "xnli", "xnli/test-en.tsv", _nli_file("xnli/test-en.tsv"), refused=LEAK_TEST),
    TrainSet("pawsx_test_en", "pawsx", "pawsx/test-en.tsv", _pawsx_file("pawsx/test-en.tsv"), refused=LEAK_TEST),
    TrainSet("pawsx_dev_en", "pawsx", "pawsx/dev-en.tsv", _pawsx_file("pawsx/dev-en.tsv"),
             refused="PAWS-X English dev shares 1,339 sentences with English test (1,237 test rows contain a "
                     "dev sentence); it is the checkpoint-selection set, never a training set"),
):
    TRAIN_SETS.add(ts.name, ts)

# What the zero-shot protocol trains each task on when params name no training sets.
DEFAULT_TRAIN_SETS = {"xnli": ("xnli_dev_en",), "pawsx": ("pawsx_train_en",)}


def check_train_sets(task: str, names: list[str]) -> None:
    """Registered, meant for ``task``, and not leaking into the scored rows; else a ValueError saying why."""
    for name in names:
        ts = TRAIN_SETS.get(name)
        if ts.task != task:
            raise ValueError(f"training set '{name}' trains task '{ts.task}', not '{task}'")
        if ts.refused:
            raise ValueError(f"training set '{name}' cannot train '{task}' under the zero-shot protocol: {ts.refused}")


def load_train_set(name: str, data_dir: Path | None) -> list[dict]:
    ts = TRAIN_SETS.get(name)
    if data_dir is not None:
        return ts.local_reader(data_dir)
    if ts.hub_reader is None:
        raise DataError(f"training set '{name}' has no hub copy; point data_dir (or $XLT_DATA_DIR) at a folder "
                        f"holding {ts.layout}")
    return ts.hub_reader()
