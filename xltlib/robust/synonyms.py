"""RS-DA: randomized smoothing with synonym-substitution data augmentation."""
from __future__ import annotations

import json
import string
from functools import lru_cache
from pathlib import Path

import numpy as np

from .base import HParam, Objective, integer, register

__all__ = ["RSDA", "load_synonym_table", "substitute_synonyms"]

DEFAULT_TABLE = "synonyms/counterfitted_neighbors.json"  # relative to data_dir
# characters stripped from both ends of a token before the table lookup (and put back after)
_EDGE = string.punctuation + "“”‘’«»„…–—¡¿\u00a0\t\n\r\f\v"


@lru_cache(maxsize=8)
def load_synonym_table(path: str) -> dict[str, tuple[str, ...]]:
    """Load a JSON object ``word -> [neighbour, ...]`` (cached per path).

    Keys are lowercased; words with no neighbours are dropped; a word's own entry and
    duplicates are removed from its neighbours (so a word with k neighbours keeps itself with
    probability exactly 1/(k+1)). Raises ValueError naming the file on any format problem.
    """
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise ValueError(f"synonym table {path}: cannot be read ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"synonym table {path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"synonym table {path}: expected a JSON object word -> list of words, "
                         f"got {type(raw).__name__}")
    table: dict[str, tuple[str, ...]] = {}
    for word, neigh in raw.items():
        if not isinstance(neigh, list) or not all(isinstance(w, str) for w in neigh):
            raise ValueError(f"synonym table {path}: entry {word!r} = {neigh!r} is not a list of strings")
        key = word.lower()
        merged = dict.fromkeys(table.get(key, ()) + tuple(n for n in neigh if n.lower() != key))
        if merged:
            table[key] = tuple(merged)
    return table


def _recase(word: str, like: str) -> str:
    """Give ``word`` the capitalisation pattern of ``like`` (UPPER, Title, or as-is)."""
    if len(like) > 1 and like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def substitute_synonyms(texts: list[str], table: dict[str, tuple[str, ...]],
                        rng: np.random.Generator) -> list[str]:
    """Replace each space-separated token found in ``table`` by a uniform draw from [token] + neighbours.

    Lookup is on the lowercased token, then (if absent) on the token with leading/trailing
    punctuation stripped; the stripped punctuation is kept around the substitute and the
    substitute takes the token's capitalisation (UPPER / Title). Drawing the token itself
    leaves it unchanged. Tokens are split on single spaces (as in Robust-XLT's perturb.py), so
    all other characters, including whitespace runs, are preserved. One ``rng.random`` call
    per list of texts.
    """
    split = [t.split(" ") for t in texts]
    sites = []  # (text index, token index, core, prefix, suffix, options)
    for i, toks in enumerate(split):
        for j, tok in enumerate(toks):
            opts = table.get(tok.lower())
            if opts is not None:
                sites.append((i, j, tok, "", "", opts))
                continue
            core = tok.strip(_EDGE)
            if core and core != tok:
                opts = table.get(core.lower())
                if opts is not None:
                    start = tok.find(core)
                    sites.append((i, j, core, tok[:start], tok[start + len(core):], opts))
    if not sites:
        return list(texts)
    counts = np.fromiter((len(s[5]) + 1 for s in sites), dtype=np.int64, count=len(sites))
    picks = (rng.random(len(sites)) * counts).astype(np.int64)
    changed = set()
    for (i, j, core, pre, suf, opts), k in zip(sites, picks.tolist()):
        if k:
            split[i][j] = pre + _recase(opts[k - 1], core) + suf
            changed.add(i)
    return [" ".join(split[i]) if i in changed else t for i, t in enumerate(texts)]


def _check_languages(v) -> bool:
    return v == "en" or (isinstance(v, (list, tuple)) and len(v) > 0 and all(x == "en" for x in v))


@register("rs_da")
class RSDA(Objective):
    """Randomized smoothing with data augmentation (Huang et al., 2021, EMNLP "RS-DA"; SAFER,
    Ye et al., 2020, ACL).

    ``transform_texts`` substitutes every word that has neighbours in the synonym table by a
    uniform draw from [word] + neighbours (probability k/(k+1) of changing a word with k
    neighbours), freshly each epoch with the caller's rng: in expectation the same as the
    pre-built augmented copies of Robust-XLT's perturb.py (10 for PAWS-X, 3 for XNLI), without
    storing them. The loss is plain cross-entropy on the substituted text.

    ``synonyms``: JSON word -> neighbours; default ``<data_dir>/synonyms/counterfitted_neighbors.json``
    (the counter-fitted-vector neighbour table of SAFER / Robust-XLT). ``languages``: only
    ``"en"`` (the only table available; training data is English). ``test_time_votes``: only 0;
    voting over substitutions is impossible in ``predict_logits`` (it receives token ids).
    """

    HPARAMS = {
        "synonyms": HParam(None, "a path to a JSON synonym table, or null for "
                                 f"<data_dir>/{DEFAULT_TABLE}",
                           lambda v: v is None or (isinstance(v, (str, Path)) and str(v) != "")),
        "languages": HParam("en", "'en' or ['en'] (only an English synonym table is available)",
                            _check_languages, lambda v: "en" if isinstance(v, str) else list(v)),
        "test_time_votes": HParam(0, "0 (test-time votes over synonym substitutions are not "
                                     "possible on token ids; use rs_rp for noise votes)",
                                  lambda v: v == 0 and integer(0, 0).check(v), int),
    }

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.synonyms is None:
            if self.data_dir is None:
                raise self.hparam_error("synonyms", None, "a path to a JSON synonym table "
                                        "(no data_dir given to resolve the default)")
            path = self.data_dir / DEFAULT_TABLE
        else:
            path = Path(self.synonyms).expanduser()
        self.table_path = str(path.resolve())
        try:
            self.table = load_synonym_table(self.table_path)
        except ValueError as e:
            raise self.hparam_error("synonyms", self.synonyms, f"a readable synonym table: {e}") from e

    def transform_texts(self, texts, rng):
        return substitute_synonyms(texts, self.table, rng)
