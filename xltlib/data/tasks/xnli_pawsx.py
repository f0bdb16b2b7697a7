"""XNLI and PAWS-X: sentence-pair readers (XTREME-layout TSV and the hub) and their registry entries.

Records: ``{"id", "group", "text_a", "text_b", "label"}``. XNLI rows ``3k..3k+2`` share a premise (``group``);
PAWS-X rows linked by a shared English sentence form a group (:func:`pawsx_groups`), so a split never puts one
sentence on both sides. The English training files (PAWS-Wiki, SNLI, ...) are read with the same two readers
(:mod:`xltlib.data.trainsets`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xltlib.data.formats import DataError, load_hub, need_file, read_tsv
from xltlib.data.tasks.spec import Task

XNLI_LABELS = ("entailment", "neutral", "contradiction")  # the hub's label order


def read_nli_pairs(path: Path, *, group_size: int = 1, header_ok: bool = False) -> list[dict]:
    """premise<TAB>hypothesis<TAB>label files (XNLI, XTREME's MNLI copy, SNLI, CAD, SICK); no CSV quoting.
    ``group_size`` rows share a group (XNLI: 3 hypotheses per premise); ``header_ok``: a first line whose
    label is ``label``/``gold_label`` is a header."""
    recs = []
    for i, (prem, hyp, lab) in enumerate(read_tsv(path, 3, quoting=False)):
        if i == 0 and header_ok and lab.strip().lower() in ("label", "gold_label"):
            continue
        lab = "contradiction" if lab == "contradictory" else lab
        if lab not in XNLI_LABELS:
            raise DataError(f"{path}, line {i + 1}: label {lab!r} is not one of {XNLI_LABELS}")
        n = len(recs)
        recs.append(dict(id=n, group=n // group_size, text_a=prem, text_b=hyp, label=XNLI_LABELS.index(lab)))
    return recs


def read_paraphrase_pairs(path: Path, *, header_ok: bool = False) -> list[dict]:
    """sentence1<TAB>sentence2<TAB>0|1 files (PAWS-X, PAWS-Wiki). XTREME wrote them with a CSV writer:
    quoted fields must be read with a CSV reader. ``header_ok``: a first line labelled ``label`` is a header."""
    recs = []
    for i, (s1, s2, lab) in enumerate(read_tsv(path, 3, quoting=True)):
        if i == 0 and header_ok and lab == "label":
            continue
        if lab not in ("0", "1"):
            raise DataError(f"{path}, line {i + 1}: label {lab!r} is not 0 or 1")
        recs.append(dict(id=len(recs), group=len(recs), text_a=s1, text_b=s2, label=int(lab)))
    return recs


def read_xnli_local(data_dir: Path, lang: str, split: str = "dev") -> list[dict]:
    path = need_file(Path(data_dir) / "xnli" / f"{split}-{lang}.tsv", f"xnli/{{dev,test}}-{{lang}}.tsv (language '{lang}')")
    return read_nli_pairs(path, group_size=3)


def read_pawsx_local(data_dir: Path, lang: str, split: str = "dev") -> list[dict]:
    path = need_file(Path(data_dir) / "pawsx" / f"{split}-{lang}.tsv", f"pawsx/{{dev,test}}-{{lang}}.tsv (language '{lang}')")
    return read_paraphrase_pairs(path)


def pawsx_groups(english: list[dict]) -> np.ndarray:
    """Connected components of rows that share an English sentence (union-find)."""
    parent = list(range(len(english)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_row: dict[str, int] = {}
    for r in english:
        for s in (r["text_a"], r["text_b"]):
            j = first_row.setdefault(s, r["id"])
            parent[find(r["id"])] = find(j)
    return np.array([find(i) for i in range(len(english))])


HUB_SPLITS = {"dev": "validation", "test": "test"}

def read_xnli_hub(lang: str, split: str = "dev") -> list[dict]:
    ds = load_hub("facebook/xnli", lang, HUB_SPLITS[split])
    return [dict(id=i, group=i // 3, text_a=r["premise"], text_b=r["hypothesis"], label=int(r["label"]))
            for i, r in enumerate(ds)]


def read_pawsx_hub(lang: str, split: str = "dev") -> list[dict]:
    ds = load_hub("google-research-datasets/paws-x", lang, HUB_SPLITS[split])
    return [dict(id=i, group=i, text_a=r["sentence1"], text_b=r["sentence2"], label=int(r["label"]))
            for i, r in enumerate(ds)]


XNLI = Task(
    name="xnli", kind="pair_classification",
    languages=("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"),
    labels=XNLI_LABELS, local_reader=read_xnli_local, hub_reader=read_xnli_hub,
    layout="xnli/{dev,test}-{lang}.tsv", group_fn=lambda en: np.array([r["group"] for r in en]), splits=("dev", "test"),
    notes="XNLI: dev 2,490 rows = 830 premises x 3, test 5,010 = 1,670 x 3; rows aligned across the 15 languages",
    english_target=("accuracy", 0.67),
)
PAWSX = Task(
    name="pawsx", kind="pair_classification",
    languages=("en", "de", "es", "fr", "ja", "ko", "zh"),
    labels=("not_paraphrase", "paraphrase"), local_reader=read_pawsx_local, hub_reader=read_pawsx_hub,
    layout="pawsx/{dev,test}-{lang}.tsv", group_fn=pawsx_groups, splits=("dev", "test"),
    notes="PAWS-X dev and test, 2,000 rows each aligned across 7 languages (a few labels differ from English)",
    english_target=("accuracy", 0.85),
    benchmark="XTREME (v1)",
)
