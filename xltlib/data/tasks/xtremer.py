"""The rest of the XTREME-R suite: XCOPA, UD-POS, PAN-X, XQuAD, MLQA, TyDiQA-GoldP, LAReQA, Mewsli-X.

Each task is one registry entry (see :mod:`xltlib.data.tasks`) with readers for the XTREME-layout folder
and the hub that return the same records, the kind of head it needs (:mod:`xltlib.evaluation.task_types`) and the
metrics of its XTREME-R score. What the offline folder lacks, and what replaces it, is stated in each
entry's ``notes`` and shown in the report.

Records per kind:

* ``multiple_choice`` -- ``{"id", "group", "premise", "question", "choices": [..], "label"}``
* ``token_classification`` -- ``{"id", "group", "tokens": [..], "tags": [..]}``
* ``span_extraction`` / ``answer_retrieval`` -- SQuAD-like ``{"id", "group", "title", "context",
  "question", "answers": {"text": [..], "answer_start": [..]}}``
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xltlib.data.formats import DataError, load_hub, need_file, read_conllu, read_iob_tsv, read_jsonl, read_squad_json
from xltlib.data.tasks.spec import Task

SUITE_TASKS: list[Task] = []  # registered by xltlib.data.tasks


def register_task(task: Task) -> Task:
    SUITE_TASKS.append(task)
    return task


# ---------------------------------------------------------------------------------------------- XCOPA
XCOPA_LANGS = ("en", "et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
_XCOPA_KEYS = ("premise", "choice1", "choice2", "question", "label", "idx")
# The `question` field of some translated files disagrees with English (every th row says "effect"; tr,
# sw, id, it in a few rows, see the data MANIFEST). et agrees with English on every test row and val-en
# is English itself, so the question type is taken from them by idx.
_XCOPA_QUESTION_SOURCE = {"val": "val-en.jsonl", "test": "test-et.jsonl"}


def _copa_record(r: dict, question: str) -> dict:
    if question not in ("cause", "effect"):
        raise DataError(f"XCOPA idx {r['idx']}: question {question!r} is not 'cause' or 'effect'")
    return dict(id=int(r["idx"]), group=int(r["idx"]), premise=r["premise"], question=question,
                choices=[r["choice1"], r["choice2"]], label=int(r["label"]))


def read_xcopa_local(data_dir: Path, lang: str) -> list[dict]:
    """Test set (500) for the 11 XCOPA languages; English has no test set here, so val-en (100)."""
    split = "val" if lang == "en" else "test"
    base = Path(data_dir) / "xcopa"
    rows = read_jsonl(need_file(base / f"{split}-{lang}.jsonl", "xcopa/{val,test}-{lang}.jsonl"), _XCOPA_KEYS)
    ref = read_jsonl(need_file(base / _XCOPA_QUESTION_SOURCE[split], f"xcopa/{_XCOPA_QUESTION_SOURCE[split]}"),
                     _XCOPA_KEYS)
    question = {r["idx"]: r["question"] for r in ref}
    return [_copa_record(r, question.get(r["idx"], r["question"])) for r in rows]


def read_copa_train_local(data_dir: Path) -> list[dict]:
    path = need_file(Path(data_dir) / "xcopa" / "train-en.jsonl", "xcopa/train-en.jsonl")
    return [_copa_record(r, r["question"]) for r in read_jsonl(path, _XCOPA_KEYS)]


def _copa_hub(ds) -> list[dict]:
    return [_copa_record(dict(r, idx=r.get("idx", i)), r["question"]) for i, r in enumerate(ds)]


def read_xcopa_hub(lang: str) -> list[dict]:
    if lang == "en":
        return _copa_hub(load_hub("aps/super_glue", "copa", "validation"))
    return _copa_hub(load_hub("cambridgeltl/xcopa", lang, "test"))


register_task(Task(
    name="xcopa", kind="multiple_choice", languages=XCOPA_LANGS, labels=("choice1", "choice2"),
    local_reader=read_xcopa_local, hub_reader=read_xcopa_hub, layout="xcopa/test-{lang}.jsonl",
    train_reader=read_copa_train_local, train_hub_reader=lambda: _copa_hub(load_hub("aps/super_glue", "copa", "train")),
    row_aligned=False,
    notes="trained on English COPA train (400; XTREME-R first trains on SIQA, not available offline); "
          "scored on the XCOPA test sets (500 per language), English on COPA val (100)",
    english_target=("accuracy", "chance"),  # two choices: must clear 50% with its CI (the gate uses the majority rate)
))

# --------------------------------------------------------------------------------------------- UD-POS
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


register_task(Task(
    name="udpos", kind="token_classification", languages=PUD_LANGS, labels=UPOS, metric="f1",
    local_reader=read_udpos_local, hub_reader=read_udpos_hub, layout="udpos-pud/{lang}.conllu",
    score_metrics=("f1",),
    notes="Parallel UD (PUD) treebanks: the English PUD sentences of the training half of sent_ids train, the "
          "other half is scored in every language (XTREME uses the full UD test sets and English EWT train, "
          "not available offline); cs, gl, is, sv are not XTREME-R languages",
    english_target=("f1", 0.90),
))

# ---------------------------------------------------------------------------------------------- PAN-X
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
PANX_LANGS = tuple("""en af ar az bg bn de el es et eu fa fi fr gu he hi hu id it ja jv ka kk ko lt ml mr ms my nl pa
pl pt qu ro ru sw ta te tl tr uk ur vi yo zh""".split())


def _panx_records(sents: list[dict]) -> list[dict]:
    return [dict(id=i, group=i, tokens=s["tokens"], tags=s["tags"]) for i, s in enumerate(sents)]


def read_panx_local(data_dir: Path, lang: str) -> list[dict]:
    path = need_file(Path(data_dir) / "panx" / f"dev-{lang}.tsv", "panx/dev-{lang}.tsv")
    return _panx_records(read_iob_tsv(path, set(PANX_TAGS)))


def read_panx_train_local(data_dir: Path) -> list[dict]:
    path = need_file(Path(data_dir) / "panx" / "train-en.tsv", "panx/train-en.tsv")
    return _panx_records(read_iob_tsv(path, set(PANX_TAGS)))


def _panx_hub(lang: str, split: str) -> list[dict]:
    ds = load_hub("google/xtreme", f"PAN-X.{lang}", split)
    names = ds.features["ner_tags"].feature.names
    return _panx_records([dict(tokens=r["tokens"], tags=[names[t] for t in r["ner_tags"]]) for r in ds])


register_task(Task(
    name="panx", kind="token_classification", languages=PANX_LANGS, labels=PANX_TAGS, metric="f1",
    local_reader=read_panx_local, hub_reader=lambda lang: _panx_hub(lang, "validation"), layout="panx/dev-{lang}.tsv",
    train_reader=read_panx_train_local, train_hub_reader=lambda: _panx_hub("en", "train"),
    row_aligned=False, score_metrics=("f1",),
    notes="WikiANN NER: English train (20,000), scored on dev (test tags are stripped in XTREME's copy); "
          "no Thai dev offline",
    english_target=("f1", 0.75),
))

# ------------------------------------------------------------------------------------------------- QA
QA_METRICS = ("f1", "exact_match")
XQUAD_LANGS = ("en", "ar", "de", "el", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
MLQA_LANGS = ("en", "ar", "de", "es", "hi", "vi", "zh")
TYDIQA_LANGS = ("en", "ar", "bn", "fi", "id", "ko", "ru", "sw", "te")
TYDIQA_HUB_NAMES = dict(en="english", ar="arabic", bn="bengali", fi="finnish", id="indonesian", ko="korean",
                        ru="russian", sw="swahili", te="telugu")


def _qa_records(recs: list[dict], by_id: bool = True) -> list[dict]:
    """Sorted by question id so that row i is the same question in every language (XQuAD)."""
    recs = sorted(recs, key=lambda r: r["id"]) if by_id else recs
    return [dict(r, group=i) for i, r in enumerate(recs)]


def _squad_hub(ds) -> list[dict]:
    return [dict(id=r["id"], title=r.get("title", ""), context=r["context"], question=r["question"],
                 answers=dict(text=list(r["answers"]["text"]), answer_start=list(r["answers"]["answer_start"])))
            for r in ds]


def read_xquad_local(data_dir: Path, lang: str) -> list[dict]:
    path = need_file(Path(data_dir) / "xquad" / f"xquad.{lang}.json", "xquad/xquad.{lang}.json")
    return _qa_records(read_squad_json(path))


def read_mlqa_local(data_dir: Path, lang: str) -> list[dict]:
    layout = "mlqa/MLQA_V1/dev/dev-context-{lang}-question-{lang}.json"
    path = need_file(Path(data_dir) / "mlqa" / "MLQA_V1" / "dev" / f"dev-context-{lang}-question-{lang}.json", layout)
    return _qa_records(read_squad_json(path))


def by_passage(english: list[dict]) -> np.ndarray:
    """Group ids of QA records by their passage: questions on one passage go to one side of a held-out split
    (511 of TyDiQA-GoldP's 3,696 English training questions share a passage with another)."""
    return np.unique([r["context"] for r in english], return_inverse=True)[1]


def read_tydiqa_train_local(data_dir: Path) -> list[dict]:
    layout = "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json"
    path = need_file(Path(data_dir) / "tydiqa" / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json", layout)
    # ids repeat in this file ('0' is 1,651 questions) and the QA scores key predictions by id: number them
    recs = read_squad_json(path, unique_ids=False)
    return _qa_records([dict(r, id=f"{i}:{r['id']}") for i, r in enumerate(recs)], by_id=False)


def read_tydiqa_local(data_dir: Path, lang: str) -> list[dict]:
    raise DataError(f"TyDiQA-GoldP dev ({lang}) is not in the offline data folder {data_dir} (only the English "
                    "train file is); score TyDiQA from the hub (no data_dir, online) or add "
                    "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json")


def read_tydiqa_hub(lang: str) -> list[dict]:
    ds = load_hub("google-research-datasets/tydiqa", "secondary_task", "validation")
    prefix = TYDIQA_HUB_NAMES[lang] + "-"
    return _qa_records(_squad_hub(r for r in ds if r["id"].startswith(prefix)))


def read_tydiqa_train_hub() -> list[dict]:
    ds = load_hub("google-research-datasets/tydiqa", "secondary_task", "train")
    return _qa_records(_squad_hub(r for r in ds if r["id"].startswith("english-")), by_id=False)


_QA_TRAIN_NOTE = ("trained on TyDiQA-GoldP English train (3,696 questions; XTREME trains on SQuAD v1.1, "
                  "not available offline)")
register_task(Task(
    name="xquad", kind="span_extraction", languages=XQUAD_LANGS, metric="f1", score_metrics=QA_METRICS,
    local_reader=read_xquad_local, hub_reader=lambda lang: _qa_records(_squad_hub(load_hub("google/xquad", f"xquad.{lang}", "validation"))),
    layout="xquad/xquad.{lang}.json", train_from="tydiqa", row_aligned=True,
    notes=f"XQuAD (1,190 questions, aligned across 12 languages; ro is not an XTREME-R language); {_QA_TRAIN_NOTE}",
    english_target=("f1", 0.55),
))
register_task(Task(
    name="mlqa", kind="span_extraction", languages=MLQA_LANGS, metric="f1", score_metrics=QA_METRICS,
    local_reader=read_mlqa_local,
    hub_reader=lambda lang: _qa_records(_squad_hub(load_hub("facebook/mlqa", f"mlqa.{lang}.{lang}", "validation"))),
    layout="mlqa/MLQA_V1/dev/dev-context-{lang}-question-{lang}.json", train_from="tydiqa", row_aligned=False,
    notes=f"MLQA dev, same-language pairs (test answers are stripped in XTREME's copy); MLQA's own answer "
          f"normalisation; {_QA_TRAIN_NOTE}",
))
register_task(Task(
    name="tydiqa", kind="span_extraction", languages=TYDIQA_LANGS, metric="f1", score_metrics=QA_METRICS,
    local_reader=read_tydiqa_local, hub_reader=read_tydiqa_hub, layout="tydiqa/tydiqa-goldp-v1.1-dev/...",
    train_reader=read_tydiqa_train_local,
    train_hub_reader=read_tydiqa_train_hub,
    group_fn=by_passage,
    row_aligned=False, hub_only=True,
    notes="TyDiQA-GoldP: only the English train file is offline (it trains the QA tasks); its dev sets come "
          "from the hub",
))

# --------------------------------------------------------------------------------------------- LAReQA
LAREQA_LANGS = ("en", "ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh")  # XQuAD-R: XQuAD minus ro

register_task(Task(
    name="lareqa", kind="answer_retrieval", languages=LAREQA_LANGS, metric="map@20", score_metrics=("map@20",),
    local_reader=read_xquad_local, hub_reader=lambda lang: _qa_records(_squad_hub(load_hub("google/xquad", f"xquad.{lang}", "validation"))),
    layout="xquad/xquad.{lang}.json", row_aligned=True,
    # its own checkpoint: a dual encoder on TyDiQA-GoldP English (question, answer sentence) pairs
    train_reader=read_tydiqa_train_local, train_hub_reader=read_tydiqa_train_hub, group_fn=by_passage,
    notes="XQuAD-R built from XQuAD: each question retrieves its answer sentence in all 11 languages from the "
          "pooled sentences of every language's contexts, mAP@20; sentences split by punctuation here "
          "(XQuAD-R's own split is not offline); a dual encoder trained with in-batch negatives on TyDiQA-GoldP "
          "English (question, answer sentence) pairs (XTREME-R trains it on SQuAD v1.1, not available offline)",
    english_target=("map@20", "pretrained"),
))

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


register_task(Task(
    name="mewslix", kind="entity_retrieval", languages=MEWSLIX_LANGS, metric="map@20", score_metrics=("map@20",),
    local_reader=read_mewslix_local, hub_reader=read_mewslix_hub, layout="(hub only)", row_aligned=False,
    hub_only=True, notes="Mewsli-X entity linking: hub only, not runnable offline",
))
