"""Retrieval tasks of XTREME-R: LAReQA (XQuAD-R answer-sentence retrieval, its own dual-encoder checkpoint
trained on TyDiQA-GoldP English) and Mewsli-X (hub only).
"""
from __future__ import annotations

import os
from pathlib import Path

from xltlib.data.formats import DataError, load_hub
from xltlib.data.tasks.qa import (
    by_passage,
    qa_records,
    read_tydiqa_train_hub,
    read_tydiqa_train_local,
    read_xquad_local,
    squad_hub,
)
from xltlib.data.tasks.spec import Task

LAREQA_LANGS = ("en", "ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh")  # XQuAD-R: XQuAD minus ro

LAREQA = Task(
    name="lareqa", kind="answer_retrieval", languages=LAREQA_LANGS, metric="map@20", score_metrics=("map@20",),
    local_reader=read_xquad_local, hub_reader=lambda lang: qa_records(squad_hub(load_hub("google/xquad", f"xquad.{lang}", "validation"))),
    layout="xquad/xquad.{lang}.json", row_aligned=True,
    # its own checkpoint: a dual encoder on TyDiQA-GoldP English (question, answer sentence) pairs
    train_reader=read_tydiqa_train_local, train_hub_reader=read_tydiqa_train_hub, group_fn=by_passage,
    notes="XQuAD-R built from XQuAD: each question retrieves its answer sentence in all 11 languages from the "
          "pooled sentences of every language's contexts, mAP@20; sentences split by punctuation here "
          "(XQuAD-R's own split is not offline); a dual encoder trained with in-batch negatives on TyDiQA-GoldP "
          "English (question, answer sentence) pairs (XTREME-R trains it on SQuAD v1.1, not available offline)",
    english_target=("map@20", "pretrained"),
)

# ------------------------------------------------------------------------------------------- Mewsli-X
MEWSLIX_LANGS = ("en", "ar", "de", "es", "fa", "ja", "pl", "ro", "ta", "tr", "uk")
MEWSLIX_HUB_ENV = "XLT_MEWSLIX_HUB"


def read_mewslix_local(data_dir: Path, lang: str) -> list[dict]:
    raise DataError(f"Mewsli-X has no offline copy in {data_dir}: it is read from the hub only. Set "
                    f"${MEWSLIX_HUB_ENV} to a Hugging Face dataset holding XTREME-R's Mewsli-X "
                    "(google-research/xtreme download_data.sh builds it) and run without data_dir")


def read_mewslix_hub(lang: str) -> list[dict]:
    path = os.environ.get(MEWSLIX_HUB_ENV)
    if not path:
        raise DataError(f"Mewsli-X: no hub dataset configured; set ${MEWSLIX_HUB_ENV} to the Hugging Face dataset "
                        "that holds XTREME-R's Mewsli-X (there is no canonical hub copy)")
    ds = load_hub(path, None, "validation")
    return [dict(id=i, group=i, **r) for i, r in enumerate(ds) if r.get("language", lang) == lang]


MEWSLIX = Task(
    name="mewslix", kind="entity_retrieval", languages=MEWSLIX_LANGS, metric="map@20", score_metrics=("map@20",),
    local_reader=read_mewslix_local, hub_reader=read_mewslix_hub, layout="(hub only)", row_aligned=False,
    hub_only=True, notes="Mewsli-X entity linking: hub only, not runnable offline",
)
