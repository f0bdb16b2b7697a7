"""Extractive QA: XQuAD, MLQA and TyDiQA-GoldP (whose English train file trains the QA tasks). Records are
SQuAD-like: ``{"id", "group", "title", "context", "question", "answers": {"text": [..], "answer_start": [..]}}``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xltlib.data.formats import DataError, load_hub, need_file, read_squad_json
from xltlib.data.tasks.spec import Task

QA_METRICS = ("f1", "exact_match")
XQUAD_LANGS = ("en", "ar", "de", "el", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
MLQA_LANGS = ("en", "ar", "de", "es", "hi", "vi", "zh")
TYDIQA_LANGS = ("en", "ar", "bn", "fi", "id", "ko", "ru", "sw", "te")
TYDIQA_HUB_NAMES = dict(en="english", ar="arabic", bn="bengali", fi="finnish", id="indonesian", ko="korean",
                        ru="russian", sw="swahili", te="telugu")


def qa_records(recs: list[dict], by_id: bool = True) -> list[dict]:
    """Sorted by question id so that row i is the same question in every language (XQuAD)."""
    recs = sorted(recs, key=lambda r: r["id"]) if by_id else recs
    return [dict(r, group=i) for i, r in enumerate(recs)]


def squad_hub(ds) -> list[dict]:
    return [dict(id=r["id"], title=r.get("title", ""), context=r["context"], question=r["question"],
                 answers=dict(text=list(r["answers"]["text"]), answer_start=list(r["answers"]["answer_start"])))
            for r in ds]


def read_xquad_local(data_dir: Path, lang: str) -> list[dict]:
    path = need_file(Path(data_dir) / "xquad" / f"xquad.{lang}.json", "xquad/xquad.{lang}.json")
    return qa_records(read_squad_json(path))


def read_mlqa_local(data_dir: Path, lang: str) -> list[dict]:
    layout = "mlqa/MLQA_V1/dev/dev-context-{lang}-question-{lang}.json"
    path = need_file(Path(data_dir) / "mlqa" / "MLQA_V1" / "dev" / f"dev-context-{lang}-question-{lang}.json", layout)
    return qa_records(read_squad_json(path))


def by_passage(english: list[dict]) -> np.ndarray:
    """Group ids of QA records by their passage: questions on one passage go to one side of a held-out split
    (511 of TyDiQA-GoldP's 3,696 English training questions share a passage with another)."""
    return np.unique([r["context"] for r in english], return_inverse=True)[1]


def read_tydiqa_train_local(data_dir: Path) -> list[dict]:
    layout = "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json"
    path = need_file(Path(data_dir) / "tydiqa" / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json", layout)
    # ids repeat in this file ('0' is 1,651 questions) and the QA scores key predictions by id: number them
    recs = read_squad_json(path, unique_ids=False)
    return qa_records([dict(r, id=f"{i}:{r['id']}") for i, r in enumerate(recs)], by_id=False)


def read_tydiqa_local(data_dir: Path, lang: str) -> list[dict]:
    raise DataError(f"TyDiQA-GoldP dev ({lang}) is not in the offline data folder {data_dir} (only the English "
                    "train file is); score TyDiQA from the hub (no data_dir, online) or add "
                    "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json")


def read_tydiqa_hub(lang: str) -> list[dict]:
    ds = load_hub("google-research-datasets/tydiqa", "secondary_task", "validation")
    prefix = TYDIQA_HUB_NAMES[lang] + "-"
    return qa_records(squad_hub(r for r in ds if r["id"].startswith(prefix)))


def read_tydiqa_train_hub() -> list[dict]:
    ds = load_hub("google-research-datasets/tydiqa", "secondary_task", "train")
    return qa_records(squad_hub(r for r in ds if r["id"].startswith("english-")), by_id=False)


_QA_TRAIN_NOTE = ("trained on TyDiQA-GoldP English train (3,696 questions; XTREME trains on SQuAD v1.1, "
                  "not available offline)")
XQUAD = Task(
    name="xquad", kind="span_extraction", languages=XQUAD_LANGS, metric="f1", score_metrics=QA_METRICS,
    local_reader=read_xquad_local, hub_reader=lambda lang: qa_records(squad_hub(load_hub("google/xquad", f"xquad.{lang}", "validation"))),
    layout="xquad/xquad.{lang}.json", train_from="tydiqa", row_aligned=True,
    notes=f"XQuAD (1,190 questions, aligned across 12 languages; ro is not an XTREME-R language); {_QA_TRAIN_NOTE}",
    english_target=("f1", 0.55),
)
MLQA = Task(
    name="mlqa", kind="span_extraction", languages=MLQA_LANGS, metric="f1", score_metrics=QA_METRICS,
    local_reader=read_mlqa_local,
    hub_reader=lambda lang: qa_records(squad_hub(load_hub("facebook/mlqa", f"mlqa.{lang}.{lang}", "validation"))),
    layout="mlqa/MLQA_V1/dev/dev-context-{lang}-question-{lang}.json", train_from="tydiqa", row_aligned=False,
    notes=f"MLQA dev, same-language pairs (test answers are stripped in XTREME's copy); MLQA's own answer "
          f"normalisation; {_QA_TRAIN_NOTE}",
)
TYDIQA = Task(
    name="tydiqa", kind="span_extraction", languages=TYDIQA_LANGS, metric="f1", score_metrics=QA_METRICS,
    local_reader=read_tydiqa_local, hub_reader=read_tydiqa_hub, layout="tydiqa/tydiqa-goldp-v1.1-dev/...",
    train_reader=read_tydiqa_train_local,
    train_hub_reader=read_tydiqa_train_hub,
    group_fn=by_passage,
    row_aligned=False, hub_only=True,
    notes="TyDiQA-GoldP: only the English train file is offline (it trains the QA tasks); its dev sets come "
          "from the hub",
)
