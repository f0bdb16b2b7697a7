"""Step 3 of the analysis: each fine-tuned checkpoint's alignment beside its task score, one point per
(checkpoint, task, language, alignment metric, layer), and the seed-mean change of both against the baseline.

Inputs are the tidy long frames of the project (columns ``checkpoint, model, task, method, seed, language,
language2, layer, metric, value, n`` and, for alignment, ``dataset``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import pandas as pd

from xltlib.analysis.gate import Gate
from xltlib.analysis.score import SOURCE, score_name, score_rows
from xltlib.data.languages import to_iso1

PRETRAINED_PREFIX = "pretrained:"


def norm_languages(s: pd.Series) -> pd.Series:
    """Apply :func:`to_iso1` to a column; unknown codes are lower-cased and
    kept (with one warning listing them)."""
    mapping, unknown = {}, []
    for c in pd.unique(s.dropna()):
        try:
            mapping[c] = to_iso1(c)
        except ValueError:
            mapping[c] = str(c).strip().lower()
            unknown.append(str(c))
    if unknown:
        warnings.warn(f"language codes not in languages table kept as-is: {sorted(unknown)}",
                      stacklevel=3)
    return s.map(mapping)


def merge_alignment_transfer(alignment: pd.DataFrame, transfer: pd.DataFrame) -> pd.DataFrame:
    """Join per-language alignment of each fine-tuned checkpoint with its task score.

    One row per (checkpoint, task, language, metric, layer) with ``alignment``, ``score`` (the task score,
    :func:`~xltlib.analysis.score.score_rows`), ``score_metric`` (what that score is, e.g. "accuracy" or "f1"),
    ``score_en`` (the checkpoint's English score) and ``transfer_gap`` (= ``score_en`` minus ``score``).
    ``metric`` is the alignment metric. Pre-trained rows and the source language (English) are excluded;
    duplicates are averaged. If the alignment rows come from more than one ``dataset``, ``metric`` is prefixed
    with ``"<dataset>/"`` so groups stay distinct.
    """
    tr = score_rows(transfer).copy()
    if tr.empty:
        raise ValueError("no standard-setting 'score' transfer rows")
    tr["language"] = norm_languages(tr["language"])
    meta_cols = [c for c in ("model", "method", "seed") if c in tr]
    meta = tr.groupby("checkpoint", sort=False)[meta_cols].first()
    acc = (tr.groupby(["checkpoint", "task", "language"], as_index=False)
             .agg(score=("value", "mean"),
                  n_eval=("n", "sum") if "n" in tr else ("value", "size")))
    acc["score_metric"] = acc["task"].map({t: score_name(t) for t in acc["task"].unique()})
    en = (acc[acc["language"] == SOURCE]
          .rename(columns={"score": "score_en"})[["checkpoint", "task", "score_en"]])
    acc = acc[acc["language"] != SOURCE].merge(en, on=["checkpoint", "task"], how="left")
    acc["transfer_gap"] = acc["score_en"] - acc["score"]

    al = alignment.copy()
    al = al[~al["checkpoint"].astype(str).str.startswith(PRETRAINED_PREFIX)]
    if "method" in al:
        al = al[al["method"] != "pretrained"]
    al["language"] = norm_languages(al["language"])
    al = al[al["language"] != SOURCE]
    if "dataset" in al and al["dataset"].nunique(dropna=True) > 1:
        al["metric"] = al["dataset"].astype(str) + "/" + al["metric"].astype(str)
    agg = dict(alignment=("value", "mean"))
    if "n" in al:
        agg["n_align"] = ("n", "max")  # the pool the alignment was measured on
    al = al.groupby(["checkpoint", "language", "metric", "layer"], as_index=False).agg(**agg)

    out = al.merge(acc, on=["checkpoint", "language"], how="inner")
    out = out.merge(meta.reset_index(), on="checkpoint", how="left")
    missing = set(al["checkpoint"]) - set(acc["checkpoint"])
    if missing:
        warnings.warn(f"{len(missing)} alignment checkpoint(s) without transfer rows dropped",
                      stacklevel=2)
    cols = ["checkpoint", "model", "task", "method", "seed", "language", "metric", "layer",
            "alignment", "n_align", "score", "score_metric", "score_en", "transfer_gap", "n_eval"]
    out = out[[c for c in cols if c in out]]
    return out.sort_values(["task", "metric", "layer", "checkpoint", "language"],
                           ignore_index=True)


def delta_table(merged: pd.DataFrame, *, baseline: str = "baseline") -> pd.DataFrame:
    """Seed-averaged change vs. the baseline per (task, language, metric, layer,
    method != baseline): ``delta_alignment`` and ``delta_score`` (method
    minus baseline), plus the two seed means and seed counts."""
    keys = [c for c in ("model", "task", "language", "metric", "layer") if c in merged]
    agg = {"alignment": ("alignment", "mean"), "score": ("score", "mean"),
           "n_seeds": ("seed", "nunique") if "seed" in merged else ("alignment", "size")}
    if "transfer_gap" in merged:
        agg["gap"] = ("transfer_gap", "mean")
    m = merged.groupby(keys + ["method"], as_index=False, dropna=False).agg(**agg)
    if baseline not in set(m["method"]):
        raise ValueError(f"no rows with method == {baseline!r}")
    base = m[m["method"] == baseline].drop(columns="method")
    other = m[m["method"] != baseline]
    d = other.merge(base, on=keys, suffixes=("_method", "_baseline"), how="inner")
    d["delta_alignment"] = d["alignment_method"] - d["alignment_baseline"]
    d["delta_score"] = d["score_method"] - d["score_baseline"]
    if "gap_method" in d:
        d["delta_transfer_gap"] = d["gap_method"] - d["gap_baseline"]
        d = d.drop(columns=["gap_method", "gap_baseline"])
    first = keys + ["method", "delta_alignment", "delta_score"]
    return d[first + [c for c in d.columns if c not in first]].reset_index(drop=True)


def alignment_pools(alignment: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and language: the pool the pair metrics used (n) and the pairs available."""
    a = alignment[alignment["language"] != "all"] if "language" in alignment else alignment
    if a.empty or "n" not in a:
        return pd.DataFrame()
    cols = {"n": ("n", "max")}
    if "n_available" in a:
        cols["n_available"] = ("n_available", "max")
    keys = [k for k in ("dataset", "language") if k in a]
    return a.groupby(keys, as_index=False).agg(**cols)


def uneven_pools(pools: pd.DataFrame) -> list[str]:
    """A note when a dataset's pools differ across languages (its retrieval scores are then not comparable)."""
    if not len(pools) or "dataset" not in pools:
        return []
    uneven = [d for d, g in pools.groupby("dataset") if g["n"].nunique() > 1]
    if not uneven:
        return []
    return [f"Alignment pools differ across languages in {', '.join(uneven)} (rows computed before common pools, "
            "or alignment.pool = full): retrieval scores are not comparable across languages; re-run the alignment "
            "stage."]


@dataclass
class Points:
    """What step 3 hands on: the alignment x score points, and the alignment pools they were measured on."""

    merged: pd.DataFrame = field(default_factory=pd.DataFrame)  # every point; ``gate_ok``: its checkpoint passes
    analysed: pd.DataFrame = field(default_factory=pd.DataFrame)  # the points that pass the gate
    pools: pd.DataFrame = field(default_factory=pd.DataFrame)  # alignment pool size per dataset and language
    relatable: bool = False  # both alignment and transfer rows exist (else RQ1 and RQ2 have nothing to relate)
    notes: list[str] = field(default_factory=list)


def merge_points(alignment: pd.DataFrame, transfer: pd.DataFrame, gate: Gate) -> Points:
    """Step 3: merge alignment with the task score (:func:`merge_alignment_transfer`) and mark the points whose
    checkpoint fails the gate; RQ1 and RQ2 use the others."""
    if transfer.empty or alignment.empty:
        return Points(notes=["No transfer or no alignment rows: nothing to relate."])
    pools = alignment_pools(alignment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = merge_alignment_transfer(alignment, transfer)
    ok = pd.Series([(t, c) not in gate.failed for t, c in zip(merged["task"], merged["checkpoint"])],
                   index=merged.index, dtype=bool)  # bool even when empty (an empty object Series selects columns)
    return Points(merged=merged.assign(gate_ok=ok), analysed=merged[ok].reset_index(drop=True), pools=pools,
                  relatable=True, notes=uneven_pools(pools))
