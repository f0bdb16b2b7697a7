"""RS-DA: randomized smoothing with synonym-substitution data augmentation."""
from __future__ import annotations

import json
import string
from functools import lru_cache
from pathlib import Path

import numpy as np

from xltlib.training.objectives.base import HParam, Objective, integer, register

__all__ = ["RSDA", "LOOKUPS", "REFERENCE_SCHEDULE", "load_synonym_table", "substitute_synonyms"]

DEFAULT_TABLE = "synonyms/counterfitted_neighbors.json"  # relative to data_dir
# characters stripped from both ends of a token before the table lookup (and put back after)
_EDGE = string.punctuation + "“”‘’«»„…–—¡¿\u00a0\t\n\r\f\v"


LOOKUPS = ("exact", "normalized")
# copies: 'reference' -> (copies, epochs) of Robust-XLT @ 175cddb: README.md lines 23-24 (perturb.py --num 10
# for PAWS-X, --num 3 for XNLI) and scripts/train_pawsx.sh / train_xnli.sh line 27 (EPOCH=3 / EPOCH=1)
REFERENCE_SCHEDULE = {"pawsx": (10, 3.0), "xnli": (3, 1.0)}


@lru_cache(maxsize=8)
def load_synonym_table(path: str, lookup: str = "normalized") -> dict[str, tuple[str, ...]]:
    """Load a JSON object ``word -> [neighbour, ...]`` (cached per path and lookup).

    ``lookup='exact'``: keys as in the file (perturb.py's rule is a case-sensitive dict lookup).
    ``'normalized'``: keys lowercased (entries that collide are merged). Words with no neighbours
    are dropped; a word's own entry and duplicates are removed from its neighbours (so a word
    with k neighbours keeps itself with probability exactly 1/(k+1); the shipped table has no
    self-entries, so this is perturb.py's ``[word] + neighbors[word]`` draw). Raises ValueError
    naming the file on any format problem.
    """
    if lookup not in LOOKUPS:
        raise ValueError(f"synonym lookup {lookup!r}: expected one of {', '.join(LOOKUPS)}")
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
        key = word.lower() if lookup == "normalized" else word
        same = (lambda n: n.lower() == key) if lookup == "normalized" else (lambda n: n == key)
        merged = dict.fromkeys(table.get(key, ()) + tuple(n for n in neigh if not same(n)))
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


def substitute_synonyms(texts: list[str], table: dict[str, tuple[str, ...]], rng: np.random.Generator,
                        lookup: str = "normalized", stats: dict | None = None) -> list[str]:
    """Replace each space-separated token found in ``table`` by a uniform draw from [token] + neighbours.

    ``lookup='exact'`` (Robust-XLT perturb.py @ 175cddb, lines 18-41): a token is a site only if it is a
    key of the table exactly as written (case-sensitive, punctuation attached), and the draw replaces it
    verbatim. ``'normalized'``: lookup on the lowercased token, then (if absent) on the token with
    leading/trailing punctuation stripped; the stripped punctuation is kept around the substitute and the
    substitute takes the token's capitalisation (UPPER / Title) -- more sites, but proper nouns get
    replaced ("China" is looked up as "china"). Drawing the token itself leaves it unchanged. Tokens are
    split on single spaces (as in perturb.py), so all other characters, including whitespace runs, are
    preserved. One ``rng.random`` call per list of texts. ``stats`` (a dict) is incremented with
    ``tokens``, ``sites`` (tokens with neighbours) and ``changed`` (tokens replaced by another word).
    """
    if lookup not in LOOKUPS:
        raise ValueError(f"synonym lookup {lookup!r}: expected one of {', '.join(LOOKUPS)}")
    split = [t.split(" ") for t in texts]
    sites = []  # (text index, token index, core, prefix, suffix, options)
    for i, toks in enumerate(split):
        for j, tok in enumerate(toks):
            if lookup == "exact":
                opts = table.get(tok)
                if opts is not None:
                    sites.append((i, j, None, "", "", opts))
                continue
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
    if stats is not None:
        stats["texts"] = stats.get("texts", 0) + len(texts)
        stats["tokens"] = stats.get("tokens", 0) + sum(len(t) for t in split)
        stats["sites"] = stats.get("sites", 0) + len(sites)
    if not sites:
        return list(texts)
    counts = np.fromiter((len(s[5]) + 1 for s in sites), dtype=np.int64, count=len(sites))
    picks = (rng.random(len(sites)) * counts).astype(np.int64)
    changed = set()
    n_changed = 0
    for (i, j, core, pre, suf, opts), k in zip(sites, picks.tolist()):
        if k:
            new = opts[k - 1] if core is None else pre + _recase(opts[k - 1], core) + suf
            n_changed += new != split[i][j]
            split[i][j] = new
            changed.add(i)
    if stats is not None:
        stats["changed"] = stats.get("changed", 0) + n_changed
    return [" ".join(split[i]) if i in changed else t for i, t in enumerate(texts)]


def _check_languages(v) -> bool:
    return v == "en" or (isinstance(v, (list, tuple)) and len(v) > 0 and all(x == "en" for x in v))


def _check_copies(v) -> bool:
    return v in ("fresh", "reference") or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


@register("rs_da")
class RSDA(Objective):
    """Randomized smoothing with data augmentation (Huang et al., 2021, EMNLP "RS-DA"; SAFER,
    Ye et al., 2020, ACL).

    ``transform_texts`` substitutes every word that has neighbours in the synonym table by a
    uniform draw from [word] + neighbours (probability k/(k+1) of changing a word with k
    neighbours). The loss is plain cross-entropy on the substituted text.

    ``lookup``: ``exact`` (default; the rule of Robust-XLT's perturb.py, exact case-sensitive
    space tokens) or ``normalized`` (lower-cased, punctuation-stripped lookup, re-cased substitute;
    more sites, proper nouns included). See :func:`substitute_synonyms`.

    ``copies``: the training schedule. ``fresh`` (default, compute-matched with the other methods):
    one new substituted view of every example per epoch, drawn with the caller's rng. An integer n:
    n substituted copies of every example built once and reused every epoch (perturb.py ``--num n``:
    the training set is n times larger). ``reference``: Robust-XLT's schedule for the task, copies and
    epochs both (PAWS-X 10 copies x 3 epochs, XNLI 3 x 1; ``REFERENCE_SCHEDULE``); other tasks are an
    error. The measured substitution rate (``pop_text_stats``) is logged per epoch by train_model.

    ``synonyms``: JSON word -> neighbours; default ``<data_dir>/synonyms/counterfitted_neighbors.json``
    (the counter-fitted-vector neighbour table of SAFER / Robust-XLT). ``languages``: only
    ``"en"`` (the only table available; training data is English). ``test_time_votes``: only 0;
    voting over substitutions is impossible in ``predict_logits`` (it receives token ids).
    """

    HPARAMS = {
        "synonyms": HParam(None, "a path to a JSON synonym table, or null for "
                                 f"<data_dir>/{DEFAULT_TABLE}",
                           lambda v: v is None or (isinstance(v, (str, Path)) and str(v) != "")),
        "lookup": HParam("exact", "one of " + " | ".join(repr(x) for x in LOOKUPS), lambda v: v in LOOKUPS),
        "copies": HParam("fresh", "'fresh', 'reference' or an integer >= 1", _check_copies),
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
            self.table = load_synonym_table(self.table_path, self.lookup)
        except ValueError as e:
            raise self.hparam_error("synonyms", self.synonyms, f"a readable synonym table: {e}") from e
        self._counts: dict[str, int] = {}

    def transform_texts(self, texts, rng):
        return substitute_synonyms(texts, self.table, rng, self.lookup, self._counts)

    def pop_text_stats(self) -> dict[str, float]:
        """``subst_site_rate`` (tokens with neighbours / tokens) and ``subst_rate`` (tokens replaced /
        tokens) over the texts transformed since the last call; then the counters restart."""
        c, self._counts = self._counts, {}
        tokens = c.get("tokens", 0)
        if not tokens:
            return {}
        return {"subst_site_rate": c["sites"] / tokens, "subst_rate": c.get("changed", 0) / tokens}

    def train_copies(self, task_name):
        if self.copies == "fresh":
            return None
        if self.copies == "reference":
            if task_name not in REFERENCE_SCHEDULE:
                raise self.hparam_error("copies", "reference", "'fresh' or an integer >= 1 for task "
                                        f"{task_name!r} ('reference' is defined for "
                                        f"{', '.join(REFERENCE_SCHEDULE)} only)")
            return REFERENCE_SCHEDULE[task_name]
        return self.copies, None
