"""PAN-X (WikiANN NER, 47 languages): readers and the registry entry. Records:
``{"id", "group", "tokens": [..], "tags": [..]}``.
"""
from __future__ import annotations

from pathlib import Path

from xltlib.data.formats import load_hub, need_file, read_iob_tsv
from xltlib.data.tasks.spec import Task

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


PANX = Task(
    name="panx", kind="token_classification", languages=PANX_LANGS, labels=PANX_TAGS, metric="f1",
    local_reader=read_panx_local, hub_reader=lambda lang: _panx_hub(lang, "validation"), layout="panx/dev-{lang}.tsv",
    train_reader=read_panx_train_local, train_hub_reader=lambda: _panx_hub("en", "train"),
    row_aligned=False, score_metrics=("f1",),
    notes="WikiANN NER: English train (20,000), scored on dev (test tags are stripped in XTREME's copy); "
          "no Thai dev offline",
    english_target=("f1", 0.75),
)
