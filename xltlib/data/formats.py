"""Strict readers for the file formats of an XTREME-layout data folder.

The base of the data readers (nothing in xltlib below it). Each reader returns plain dicts and raises
:class:`DataError` on a missing or
malformed file, with a message that names the file, the 1-based line number (or the JSON key
path) and what was expected, so a bad download fails loudly instead of skewing a score.

- CoNLL-U (UD treebanks, e.g. ``udpos-pud/{lang}.conllu``): https://universaldependencies.org/format.html
- token<TAB>tag IOB2 files (PAN-X / WikiANN as preprocessed by XTREME, ``panx/dev-{lang}.tsv``)
- SQuAD v1.1 JSON (XQuAD, MLQA, TyDiQA-GoldP): https://rajpurkar.github.io/SQuAD-explorer/
- JSON Lines (XCOPA; the original XCOPA files have CRLF line endings)
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterator

__all__ = ["DataError", "need_file", "read_tsv", "read_lines", "load_hub", "read_conllu", "read_iob_tsv",
           "read_squad_json", "read_jsonl"]


class DataError(FileNotFoundError):
    """Missing or malformed data; the message names the path and the expected layout."""


def need_file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise DataError(f"missing data file {path}; expected the XTREME layout {layout} under the data folder")
    return path


def read_tsv(path: Path, n_cols: int, quoting: bool) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quotechar='"') if quoting \
            else (line.rstrip("\n").split("\t") for line in f)
        rows = []
        for i, row in enumerate(reader, 1):
            if len(row) != n_cols:
                raise DataError(f"{path}, line {i}: expected {n_cols} TAB-separated fields, got {len(row)}")
            rows.append(row)
    return rows


def read_lines(path: Path) -> list[str]:
    """Lines split on LF only (str.splitlines would also split on U+2028, U+0085, ...)."""
    text = path.read_text(encoding="utf-8")
    return [line.rstrip("\r") for line in text.split("\n")[: -1 if text.endswith("\n") else None]]


def load_hub(path: str, name: str | None, split: str):
    try:
        from datasets import load_dataset

        return load_dataset(path, name, split=split)
    except Exception as exc:  # noqa: BLE001 - re-raised with the offline hint
        raise DataError(
            f"could not load {path}/{name} ({split}) from the Hugging Face hub: {exc}\n"
            "Offline? Point `data_dir` in the params (or $XLT_DATA_DIR) at an XTREME-layout folder."
        ) from exc


_SENT_ID = re.compile(r"^#\s*sent_id\s*=\s*(.*?)\s*$")
_MWT_ID = re.compile(r"^[1-9][0-9]*-[1-9][0-9]*$")  # multiword token range, e.g. 3-4
_EMPTY_ID = re.compile(r"^[0-9]+\.[1-9][0-9]*$")  # empty node, e.g. 5.1
_WORD_ID = re.compile(r"^[1-9][0-9]*$")


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    return path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line ending); CRLF and a missing final newline are fine."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    parts = raw.split(b"\n")
    if parts and parts[-1] == b"":  # the file ends with a newline: no extra empty line
        parts.pop()
    for i, b in enumerate(parts, 1):
        try:
            yield i, b.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}, line {i}: expected UTF-8 text ({e.reason} at byte {e.start})") from None


# --------------------------------------------------------------------------------------------- CoNLL-U
def read_conllu(path) -> list[dict]:
    """Read a CoNLL-U file into ``{"id": sent_id, "tokens": [FORM], "tags": [UPOS]}`` per sentence.

    Multiword-token lines (ID ``3-4``) and empty nodes (ID ``5.1``) are skipped: XTREME's UD-POS
    preprocessing keeps the syntactic words, whose count is what UD calls "words". Every sentence
    needs a unique ``# sent_id`` (PUD files are aligned across languages by it, not by position),
    token lines need exactly 10 TAB-separated columns and word IDs must run 1, 2, 3, ...
    """
    path = _existing(path)
    out: list[dict] = []
    seen: dict[str, int] = {}
    sent = None  # {"id", "tokens", "tags", "start"} of the sentence being read

    def close(lineno: int) -> None:
        nonlocal sent
        if sent is None:
            return
        if sent["id"] is None:
            raise DataError(f"{path}, line {sent['start']}: sentence has no '# sent_id = ...' comment")
        if not sent["tokens"]:
            raise DataError(f"{path}, line {sent['start']}: sentence '{sent['id']}' has no word lines")
        if sent["id"] in seen:
            raise DataError(f"{path}, line {sent['start']}: duplicate sent_id '{sent['id']}' "
                            f"(first at line {seen[sent['id']]})")
        seen[sent["id"]] = sent["start"]
        out.append({"id": sent["id"], "tokens": sent["tokens"], "tags": sent["tags"]})
        sent = None

    for i, line in _lines(path):
        if not line.strip():
            close(i)
            continue
        if sent is None:
            sent = {"id": None, "tokens": [], "tags": [], "start": i}
        if line.startswith("#"):
            m = _SENT_ID.match(line)
            if m:
                if not m.group(1):
                    raise DataError(f"{path}, line {i}: empty sent_id")
                if sent["id"] is not None:
                    raise DataError(f"{path}, line {i}: second sent_id in one sentence (no blank line before it?)")
                sent["id"] = m.group(1)
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise DataError(f"{path}, line {i}: expected 10 TAB-separated CoNLL-U columns, got {len(cols)}: {line[:80]!r}")
        tid = cols[0]
        if _MWT_ID.match(tid) or _EMPTY_ID.match(tid):
            continue
        if not _WORD_ID.match(tid):
            raise DataError(f"{path}, line {i}: expected an integer word ID (or n-m / n.k), got {tid!r}")
        if int(tid) != len(sent["tokens"]) + 1:
            raise DataError(f"{path}, line {i}: expected word ID {len(sent['tokens']) + 1}, got {tid}")
        if not cols[1] or not cols[3]:
            raise DataError(f"{path}, line {i}: empty FORM or UPOS column")
        sent["tokens"].append(cols[1])
        sent["tags"].append(cols[3])
    close(-1)
    return out


# ----------------------------------------------------------------------------------------- IOB TSV
def read_iob_tsv(path, allowed_tags: set | None = None) -> list[dict]:
    """Read PAN-X ``token<TAB>tag`` lines (blank line between sentences) into ``{"id", "tokens", "tags"}``.

    ``id`` is the 0-based sentence index. With ``allowed_tags`` (e.g. the 7 IOB2 PAN-X tags) any
    other tag is an error. Several blank lines in a row are one sentence break.
    """
    path = _existing(path)
    out: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    for i, line in _lines(path):
        if not line.strip():
            if tokens:
                out.append({"id": len(out), "tokens": tokens, "tags": tags})
                tokens, tags = [], []
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise DataError(f"{path}, line {i}: expected 'token<TAB>tag' (2 TAB-separated fields), "
                            f"got {len(cols)}: {line[:80]!r}")
        tok, tag = cols
        if not tok or not tag:
            raise DataError(f"{path}, line {i}: empty token or tag: {line[:80]!r}")
        if allowed_tags is not None and tag not in allowed_tags:
            raise DataError(f"{path}, line {i}: tag {tag!r} is not one of {sorted(allowed_tags)}")
        tokens.append(tok)
        tags.append(tag)
    if tokens:
        out.append({"id": len(out), "tokens": tokens, "tags": tags})
    return out


# ------------------------------------------------------------------------------------------- JSON
def _load_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: expected UTF-8 JSON ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}") from None


def _get(obj, key: str, typ, where: str, path: Path):
    """obj[key] checked to be a ``typ``; the error names the key path (e.g. data[3].paragraphs[0].qas[2])."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where or '(top level)'}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{path}: {where + '.' if where else ''}{key}: missing key '{key}'")
    val = obj[key]
    if not isinstance(val, typ) or isinstance(val, bool):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise DataError(f"{path}: {where + '.' if where else ''}{key}: expected {names}, got {type(val).__name__}")
    return val


def read_squad_json(path, check_spans: bool = False, unique_ids: bool = True) -> list[dict]:
    """Flatten SQuAD v1.1 JSON (``data[].paragraphs[].qas[]``) to one dict per question.

    Records: ``{"id", "title", "context", "question", "answers": {"text": [...], "answer_start": [...]}}``
    (the Hugging Face ``squad`` layout). ``title`` may be absent (then ""); every other key is
    required and a missing or mistyped one raises DataError naming its key path. ``unique_ids``
    (default) requires unique question ids, because the QA metrics key predictions by id; pass
    False for training files that do not have them (the TyDiQA-GoldP ``train-en`` copy reuses
    ids such as ``'0'``). ``check_spans`` also checks that each ``answer_start`` points at its
    answer text in the context.
    """
    path = _existing(path)
    root = _load_json(path)
    data = _get(root, "data", list, "", path)
    out: list[dict] = []
    seen: dict[str, str] = {}
    for a, art in enumerate(data):
        wa = f"data[{a}]"
        paragraphs = _get(art, "paragraphs", list, wa, path)
        title = art.get("title", "") if isinstance(art, dict) else ""
        for p, par in enumerate(paragraphs):
            wp = f"{wa}.paragraphs[{p}]"
            context = _get(par, "context", str, wp, path)
            for q, qa in enumerate(_get(par, "qas", list, wp, path)):
                wq = f"{wp}.qas[{q}]"
                qid = _get(qa, "id", str, wq, path)
                question = _get(qa, "question", str, wq, path)
                texts, starts = [], []
                for n, ans in enumerate(_get(qa, "answers", list, wq, path)):
                    wn = f"{wq}.answers[{n}]"
                    text = _get(ans, "text", str, wn, path)
                    start = _get(ans, "answer_start", int, wn, path)
                    if check_spans and context[start:start + len(text)] != text:
                        raise DataError(f"{path}: {wn}: answer_start {start} does not point at {text!r} in the context")
                    texts.append(text)
                    starts.append(start)
                if unique_ids and qid in seen:
                    raise DataError(f"{path}: {wq}.id: duplicate question id {qid!r} (first at {seen[qid]}); "
                                    "pass unique_ids=False if the ids are not used")
                seen[qid] = wq
                out.append({"id": qid, "title": title, "context": context, "question": question,
                            "answers": {"text": texts, "answer_start": starts}})
    return out


def read_jsonl(path, required: tuple[str, ...] = ()) -> list[dict]:
    """Read JSON Lines (one object per line; CRLF endings and blank lines tolerated).

    A line that is not a JSON object or lacks one of the ``required`` keys raises DataError
    with the file and line number.
    """
    path = _existing(path)
    out: list[dict] = []
    for i, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {i}: invalid JSON at column {e.colno}: {e.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}, line {i}: expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in required if k not in obj]
        if missing:
            raise DataError(f"{path}, line {i}: missing required key(s) {missing}; expected keys {list(required)}")
        out.append(obj)
    return out
