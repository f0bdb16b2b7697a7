"""Tests for xltlib.data.formats: strict readers for CoNLL-U, PAN-X TSV, SQuAD JSON and JSON Lines.

Unmarked tests write tiny files under tmp_path (good input and each kind of bad input);
``@pytest.mark.data`` tests read the real (read-only) data folder in place and check the counts
stated in its MANIFEST.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from xltlib.data.formats import read_conllu, read_iob_tsv, read_jsonl, read_squad_json
from xltlib.data.tasks import DataError

PANX_TAGS = {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def row(*cols: str) -> str:
    return "\t".join(cols)


def tok(i, form, upos) -> str:
    return row(str(i), form, form.lower(), upos, "_", "_", "0", "dep", "_", "_")


# ------------------------------------------------------------------------------------------ CoNLL-U
GOOD_CONLLU = "\n".join([
    "# newdoc id = d1",
    "# sent_id = s1",
    "# text = Vámonos al mar.",
    row("1-2", "Vámonos", *["_"] * 8),
    tok(1, "Vamos", "VERB"),
    tok(2, "nos", "PRON"),
    row("3-4", "al", *["_"] * 8),
    tok(3, "a", "ADP"),
    tok(4, "el", "DET"),
    tok(5, "mar", "NOUN"),
    row("5.1", "fue", "ir", "VERB", "_", "_", "_", "_", "4:conj", "_"),
    tok(6, ".", "PUNCT"),
    "",
    "# sent_id = s2",
    tok(1, "Hola", "INTJ"),
]) + "\n"  # one trailing newline only: no blank line after the last sentence


def test_read_conllu_skips_multiword_tokens_and_empty_nodes(tmp_path):
    sents = read_conllu(write(tmp_path / "es.conllu", GOOD_CONLLU))
    assert sents == [
        {"id": "s1", "tokens": ["Vamos", "nos", "a", "el", "mar", "."],
         "tags": ["VERB", "PRON", "ADP", "DET", "NOUN", "PUNCT"]},
        {"id": "s2", "tokens": ["Hola"], "tags": ["INTJ"]},
    ]


def test_read_conllu_without_final_newline_and_with_extra_blank_lines(tmp_path):
    text = "\n\n" + GOOD_CONLLU.replace("\n\n", "\n\n\n").rstrip("\n")
    assert [s["id"] for s in read_conllu(write(tmp_path / "x.conllu", text))] == ["s1", "s2"]


def test_read_conllu_crlf(tmp_path):
    sents = read_conllu(write(tmp_path / "x.conllu", GOOD_CONLLU.replace("\n", "\r\n")))
    assert sents[0]["tags"][-1] == "PUNCT" and sents[1]["tokens"] == ["Hola"]


@pytest.mark.parametrize("bad, line, needle", [
    # a token line with 9 columns (line 5)
    (GOOD_CONLLU.replace(tok(1, "Vamos", "VERB"), row("1", "Vamos", "vamos", "VERB", "_", "_", "0", "dep", "_")),
     5, "expected 10 TAB-separated"),
    # spaces instead of TABs
    (GOOD_CONLLU.replace(tok(5, "mar", "NOUN"), tok(5, "mar", "NOUN").replace("\t", " ")), 10, "expected 10"),
    # a non-integer ID
    (GOOD_CONLLU.replace(tok(2, "nos", "PRON"), tok("2a", "nos", "PRON")), 6, "integer word ID"),
    # IDs out of sequence
    (GOOD_CONLLU.replace(tok(2, "nos", "PRON"), tok(7, "nos", "PRON")), 6, "expected word ID 2"),
    # second sentence without sent_id: reported at its first line (14)
    (GOOD_CONLLU.replace("# sent_id = s2\n", "# text = Hola\n"), 14, "no '# sent_id"),
    # duplicate sent_id
    (GOOD_CONLLU.replace("# sent_id = s2", "# sent_id = s1"), 14, "duplicate sent_id"),
])
def test_read_conllu_errors_name_file_and_line(tmp_path, bad, line, needle):
    path = write(tmp_path / "bad.conllu", bad)
    with pytest.raises(DataError) as e:
        read_conllu(path)
    assert str(path) in str(e.value) and f"line {line}:" in str(e.value) and needle in str(e.value)


def test_missing_file_is_dataerror_naming_path(tmp_path):
    for reader in (read_conllu, read_iob_tsv, read_squad_json, lambda p: read_jsonl(p, ("a",))):
        with pytest.raises(DataError, match="nope.txt"):
            reader(tmp_path / "nope.txt")
    assert issubclass(DataError, FileNotFoundError)


def test_invalid_utf8_is_dataerror_with_line(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_bytes(b"a\tO\n\xff\tO\n")
    with pytest.raises(DataError, match=r"line 2: expected UTF-8"):
        read_iob_tsv(path)


# ------------------------------------------------------------------------------------------ IOB TSV
GOOD_TSV = "Khartoum\tB-LOC\n,\tO\nSudan\tB-LOC\n\nJohn Paul\tB-PER\nII\tI-PER\n"


def test_read_iob_tsv(tmp_path):
    sents = read_iob_tsv(write(tmp_path / "dev-xx.tsv", GOOD_TSV), PANX_TAGS)
    assert sents == [
        {"id": 0, "tokens": ["Khartoum", ",", "Sudan"], "tags": ["B-LOC", "O", "B-LOC"]},
        {"id": 1, "tokens": ["John Paul", "II"], "tags": ["B-PER", "I-PER"]},
    ]
    # no trailing newline, doubled blank line, CRLF: same sentences
    variant = GOOD_TSV.rstrip("\n").replace("\n\n", "\n\n\n").replace("\n", "\r\n")
    assert read_iob_tsv(write(tmp_path / "v.tsv", variant)) == sents


@pytest.mark.parametrize("bad, line, needle", [
    ("a\tO\nb O\n", 2, "(2 TAB-separated fields), got 1"),
    ("a\tO\n\nb\tO\textra\n", 3, "got 3"),
    ("a\tO\nb\tB-MISC\n", 2, "tag 'B-MISC' is not one of"),
    ("a\tO\n\tO\n", 2, "empty token or tag"),
])
def test_read_iob_tsv_errors(tmp_path, bad, line, needle):
    path = write(tmp_path / "bad.tsv", bad)
    with pytest.raises(DataError) as e:
        read_iob_tsv(path, PANX_TAGS)
    assert str(path) in str(e.value) and f"line {line}:" in str(e.value) and needle in str(e.value)


def test_read_iob_tsv_without_allowed_tags_accepts_any_tag(tmp_path):
    assert read_iob_tsv(write(tmp_path / "x.tsv", "a\tNOUN\n"))[0]["tags"] == ["NOUN"]


# ------------------------------------------------------------------------------------------- SQuAD
def squad_doc() -> dict:
    ctx = "The Eiffel Tower was built in 1889 in Paris."
    return {"version": "1.1", "data": [
        {"title": "Eiffel", "paragraphs": [{"context": ctx, "qas": [
            {"id": "q1", "question": "When?", "answers": [{"text": "1889", "answer_start": 30}]},
            {"id": "q2", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 38},
                                                          {"text": "in Paris", "answer_start": 35}]},
        ]}]},
        {"paragraphs": [{"context": "x", "qas": [{"id": "q3", "question": "?", "answers": []}]}]},
    ]}


def test_read_squad_json(tmp_path):
    recs = read_squad_json(write(tmp_path / "s.json", json.dumps(squad_doc())), check_spans=True)
    assert [r["id"] for r in recs] == ["q1", "q2", "q3"]
    assert recs[1] == {"id": "q2", "title": "Eiffel", "context": squad_doc()["data"][0]["paragraphs"][0]["context"],
                       "question": "Where?", "answers": {"text": ["Paris", "in Paris"], "answer_start": [38, 35]}}
    assert recs[2]["title"] == "" and recs[2]["answers"] == {"text": [], "answer_start": []}


def _broken(edit) -> str:
    doc = squad_doc()
    edit(doc)
    return json.dumps(doc)


@pytest.mark.parametrize("text, needle", [
    (_broken(lambda d: d.pop("data")), "data: missing key 'data'"),
    (_broken(lambda d: d["data"][1].pop("paragraphs")), "data[1].paragraphs: missing key"),
    (_broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][1].pop("answers")),
     "data[0].paragraphs[0].qas[1].answers: missing key 'answers'"),
    (_broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][1]["answers"][1].pop("text")),
     "data[0].paragraphs[0].qas[1].answers[1].text: missing key"),
    (_broken(lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="30")),
     "answers[0].answer_start: expected int, got str"),
    (_broken(lambda d: d["data"][0]["paragraphs"][0].update(qas={})), "data[0].paragraphs[0].qas: expected list"),
    (_broken(lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(id="q1")), "duplicate question id 'q1'"),
    ('{"data": [\n  {"paragraphs": [}\n]}', "invalid JSON at line 2 column"),
])
def test_read_squad_json_errors_name_key_path(tmp_path, text, needle):
    path = write(tmp_path / "bad.json", text)
    with pytest.raises(DataError) as e:
        read_squad_json(path)
    assert str(path) in str(e.value) and needle in str(e.value)


def test_read_squad_json_options(tmp_path):
    dup = write(tmp_path / "dup.json", _broken(lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(id="q1")))
    assert [r["id"] for r in read_squad_json(dup, unique_ids=False)] == ["q1", "q2", "q1"]
    off = write(tmp_path / "off.json", _broken(
        lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=29)))
    assert len(read_squad_json(off)) == 3  # spans are not checked by default
    with pytest.raises(DataError, match=r"qas\[0\].answers\[0\]: answer_start 29 does not point at '1889'"):
        read_squad_json(off, check_spans=True)


# ------------------------------------------------------------------------------------------- JSONL
KEYS = ("premise", "choice1", "choice2", "question", "label", "idx")


def copa(i: int) -> str:
    return json.dumps({"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": i % 2,
                       "idx": i}, ensure_ascii=False)


def test_read_jsonl_crlf_and_blank_lines(tmp_path):
    path = write(tmp_path / "x.jsonl", copa(0) + "\r\n" + copa(1) + "\r\n\r\n")
    recs = read_jsonl(path, KEYS)
    assert [r["idx"] for r in recs] == [0, 1] and recs[1]["label"] == 1


@pytest.mark.parametrize("bad, line, needle", [
    (copa(0) + "\n" + copa(1)[:-1] + "\n", 2, "invalid JSON"),
    (copa(0) + "\r\n" + json.dumps({"premise": "p", "label": 0}) + "\r\n", 2, "missing required key(s) ['choice1'"),
    ("\n" + "[1, 2]\n", 2, "expected a JSON object, got list"),
])
def test_read_jsonl_errors(tmp_path, bad, line, needle):
    path = write(tmp_path / "bad.jsonl", bad)
    with pytest.raises(DataError) as e:
        read_jsonl(path, KEYS)
    assert str(path) in str(e.value) and f"line {line}:" in str(e.value) and needle in str(e.value)


# ------------------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_udpos_pud_en(data_dir):
    sents = read_conllu(data_dir / "udpos-pud" / "en.conllu")
    # MANIFEST: 1,000 sentences, 21,180 "words" = syntactic words; the file also has 129 multiword-token
    # lines and 7 empty nodes, which are not counted there and are skipped here.
    assert len(sents) == 1000 and len({s["id"] for s in sents}) == 1000
    assert sum(len(s["tokens"]) for s in sents) == 21180
    assert all(len(s["tokens"]) == len(s["tags"]) for s in sents)
    assert sents[0]["id"] == "n01001011" and sents[0]["tokens"][:3] == ["“", "While", "much"]


@pytest.mark.data
def test_real_udpos_pud_de_has_multiword_tokens(data_dir):
    path = data_dir / "udpos-pud" / "de.conllu"
    n_mwt = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.split("\t", 1)[0].count("-") == 1
                and line[0].isdigit())
    sents = read_conllu(path)
    assert n_mwt > 0 and len(sents) == 1000 and sum(len(s["tokens"]) for s in sents) == 21332


@pytest.mark.data
def test_real_panx_dev_sw(data_dir):
    sents = read_iob_tsv(data_dir / "panx" / "dev-sw.tsv", PANX_TAGS)
    assert len(sents) == 1000
    assert sum(len(s["tokens"]) for s in sents) == 5609
    assert sum(t.startswith("B-") for s in sents for t in s["tags"]) == 1209


@pytest.mark.data
def test_real_xquad_en(data_dir):
    recs = read_squad_json(data_dir / "xquad" / "xquad.en.json", check_spans=True)
    assert len(recs) == 1190 and len({r["context"] for r in recs}) == 240 and len({r["title"] for r in recs}) == 48
    assert all(len(r["answers"]["text"]) == 1 for r in recs)


@pytest.mark.data
def test_real_mlqa_de_and_tydiqa_train(data_dir):
    assert len(read_squad_json(data_dir / "mlqa" / "MLQA_V1" / "dev" / "dev-context-de-question-de.json")) == 512
    tydi = data_dir / "tydiqa" / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json"
    with pytest.raises(DataError, match="duplicate question id"):  # this copy reuses ids such as '0'
        read_squad_json(tydi)
    assert len(read_squad_json(tydi, check_spans=True, unique_ids=False)) == 3696


@pytest.mark.data
def test_real_xcopa_test_et_crlf(data_dir):
    path = data_dir / "xcopa" / "test-et.jsonl"
    assert b"\r\n" in path.read_bytes()[:2000]
    recs = read_jsonl(path, KEYS)
    assert len(recs) == 500
    assert sum(r["label"] == 0 for r in recs) == 250
    assert sum(r["question"] == "cause" for r in recs) == 250
