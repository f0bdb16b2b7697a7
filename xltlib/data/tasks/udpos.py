"""UD-POS on the parallel PUD treebanks: readers and the registry entry. Records:
``{"id", "group", "tokens": [..], "tags": [..]}``.
"""
from __future__ import annotations

from pathlib import Path

from xltlib.data.formats import DataError, load_hub, need_file, read_conllu
from xltlib.data.tasks.spec import Task

UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X")
PUD_LANGS = ("en", "ar", "cs", "de", "es", "fi", "fr", "gl", "hi", "id", "is", "it", "ko", "pl", "pt", "ru", "sv",
             "th", "tr", "zh")


def read_udpos_local(data_dir: Path, lang: str) -> list[dict]:
    """PUD treebank sentences ordered by sent_id, so row i is the same sentence in every language
    (Icelandic's file has another order)."""
    path = need_file(Path(data_dir) / "udpos-pud" / f"{lang}.conllu", "udpos-pud/{lang}.conllu")
    sents = sorted(read_conllu(path), key=lambda s: s["id"])
    for s in sents:
        bad = [t for t in s["tags"] if t not in UPOS]
        if bad:
            raise DataError(f"{path}, sentence {s['id']}: UPOS tag {bad[0]!r} is not one of {', '.join(UPOS)}")
    return [dict(id=i, group=i, sent_id=s["id"], tokens=s["tokens"], tags=s["tags"]) for i, s in enumerate(sents)]


def read_udpos_hub(lang: str) -> list[dict]:
    ds = load_hub("universal-dependencies/universal_dependencies", f"{lang}_pud", "test")
    names = ds.features["upos"].feature.names
    sents = sorted(ds, key=lambda r: r["idx"])
    return [dict(id=i, group=i, sent_id=r["idx"], tokens=r["tokens"], tags=[names[t] for t in r["upos"]])
            for i, r in enumerate(sents)]


UDPOS = Task(
    name="udpos", kind="token_classification", languages=PUD_LANGS, labels=UPOS, metric="f1",
    local_reader=read_udpos_local, hub_reader=read_udpos_hub, layout="udpos-pud/{lang}.conllu",
    score_metrics=("f1",),
    notes="Parallel UD (PUD) treebanks: the English PUD sentences of the training half of sent_ids train, the "
          "other half is scored in every language (XTREME uses the full UD test sets and English EWT train, "
          "not available offline); cs, gl, is, sv are not XTREME-R languages",
    english_target=("f1", 0.90),
)
