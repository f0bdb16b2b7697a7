"""Tests for xltlib.data.tasks: XTREME-layout readers, the offline split, PAWS-X groups, hub fallback.

Unmarked tests write tiny files under tmp_path; ``@pytest.mark.data`` tests read the real
(read-only) data folder in place and skip when it is absent.
"""
from __future__ import annotations

import csv
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from xltlib.data.tasks import TASKS, DataError, check_aligned, get_task, load_records, offline_split
from xltlib.data.tasks import xnli_pawsx
from xltlib.data.tasks.tatoeba import read_tatoeba_local
from xltlib.data.tasks.xnli_pawsx import pawsx_groups, read_pawsx_local, read_xnli_local


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


XNLI_ROWS = [
    ("Le chat dort.", "Un animal dort.", "entailment"),
    ("Le chat dort.", "Le chat est noir.", "neutral"),
    ("Le chat dort.", "Le chat court.", "contradictory"),
    ("Il pleut.", "Le sol est mouillé.", "entailment"),
    ("Il pleut.", "Il pleut à Paris.", "neutral"),
    ("Il pleut.", "Il fait sec.", "contradiction"),
]


@pytest.fixture
def xtreme(tmp_path) -> Path:
    """A tiny XTREME-layout folder: xnli en/fr, pawsx en/fr (CSV-quoted), tatoeba-laser deu."""
    root = tmp_path / "data"
    xnli = "".join(f"{a}\t{b}\t{y}\n" for a, b, y in XNLI_ROWS)
    write(root / "xnli" / "dev-fr.tsv", xnli)
    write(root / "xnli" / "dev-en.tsv", xnli.replace("Le ", "The ").replace("Il ", "It "))
    (root / "pawsx").mkdir()
    for lang in ("en", "fr"):  # written like XTREME did: a CSV writer (quotes fields that contain '"')
        with open(root / "pawsx" / f"dev-{lang}.tsv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f, delimiter="\t", quotechar='"', lineterminator="\n").writerows(PAWSX_ROWS)
    write(root / "tatoeba-laser" / "tatoeba.deu-eng.deu", "Ich bin hier.\nDas ist gut.\nWo ist Tom?\n")
    write(root / "tatoeba-laser" / "tatoeba.deu-eng.eng", "I am here.\nThat is good.\nWhere is Tom?\n")
    return root


PAWSX_ROWS = [
    ('He said "hi" to her.', 'He said "hi"', "1"),
    ('"Quoted" at the start', "plain text", "0"),
    ("ends with a quote \"x\"", '"', "1"),
    ("no quotes at all", "still none", "0"),
]


# ------------------------------------------------------------------------- registry
def test_registry_has_the_three_tasks():
    assert {"xnli", "pawsx", "tatoeba"} <= set(TASKS)
    assert len(TASKS["xnli"].languages) == 15 and len(TASKS["pawsx"].languages) == 7
    assert TASKS["xnli"].labels == ("entailment", "neutral", "contradiction")
    with pytest.raises(ValueError, match="registered: .*xnli"):
        get_task("mnli")


def test_language_not_in_task_lists_languages(xtreme):
    with pytest.raises(ValueError) as info:
        load_records("pawsx", "ar", xtreme)
    msg = str(info.value)
    assert "'ar'" in msg and "pawsx" in msg
    for lang in TASKS["pawsx"].languages:
        assert lang in msg
    assert not isinstance(info.value, DataError)


# --------------------------------------------------------------------------- readers
def test_xnli_reader(xtreme):
    recs = load_records("xnli", "fr", xtreme)
    assert [(r["text_a"], r["text_b"]) for r in recs] == [(a, b) for a, b, _ in XNLI_ROWS]
    assert [r["label"] for r in recs] == [0, 1, 2, 0, 1, 2]  # 'contradictory' -> contradiction (2)
    assert [r["id"] for r in recs] == list(range(6))
    assert [r["group"] for r in recs] == [0, 0, 0, 1, 1, 1]  # premise block row // 3
    assert read_xnli_local(xtreme, "fr") == recs
    assert set(recs[0]) == {"id", "group", "text_a", "text_b", "label"}


def test_xnli_bad_label(tmp_path):
    p = write(tmp_path / "xnli" / "dev-de.tsv", "a\tb\tentailment\nc\td\tmaybe\n")
    with pytest.raises(DataError) as info:
        read_xnli_local(tmp_path, "de")
    msg = str(info.value)
    assert str(p) in msg and "line 2" in msg and "'maybe'" in msg


def test_pawsx_reader_unquotes_csv_fields(xtreme):
    raw = (xtreme / "pawsx" / "dev-fr.tsv").read_text()
    assert '"He said ""hi"" to her."' in raw  # the file really is CSV-quoted
    recs = load_records("pawsx", "fr", xtreme)
    assert [(r["text_a"], r["text_b"], str(r["label"])) for r in recs] == PAWSX_ROWS
    assert [r["label"] for r in recs] == [1, 0, 1, 0]
    assert [r["group"] for r in recs] == [0, 1, 2, 3]


def test_pawsx_reader_handwritten_quoting(tmp_path):
    write(tmp_path / "pawsx" / "dev-de.tsv",
          '"He said ""hi"""\tplain\t1\n'
          'x\t"a ""b"" c"\t0\n')
    recs = read_pawsx_local(tmp_path, "de")
    assert recs[0]["text_a"] == 'He said "hi"' and recs[0]["text_b"] == "plain"
    assert recs[1]["text_b"] == 'a "b" c'


def test_pawsx_bad_label(tmp_path):
    p = write(tmp_path / "pawsx" / "dev-de.tsv", "a\tb\t1\nc\td\tyes\n")
    with pytest.raises(DataError, match="line 2") as info:
        read_pawsx_local(tmp_path, "de")
    assert str(p) in str(info.value)


def test_tatoeba_reader(xtreme):
    recs = load_records("tatoeba", "de", xtreme)
    assert [(r["text_a"], r["text_b"]) for r in recs] == [
        ("Ich bin hier.", "I am here."), ("Das ist gut.", "That is good."), ("Wo ist Tom?", "Where is Tom?")]
    assert [r["label"] for r in recs] == [-1, -1, -1]
    assert read_tatoeba_local(xtreme, "deu") == recs  # the ISO 639-3 code is accepted by the reader


def test_tatoeba_unaligned_files(tmp_path):
    write(tmp_path / "tatoeba-laser" / "tatoeba.fra-eng.fra", "un\ndeux\n")
    write(tmp_path / "tatoeba-laser" / "tatoeba.fra-eng.eng", "one\n")
    with pytest.raises(DataError, match="line-aligned") as info:
        read_tatoeba_local(tmp_path, "fr")
    assert "tatoeba.fra-eng.fra" in str(info.value)


def test_tatoeba_splits_on_newline_only(tmp_path):
    write(tmp_path / "tatoeba-laser" / "tatoeba.fra-eng.fra", "un\u2028deux\ntrois\n")
    write(tmp_path / "tatoeba-laser" / "tatoeba.fra-eng.eng", "one two\nthree\n")
    recs = read_tatoeba_local(tmp_path, "fr")
    assert [r["text_b"] for r in recs] == ["one two", "three"]


@pytest.mark.parametrize("task,lang,rel,text", [
    ("xnli", "fr", "xnli/dev-fr.tsv", "a\tb\tentailment\nc\td\tneutral\nonly\ttwo\ne\tf\tneutral\n"),
    ("pawsx", "en", "pawsx/dev-en.tsv", "a\tb\t1\n\"c \"\"q\"\"\"\td\t0\nonly\ttwo\ne\tf\t1\n"),
], ids=["xnli", "pawsx"])
def test_malformed_line_names_file_and_line(tmp_path, task, lang, rel, text):
    p = write(tmp_path / rel, text)
    with pytest.raises(DataError) as info:
        load_records(task, lang, tmp_path)
    msg = str(info.value)
    assert str(p) in msg and "line 3" in msg and "got 2" in msg


def test_malformed_line_too_many_columns(tmp_path):
    write(tmp_path / "xnli" / "dev-en.tsv", "a\tb\tneutral\tEXTRA\n")
    with pytest.raises(DataError, match=r"line 1: expected 3 TAB-separated fields, got 4"):
        read_xnli_local(tmp_path, "en")


@pytest.mark.parametrize("task,lang,split,rel,layout", [
    ("xnli", "de", "dev", "xnli/dev-de.tsv", "xnli/{dev,test}-{lang}.tsv (language 'de')"),
    ("xnli", "sw", "test", "xnli/test-sw.tsv", "xnli/{dev,test}-{lang}.tsv (language 'sw')"),
    ("pawsx", "ja", "dev", "pawsx/dev-ja.tsv", "pawsx/{dev,test}-{lang}.tsv (language 'ja')"),
    ("tatoeba", "ru", "dev", "tatoeba-laser/tatoeba.rus-eng.rus", "tatoeba-laser/tatoeba.{xxx}-eng.{xxx}"),
], ids=["xnli", "xnli-test", "pawsx", "tatoeba"])
def test_missing_file_names_path_and_layout(xtreme, task, lang, split, rel, layout):
    with pytest.raises(DataError) as info:
        load_records(task, lang, xtreme, split)
    msg = str(info.value)
    assert str(xtreme / rel) in msg and layout in msg
    assert isinstance(info.value, FileNotFoundError)  # DataError is a FileNotFoundError


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataError) as info:
        load_records("xnli", "en", missing)
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


def test_data_dir_from_environment(xtreme, monkeypatch):
    monkeypatch.setenv("XLT_DATA_DIR", str(xtreme))
    assert len(load_records("xnli", "en")) == 6


@pytest.fixture
def fake_datasets(monkeypatch):
    """A stand-in `datasets` module whose load_dataset fails like an offline machine; records calls."""
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        raise ConnectionError("no network (test)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


@pytest.mark.parametrize("task,lang,hub_path", [("xnli", "de", "facebook/xnli"),
                                                 ("pawsx", "fr", "google-research-datasets/paws-x"),
                                                 ("tatoeba", "de", "google/xtreme")])
def test_no_data_dir_goes_to_hub_with_offline_hint(monkeypatch, fake_datasets, task, lang, hub_path):
    monkeypatch.delenv("XLT_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        load_records(task, lang)
    msg = str(info.value)
    assert "XLT_DATA_DIR" in msg and "Offline" in msg and "data_dir" in msg and hub_path in msg
    assert "no network (test)" in msg
    assert fake_datasets and fake_datasets[0][0] == hub_path


def test_hub_reader_records(monkeypatch):
    rows = [dict(premise=f"p{i // 3}", hypothesis=f"h{i}", label=i % 3) for i in range(6)]
    monkeypatch.setattr(xnli_pawsx, "load_hub", lambda path, name, split: rows)
    monkeypatch.delenv("XLT_DATA_DIR", raising=False)
    recs = load_records("xnli", "en", None)
    assert [r["group"] for r in recs] == [0, 0, 0, 1, 1, 1]
    assert [r["label"] for r in recs] == [0, 1, 2, 0, 1, 2]


def test_local_folder_never_touches_hub(xtreme, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("hub used although a data folder was given")
    monkeypatch.setattr(xnli_pawsx, "load_hub", boom)
    assert len(load_records("pawsx", "en", xtreme)) == len(PAWSX_ROWS)


# ------------------------------------------------------------------------ offline split
def _xnli_like(n_blocks: int) -> list[dict]:
    return [dict(id=i, group=i // 3, text_a=f"p{i // 3}", text_b=f"h{i}", label=i % 3) for i in range(3 * n_blocks)]


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.8])
def test_offline_split_whole_groups_disjoint_fraction(fraction):
    recs = _xnli_like(100)
    tr, ev = offline_split("xnli", recs, fraction, seed=3)
    assert len(np.intersect1d(tr, ev)) == 0
    assert sorted(np.concatenate([tr, ev]).tolist()) == list(range(len(recs)))
    g_tr, g_ev = {i // 3 for i in tr}, {i // 3 for i in ev}
    assert not g_tr & g_ev  # a premise block is never split
    assert len(g_tr) == round(fraction * 100)
    assert len(tr) == 3 * len(g_tr)


def test_offline_split_deterministic_and_seed_dependent():
    recs = _xnli_like(50)
    a = offline_split("xnli", recs, 0.5, seed=0)
    b = offline_split("xnli", recs, 0.5, seed=0)
    c = offline_split("xnli", recs, 0.5, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert np.all(np.diff(a[0]) > 0) and np.all(np.diff(a[1]) > 0)  # sorted row indices


def test_offline_split_pawsx_keeps_shared_sentences_together():
    # rows 0-1-2 linked by a chain of shared sentences, row 3 and 4 alone, 5-6 share one sentence
    recs = [dict(id=i, group=i, text_a=a, text_b=b, label=0) for i, (a, b) in enumerate([
        ("a", "b"), ("b", "c"), ("c", "d"), ("e", "f"), ("g", "h"), ("x", "y"), ("z", "x")])]
    groups = pawsx_groups(recs)
    assert len(np.unique(groups)) == 4
    for seed in range(20):
        tr, ev = offline_split("pawsx", recs, 0.5, seed)
        for side in (tr, ev):
            s = set(side.tolist())
            assert {0, 1, 2} <= s or not {0, 1, 2} & s
            assert {5, 6} <= s or not {5, 6} & s
        assert len(np.unique(groups[tr])) == 2  # round(0.5 * 4 groups)


def test_pawsx_groups_transitive_chain():
    recs = [dict(id=0, text_a="a", text_b="b"), dict(id=1, text_a="c", text_b="d"),
            dict(id=2, text_a="b", text_b="c"), dict(id=3, text_a="e", text_b="e"),
            dict(id=4, text_a="f", text_b="a")]
    g = pawsx_groups(recs)
    assert g[0] == g[1] == g[2] == g[4]  # a-b, b-c, c-d, f-a: joined through row 2
    assert g[3] != g[0]
    assert len(np.unique(g)) == 2


def test_pawsx_groups_singletons():
    recs = [dict(id=i, text_a=f"s{i}", text_b=f"t{i}") for i in range(5)]
    assert len(np.unique(pawsx_groups(recs))) == 5


def test_check_aligned():
    check_aligned("xnli", {"en": [{}] * 3, "fr": [{}] * 3})
    with pytest.raises(DataError) as info:
        check_aligned("xnli", {"en": [{}] * 3, "fr": [{}] * 2})
    assert "'en': 3" in str(info.value) and "'fr': 2" in str(info.value)


# ---------------------------------------------------------------- the real data folder
@pytest.mark.data
def test_real_xnli_all_languages(data_dir):
    labels = None
    for lang in TASKS["xnli"].languages:
        recs = load_records("xnli", lang, data_dir)
        assert len(recs) == 2490, lang
        seq = [r["label"] for r in recs]
        assert np.bincount(seq).tolist() == [830, 830, 830], lang
        labels = labels or seq
        assert seq == labels, f"{lang} label sequence differs from {TASKS['xnli'].languages[0]}"


@pytest.mark.data
def test_real_pawsx_all_languages(data_dir):
    by_lang = {lang: load_records("pawsx", lang, data_dir) for lang in TASKS["pawsx"].languages}
    assert {lang: len(r) for lang, r in by_lang.items()} == {lang: 2000 for lang in by_lang}
    check_aligned("pawsx", by_lang)
    assert sum(r["label"] for r in by_lang["en"]) == 863


@pytest.mark.data
def test_real_pawsx_quoted_rows_are_unquoted(data_dir):
    raw_lines = (data_dir / "pawsx" / "dev-fr.tsv").read_text(encoding="utf-8").split("\n")
    quoted = [i for i, line in enumerate(raw_lines) if line.startswith('"') or '\t"' in line]
    assert len(quoted) > 100  # the MANIFEST counts 207 affected rows in dev-fr
    recs = load_records("pawsx", "fr", data_dir)
    fields = [s for r in recs for s in (r["text_a"], r["text_b"])]
    assert not [s for s in fields if len(s) >= 2 and s.startswith('"') and s.endswith('"')]
    assert not [s for s in fields if '""' in s]
    assert sum('"' in s for s in fields) > 100  # inner quotes are kept, undoubled
    assert all("\t" not in s and "\n" not in s for s in fields)


@pytest.mark.data
def test_real_xnli_split_keeps_premise_blocks(data_dir):
    en = load_records("xnli", "en", data_dir)
    tr, ev = offline_split("xnli", en, 0.5, seed=0)
    assert len(tr) + len(ev) == 2490 and len(tr) == 3 * 415
    blocks_tr, blocks_ev = set((tr // 3).tolist()), set((ev // 3).tolist())
    assert not blocks_tr & blocks_ev
    for b in blocks_tr:
        assert {3 * b, 3 * b + 1, 3 * b + 2} <= set(tr.tolist())
    # the same rows are a premise block in another language too
    de = load_records("xnli", "de", data_dir)
    for b in list(blocks_ev)[:50]:
        assert len({de[3 * b + k]["text_a"] for k in range(3)}) == 1


@pytest.mark.data
def test_real_pawsx_split_respects_shared_sentences(data_dir):
    en = load_records("pawsx", "en", data_dir)
    assert len(np.unique(pawsx_groups(en))) == 1201  # MANIFEST: 1,201 groups
    tr, ev = offline_split("pawsx", en, 0.5, seed=0)
    sents_tr = {s for i in tr for s in (en[i]["text_a"], en[i]["text_b"])}
    sents_ev = {s for i in ev for s in (en[i]["text_a"], en[i]["text_b"])}
    assert not sents_tr & sents_ev
    assert len(tr) + len(ev) == 2000


@pytest.mark.data
def test_real_tatoeba_deu(data_dir):
    recs = load_records("tatoeba", "de", data_dir)
    assert len(recs) == 1000
    assert all(r["text_a"] and r["text_b"] for r in recs)
    src = (data_dir / "tatoeba-laser" / "tatoeba.deu-eng.deu").read_text(encoding="utf-8").split("\n")
    assert recs[-1]["text_a"] == src[999]
