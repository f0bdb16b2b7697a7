"""The split protocols: which English rows train a task's checkpoint and which rows of each language score it.

* ``zero_shot`` (XTREME's protocol): train on the task's English training sets (``protocol.train_sets``,
  :mod:`xltlib.data.trainsets`), score the labelled *test* split in every language. No training row's
  translation is scored: the sets that would leak are refused when the params are read.
* ``offline_dev_split``: for data folders without labelled test sets, the English dev set is split by
  group (XNLI premise block ``row // 3``; PAWS-X rows linked by a shared sentence); the training groups
  train, the remaining rows, the same row indices in every language, are scored.

Tasks with a training file of their own (PAN-X, XCOPA, TyDiQA for the QA tasks) train on it under either
protocol and score the split their offline data holds; UD-POS (PUD) always splits its parallel treebank.

A split is written once per task as ``data/<task>.json``. It carries two keys: ``train_key`` (the
training rows and a checksum of their content) chains into the checkpoint key; ``eval_key`` (languages,
scored rows, their content) chains into the transfer key. It also keeps the label counts of the scored
rows, so no later stage re-reads raw files for a majority rate.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from xltlib.core.rows import write_json
from xltlib.data import tasks as T
from xltlib.data.trainsets import DEFAULT_TRAIN_SETS, load_train_set

# Where a task's checkpoint-selection rows come from (protocol.selection): an English split that is neither
# trained on nor scored, else a held-out share of the training groups (XNLI trains on its English dev rows; UD-POS
# on the training half of PUD; PAN-X, XCOPA and the QA tasks on their English training files).
SELECTION = {"pawsx": "dev"}


def content_hash(obj) -> str:
    """Stable short hash of JSON-serialisable content (records, settings, keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass
class Split:
    task: str
    protocol: str  # zero_shot | offline_dev_split | train_file:<task> | dev_split (UD-POS)
    eval_split: str  # the split scored: test or dev
    languages: list[str]
    train_rows: dict[str, list[int]]  # training source -> row indices (sources: training sets, "dev", "train_file")
    eval_ids: dict[str, list[int]]  # language -> scored row indices
    label_counts: dict[str, list[int]] = field(default_factory=dict)  # language -> counts over scored rows
    select_rows: dict[str, list[int]] = field(default_factory=dict)  # English selection rows: source -> indices
    train_key: str = ""
    eval_key: str = ""
    # split file -> ((mtime_ns, size), parsed split): every key of every cell reads its task's split
    _cache: ClassVar[dict[Path, tuple[tuple[int, int], "Split"]]] = {}

    @property
    def n_train(self) -> int:
        return sum(len(v) for v in self.train_rows.values())

    def majority_rate(self, lang: str = "en") -> float:
        counts = self.label_counts.get(lang) or []
        return max(counts) / sum(counts) if sum(counts) else float("nan")

    def save(self, path: Path) -> None:

        write_json(asdict(self), path)

    @classmethod
    def load(cls, path: Path) -> "Split":
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: the data stage has not finished for this task")
        return cls(**json.loads(path.read_text()))

    @classmethod
    def load_cached(cls, path: Path) -> "Split":
        """:meth:`load`, parsed once per version of the file (a rewritten split is read again). The split
        returned is shared between callers: read it, never change it."""
        if not path.is_file():
            return cls.load(path)  # the error naming the missing file
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        hit = cls._cache.get(path)
        if hit is None or hit[0] != stamp:
            cls._cache[path] = hit = (stamp, cls.load(path))
        return hit[1]


def _cap(ids: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(ids, limit, replace=False)) if limit and len(ids) > limit else ids


def train_sets_for(task: str, protocol) -> list[str]:
    return list(protocol.train_sets.get(task) or DEFAULT_TRAIN_SETS.get(task, ()))


def read_source(task: str, source: str, data_dir: Path | None) -> list[dict]:
    """Every row of one training source of a task (the split's indices select from these)."""
    if source == "dev":
        return T.load_records(task, "en", data_dir, "dev")
    if source == "train_file":
        return T.load_train_records(task, data_dir)
    return load_train_set(source, data_dir)


def make_split(task: str, languages: list[str], protocol, data_dir: Path | None) -> Split:
    """Fix the training rows and the scored rows of one task under ``protocol`` (a ProtocolConfig)."""
    t = T.get_task(task)
    p = protocol
    rng = np.random.default_rng(p.split_seed)
    zero_shot = p.name == "zero_shot" and "test" in t.splits and task in DEFAULT_TRAIN_SETS | p.train_sets
    eval_split = "test" if zero_shot else "dev"
    by_lang = {lang: T.load_records(task, lang, data_dir, eval_split) for lang in languages}
    sources: dict[str, list[dict]] = {}
    select_rows: dict[str, list[int]] = {}
    if zero_shot:
        name = "zero_shot"
        for s in train_sets_for(task, p):
            sources[s] = read_source(task, s, data_dir)
        held: dict[str, set[int]] = {}
        if p.selection and SELECTION.get(task) == "dev":
            sources["dev"] = read_source(task, "dev", data_dir)
            select_rows = {"dev": _cap(np.arange(len(sources["dev"])), p.max_select,
                                       np.random.default_rng(p.split_seed)).tolist()}
        elif p.selection:  # whole groups (XNLI premise blocks) of each training source held out
            for s, recs in list(sources.items()):
                _, out = T.offline_split(task, recs, 1 - p.selection_fraction, p.split_seed)
                held[s] = set(out.tolist())
            pool_sel = [(s, i) for s in held for i in sorted(held[s])]
            pick = _cap(np.arange(len(pool_sel)), p.max_select, np.random.default_rng(p.split_seed))
            for k in pick:
                s, i = pool_sel[k]
                select_rows.setdefault(s, []).append(i)
        pool = [(s, i) for s, recs in sources.items() if s != "dev" or not select_rows
                for i in range(len(recs)) if i not in held.get(s, ())]
        keep = _cap(np.arange(len(pool)), p.train_cap(task), np.random.default_rng(p.split_seed))
        train_rows: dict[str, list[int]] = {s: [] for s in sources if not (s == "dev" and "dev" in select_rows)}
        for k in keep:
            s, i = pool[k]
            train_rows[s].append(i)
        scored = _cap(np.arange(len(by_lang["en"])), p.max_eval, rng) if t.row_aligned else None
        if t.row_aligned:
            T.check_aligned(task, by_lang)
        eval_by_lang = {lang: scored if scored is not None else _cap(np.arange(len(r)), p.max_eval, rng)
                        for lang, r in by_lang.items()}
    elif t.protocol == "dev_split":
        name = p.name if task in ("xnli", "pawsx") else "dev_split"
        T.check_aligned(task, by_lang)
        sources["dev"] = by_lang["en"]
        train_ids, held = T.offline_split(task, by_lang["en"], p.train_fraction, p.split_seed)
        if p.selection:  # whole groups of the training half held out (before the cap, as in the other branches)
            keep, out = T.offline_split(task, [by_lang["en"][i] for i in train_ids], 1 - p.selection_fraction,
                                        p.split_seed)
            select_rows = {"dev": _cap(train_ids[out], p.max_select, np.random.default_rng(p.split_seed)).tolist()}
            train_ids = train_ids[keep]
        train_rows = {"dev": _cap(train_ids, p.train_cap(task), rng).tolist()}
        held = _cap(held, p.max_eval, rng)
        eval_by_lang = {lang: held for lang in by_lang}
    else:
        name = f"train_file:{t.training_task}"
        sources["train_file"] = T.load_train_records(task, data_dir)
        pool_ids = np.arange(len(sources["train_file"]))
        if p.selection:  # whole groups of the English training file held out (none of it is scored)
            pool_ids, out = T.offline_split(t.training_task, sources["train_file"], 1 - p.selection_fraction,
                                            p.split_seed)
            select_rows = {"train_file": _cap(out, p.max_select, np.random.default_rng(p.split_seed)).tolist()}
        train_rows = {"train_file": _cap(pool_ids, p.train_cap(task), np.random.default_rng(p.split_seed)).tolist()}
        if t.row_aligned:
            T.check_aligned(task, by_lang)
            shared = _cap(np.arange(len(by_lang["en"])), p.max_eval, rng)
            eval_by_lang = {lang: shared for lang in by_lang}
        else:
            eval_by_lang = {lang: _cap(np.arange(len(r)), p.max_eval, rng) for lang, r in by_lang.items()}
    eval_ids = {lang: np.asarray(ids).tolist() for lang, ids in eval_by_lang.items()}
    label_counts = {}
    for lang, ids in eval_ids.items():
        recs = by_lang[lang]
        if recs and isinstance(recs[0].get("label"), int) and recs[0]["label"] >= 0:
            label_counts[lang] = np.bincount([recs[i]["label"] for i in ids], minlength=len(t.labels)).tolist()
    train_content = {s: content_hash([sources[s][i] for i in ids]) for s, ids in train_rows.items()}
    select_content = {s: content_hash([sources[s][i] for i in ids]) for s, ids in select_rows.items()}
    eval_content = {lang: content_hash([by_lang[lang][i] for i in ids]) for lang, ids in eval_ids.items()}
    return Split(task=task, protocol=name, eval_split=eval_split, languages=list(by_lang), train_rows=train_rows,
                 eval_ids=eval_ids, label_counts=label_counts, select_rows=select_rows,
                 train_key=content_hash(dict(task=t.training_task, rows=train_rows, content=train_content,
                                             **(dict(select=select_rows, select_content=select_content)
                                                if select_rows else {}))),
                 eval_key=content_hash(dict(task=task, split=eval_split, ids=eval_ids, content=eval_content)))


def _english_rows(task: str, rows: dict[str, list[int]], data_dir: Path | None) -> list[dict]:
    out = []
    for source, ids in rows.items():
        recs = read_source(task, source, data_dir)
        out += [recs[i] for i in ids]
    return out


def train_records(split: Split, data_dir: Path | None) -> list[dict]:
    """The English rows a checkpoint trains on, in a fixed order (sources in the split's order)."""
    return _english_rows(split.task, split.train_rows, data_dir)


def select_records(split: Split, data_dir: Path | None) -> list[dict]:
    """The English checkpoint-selection rows (empty unless ``protocol.selection``)."""
    return _english_rows(split.task, split.select_rows, data_dir)


def eval_records(split: Split, data_dir: Path | None) -> dict[str, list[dict]]:
    out = {}
    for lang in split.languages:
        recs = T.load_records(split.task, lang, data_dir, split.eval_split)
        out[lang] = [recs[i] for i in split.eval_ids[lang]]
    return out
