"""Task registry keyed by name, readers for an XTREME-layout folder and the hub.

A task entry says which languages it has, how to read it, its XTREME metric and
its *kind* (:mod:`xltlib.evaluation.task_types`: the head it trains and how it is scored). Local and
hub readers yield the same records: ``{"id", "group", "text_a", "text_b", "label"}``
for sentence-pair tasks; the other kinds' records are listed in :mod:`xltlib.data.tasks.xtremer`.

The *offline protocol* (``protocol.name: offline_dev_split``) exists because no
English training set ships offline: the English dev set is split by group
(XNLI premise block ``row // 3``; PAWS-X rows linked by a shared English
sentence), the training groups are used for fine-tuning, and the remaining
rows, the same row indices in every language, are evaluated.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xltlib.core.registry import Registry
from xltlib.data.formats import DataError, load_hub, need_file, read_lines, read_tsv  # noqa: F401 - DataError: T.DataError
from xltlib.data.languages import resource_table
from xltlib.data.tasks import xtremer
from xltlib.data.tasks.spec import Task

TASKS: Registry[Task] = Registry("task")
LANGUAGE_TABLE = resource_table()

# XTREME's 41 Tatoeba languages (ISO 639-1) -> the ISO 639-3 code LASER's files use, from the one language table.
TATOEBA_CODES = {lang: LANGUAGE_TABLE.loc[lang, "iso3"] for lang in (
    "af ar az bg bn de el es et eu fa fi fr he hi hu id it ja jv ka kk ko lt ml mr nl pl pt ro ru sw ta te th tl tr "
    "uk ur vi zh").split()}
TATOEBA_ISO1 = {v: k for k, v in TATOEBA_CODES.items()}
# LASER's Tatoeba test set covers 112 languages (Artetxe & Schwenk 2019); those outside XTREME's 41 keep
# their ISO 639-3 code as the language name.
LASER_TATOEBA = tuple("""afr amh ang ara arq arz ast awa aze bel ben ber bos bre bul cat cbk ceb ces cha cmn cor csb cym
dan deu dsb dtp ell epo est eus fao fin fra fry gla gle glg gsw heb hin hrv hsb hun hye ido ile ina ind isl ita jav
jpn kab kat kaz khm kor kur kzj lat lfn lit lvs mal mar max mhr mkd mon nds nld nno nob nov oci orv pam pes pms pol
por ron rus slk slv spa sqi srp swe swg swh tam tat tel tgl tha tuk tur tzl uig ukr urd uzb vie war wuu xho yid yue
zsm""".split())


def _add(task: Task) -> Task:
    return TASKS.add(task.name, task)


# ------------------------------------------------------------------ local readers
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


def read_tatoeba_local(data_dir: Path, lang: str) -> list[dict]:
    """Line-aligned LASER Tatoeba (XTREME's own copy sorts the English side, so it is not used)."""
    code = TATOEBA_CODES.get(lang, lang)
    base = Path(data_dir) / "tatoeba-laser"
    layout = "tatoeba-laser/tatoeba.{xxx}-eng.{xxx} and .eng (ISO 639-3 codes)"
    src = need_file(base / f"tatoeba.{code}-eng.{code}", layout)
    eng = need_file(base / f"tatoeba.{code}-eng.eng", layout)
    a, b = read_lines(src), read_lines(eng)
    if len(a) != len(b):
        raise DataError(f"{src} has {len(a)} lines but {eng} has {len(b)}; they must be line-aligned")
    return [dict(id=i, group=i, text_a=x, text_b=y, label=-1) for i, (x, y) in enumerate(zip(a, b))]


# -------------------------------------------------------------------- hub readers
HUB_SPLITS = {"dev": "validation", "test": "test"}

def read_xnli_hub(lang: str, split: str = "dev") -> list[dict]:
    ds = load_hub("facebook/xnli", lang, HUB_SPLITS[split])
    return [dict(id=i, group=i // 3, text_a=r["premise"], text_b=r["hypothesis"], label=int(r["label"]))
            for i, r in enumerate(ds)]


def read_pawsx_hub(lang: str, split: str = "dev") -> list[dict]:
    ds = load_hub("google-research-datasets/paws-x", lang, HUB_SPLITS[split])
    return [dict(id=i, group=i, text_a=r["sentence1"], text_b=r["sentence2"], label=int(r["label"]))
            for i, r in enumerate(ds)]


def read_tatoeba_hub(lang: str) -> list[dict]:
    ds = load_hub("google/xtreme", f"tatoeba.{TATOEBA_CODES.get(lang, lang)}", "validation")
    return [dict(id=i, group=i, text_a=r["source_sentence"], text_b=r["target_sentence"], label=-1)
            for i, r in enumerate(ds)]


_add(Task(
    name="xnli", kind="pair_classification",
    languages=("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"),
    labels=XNLI_LABELS, local_reader=read_xnli_local, hub_reader=read_xnli_hub,
    layout="xnli/{dev,test}-{lang}.tsv", group_fn=lambda en: np.array([r["group"] for r in en]), splits=("dev", "test"),
    notes="XNLI: dev 2,490 rows = 830 premises x 3, test 5,010 = 1,670 x 3; rows aligned across the 15 languages",
    english_target=("accuracy", 0.67),
))
_add(Task(
    name="pawsx", kind="pair_classification",
    languages=("en", "de", "es", "fr", "ja", "ko", "zh"),
    labels=("not_paraphrase", "paraphrase"), local_reader=read_pawsx_local, hub_reader=read_pawsx_hub,
    layout="pawsx/{dev,test}-{lang}.tsv", group_fn=pawsx_groups, splits=("dev", "test"),
    notes="PAWS-X dev and test, 2,000 rows each aligned across 7 languages (a few labels differ from English)",
    english_target=("accuracy", 0.85),
))
_add(Task(
    name="tatoeba", kind="retrieval",
    languages=tuple(sorted(TATOEBA_CODES)) + tuple(c for c in LASER_TATOEBA if c not in TATOEBA_ISO1),
    metric="acc@1", local_reader=read_tatoeba_local, hub_reader=read_tatoeba_hub,
    layout="tatoeba-laser/tatoeba.{xxx}-eng.{xxx}", row_aligned=False,
    notes="LASER Tatoeba, each language with its own English side",
))


for _suite_task in xtremer.SUITE_TASKS:  # XCOPA, UD-POS, PAN-X, XQuAD, MLQA, TyDiQA, LAReQA, Mewsli-X
    TASKS.add(_suite_task.name, _suite_task)


def get_task(name: str) -> Task:
    return TASKS.get(name)


# ------------------------------------------------------------------- entry points
def data_dir_or_none(data_dir: str | Path | None) -> Path | None:
    d = data_dir or os.environ.get("XLT_DATA_DIR")
    if not d:
        return None
    d = Path(d)
    if not d.is_dir():
        raise DataError(f"data folder {d} does not exist; expected an XTREME-layout folder (xnli/, pawsx/, tatoeba-laser/ ...)")
    return d


def load_records(task: str, lang: str, data_dir: str | Path | None = None, split: str = "dev") -> list[dict]:
    """Records of one task, language and split, from the local folder when given, else from the hub."""
    t = get_task(task)
    t.check_language(lang)
    if split not in t.splits:
        raise ValueError(f"task '{task}' has no '{split}' split here; its splits: {', '.join(t.splits)}")
    d = data_dir_or_none(data_dir)
    args = (lang, split) if len(t.splits) > 1 else (lang,)
    return t.local_reader(d, *args) if d is not None else t.hub_reader(*args)


def load_train_records(task: str, data_dir: str | Path | None = None) -> list[dict]:
    """English training records of a task with a training file (or of the task it trains from)."""
    t = get_task(get_task(task).training_task)
    if t.train_reader is None:
        raise ValueError(f"task '{t.name}' has no training file; it uses the offline dev split")
    d = data_dir_or_none(data_dir)
    return t.train_reader(d) if d is not None else t.train_hub_reader()


def offline_split(task: str, english: list[dict], train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, eval) of the offline protocol: whole groups go to one side."""
    t = get_task(task)
    groups = t.group_fn(english) if t.group_fn else np.arange(len(english))
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    train_groups = set(rng.permutation(uniq)[: int(round(train_fraction * len(uniq)))].tolist())
    is_train = np.array([g in train_groups for g in groups])
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def check_aligned(task: str, by_lang: dict[str, list[dict]]) -> None:
    n = {lang: len(r) for lang, r in by_lang.items()}
    if len(set(n.values())) > 1:
        raise DataError(f"task '{task}': languages have different row counts {n}; the offline protocol needs row-aligned files")
