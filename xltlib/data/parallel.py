"""Parallel data for alignment, registered by name: xx sentences (or words) and their English translations.

None of these rows scores transfer:

* ``tatoeba``: LASER's line-aligned Tatoeba test set (each language has its own English side).
* ``xnli``: premises of the XNLI *training* split of the run (never evaluated; only their English side was
  seen in fine-tuning). Needs ``xnli`` in the grid.
* ``pud``: the 1,000 Parallel Universal Dependencies sentences (``# text``), aligned by ``sent_id``.
* ``muse``: MUSE dictionary word pairs, each word encoded *in isolation* (mean over its sub-words and the
  <s> </s> tokens); pairs whose two words are spelled identically are skipped (they align through shared
  tokens, not through the model), as are repeated English or foreign words, in dictionary order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from xltlib.core.registry import Registry
from xltlib.data import tasks as T

Pairs = dict[str, tuple[list[str], list[str]]]


@dataclass(frozen=True)
class ParallelSource:
    name: str
    languages: tuple[str, ...]
    read: Callable[..., Pairs]  # (data_dir, languages, max_items, **context) -> {lang: (xx, en)}
    options: dict | None = None  # metric options this source needs (e.g. centering for isolated words)


PARALLEL: Registry[ParallelSource] = Registry("parallel data")


def register(source: ParallelSource) -> ParallelSource:
    PARALLEL.add(source.name, source)
    return source


def _check(name: str, languages: list[str]) -> None:
    have = PARALLEL[name].languages
    bad = [lang for lang in languages if lang not in have]
    if bad:
        raise ValueError(f"parallel data '{name}' has no language(s) {bad}; it has: {', '.join(have)}")


def read_tatoeba(data_dir, languages, max_items, **_) -> Pairs:
    out = {}
    for lang in languages:
        recs = T.load_records("tatoeba", lang, data_dir)[:max_items]
        out[lang] = ([r["text_a"] for r in recs], [r["text_b"] for r in recs])
    return out


def read_xnli_train_premises(data_dir, languages, max_items, *, xnli_train_ids=None, **_) -> Pairs:
    if xnli_train_ids is None:
        raise ValueError("alignment.datasets has 'xnli' but grid.task lacks xnli (its training split supplies the rows)")
    ids = sorted({i - i % 3 for i in xnli_train_ids})[:max_items]
    en = T.load_records("xnli", "en", data_dir)
    out = {}
    for lang in languages:
        xx = T.load_records("xnli", lang, data_dir)
        out[lang] = ([xx[i]["text_a"] for i in ids], [en[i]["text_a"] for i in ids])
    return out


def read_conllu_texts(path: Path) -> dict[str, str]:
    """sent_id -> ``# text`` of a CoNLL-U file."""
    if not path.is_file():
        raise T.DataError(f"missing data file {path}; expected the layout udpos-pud/{{lang}}.conllu")
    out, sid = {}, None
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line.startswith("# sent_id"):
            sid = line.split("=", 1)[1].strip()
        elif line.startswith("# text ") or line.startswith("# text="):
            if sid is None:
                raise T.DataError(f"{path}, line {i}: '# text' before any '# sent_id'")
            out[sid] = line.split("=", 1)[1].strip()
    return out


def read_pud(data_dir, languages, max_items, **_) -> Pairs:
    base = Path(data_dir) / "udpos-pud"
    en = read_conllu_texts(base / "en.conllu")
    out = {}
    for lang in languages:
        xx = read_conllu_texts(base / f"{lang}.conllu")
        ids = [sid for sid in en if sid in xx][:max_items]  # align by sent_id (Icelandic is reordered)
        out[lang] = ([xx[s] for s in ids], [en[s] for s in ids])
    return out


def read_muse(data_dir, languages, max_items, **_) -> Pairs:
    out = {}
    for lang in languages:
        path = Path(data_dir) / "dictionaries" / "muse" / f"en-{lang}.txt"
        if not path.is_file():
            raise T.DataError(f"missing data file {path}; expected dictionaries/muse/en-{{lang}}.txt ('en_word xx_word' lines)")
        xs, ens, seen_x, seen_en = [], [], set(), set()
        for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise T.DataError(f"{path}, line {i}: expected 'en_word xx_word', got {line!r}")
            e, x = parts
            if e == x or e in seen_en or x in seen_x:
                continue
            seen_en.add(e)
            seen_x.add(x)
            xs.append(x)
            ens.append(e)
            if len(xs) >= max_items:
                break
        out[lang] = (xs, ens)
    return out


PUD_LANGS = ("ar", "cs", "de", "es", "fi", "fr", "gl", "hi", "id", "is", "it", "ko", "pl", "pt", "ru", "sv", "th", "tr", "zh")
MUSE_LANGS = ("af", "ar", "bg", "bn", "de", "el", "es", "et", "fa", "fi", "fr", "he", "hi", "hu", "id", "it", "ja",
              "ko", "lt", "ms", "nl", "pl", "pt", "ro", "ru", "ta", "th", "tl", "tr", "uk", "vi", "zh")
register(ParallelSource("tatoeba", T.TASKS["tatoeba"].languages, read_tatoeba))
register(ParallelSource("xnli", tuple(lang for lang in T.TASKS["xnli"].languages if lang != "en"), read_xnli_train_premises))
register(ParallelSource("pud", PUD_LANGS, read_pud))
register(ParallelSource("muse", MUSE_LANGS, read_muse, options={"retrieval": {"center": True}}))


def load_parallel(name: str, data_dir, languages: list[str], max_items: int | None, **context) -> Pairs:
    """The pairs of one source for the languages it has (others are skipped: not every source has every language)."""
    PARALLEL.get(name)  # unknown name: one error listing the registered ones
    if data_dir is None:
        raise ValueError(f"parallel data '{name}' is read from an XTREME-layout folder; set data_dir or XLT_DATA_DIR")
    langs = [lang for lang in languages if lang in PARALLEL[name].languages]
    if not langs:
        return {}
    return PARALLEL[name].read(data_dir, langs, max_items or 10**9, **context)
