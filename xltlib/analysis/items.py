"""The checkpoint x item table that checkpoints are compared on (:mod:`xltlib.analysis.item_inference`), built from
the transfer rows of one task and setting.

A pair-classification row carries ``per_example``: the 0/1 correctness of each scored test row, in the order they
were scored, and the same rows are scored in every language (XNLI / PAWS-X test rows are translations;
:mod:`xltlib.data.split` scores the same row indices in every language, generalized pairs the same first rows of
both sides, the robustness rows the same first English rows for every checkpoint). So an entry's position is its
item id. A row may instead name its entries' ids in an ``item_ids`` column (e.g. the ``id`` column of its
prediction file, :mod:`xltlib.evaluation.predictions`): then items are matched by id, and an item missing in some
language is left out everywhere (:attr:`ItemTable.n_items` says how many are used of how many scored).

Rows without per-item values (F1, QA and retrieval scores) give a table whose items are the languages (or pairs).
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ITEM_IDS = "item_ids"  # optional row column: the ids of the entries of ``per_example``
PER_EXAMPLE = "per_example"


@dataclass
class ItemTable:
    """Checkpoint x item values (each checkpoint's per-item value averaged over the units it was scored in)."""

    checkpoints: list[str]
    arms: list[str]  # each checkpoint's method
    units: list[str]  # the languages (pairs) averaged over: those scored by every checkpoint
    values: np.ndarray  # [checkpoint, item]
    per_item: bool  # False: no per-item values, the units are the items
    n_items: int = 0  # items used (scored by every checkpoint in every unit)
    n_items_max: int = 0  # the most items one (checkpoint, unit) row scored
    dropped_units: list[str] = field(default_factory=list)  # units some checkpoint did not score


def _has_items(v) -> bool:
    return v is not None and hasattr(v, "__len__") and not isinstance(v, str) and len(v) > 0


def _row_items(row: dict, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """One row's (item ids, per-item values); the ids are positions when the row names none."""
    vals = np.asarray(row[PER_EXAMPLE], dtype=float)
    ids = row.get(ITEM_IDS)
    ids = np.arange(len(vals)) if not _has_items(ids) else np.asarray(ids)
    if len(ids) != len(vals):
        raise ValueError(f"checkpoint '{row['checkpoint']}', {row[unit]}: {len(ids)} item ids for "
                         f"{len(vals)} per-example values")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"checkpoint '{row['checkpoint']}', {row[unit]}: repeated item ids "
                         f"{uniq[counts > 1][:5].tolist()}")
    return ids, vals


def _aligned(ids: np.ndarray, vals: np.ndarray, common: np.ndarray) -> np.ndarray:
    """``vals`` at the ids ``common`` (sorted, all present in ``ids``)."""
    order = np.argsort(ids, kind="stable")
    return vals[order[np.searchsorted(ids[order], common)]]


def _no_shared_items(per_ck: dict[str, set]) -> str:
    """The first pair of checkpoints whose item sets are disjoint, as words ('' when every pair shares items)."""
    for a, b in itertools.combinations(per_ck, 2):
        if not per_ck[a] & per_ck[b]:
            return f"checkpoints '{a}' and '{b}' share no scored items"
    return ""


def item_table(rows: pd.DataFrame, *, unit: str) -> ItemTable:
    """The :class:`ItemTable` of ``rows`` (one task and setting; columns ``checkpoint``, ``method``, ``unit``,
    ``value`` and, for per-item values, ``per_example`` and optionally ``item_ids``).

    Raises ValueError naming the checkpoints when two checkpoints share no scored item, when a checkpoint's
    languages share none, or when per-example arrays differ in length without ids to match them."""
    rows = rows.reset_index(drop=True)
    if "checkpoint" not in rows:
        rows = rows.assign(checkpoint=rows["method"].astype(str) + "/seed " + rows["seed"].astype(str))
    elif "seed" in rows and (rows.groupby("checkpoint")["seed"].nunique() > 1).any():  # one name, several seeds
        rows = rows.assign(checkpoint=rows["checkpoint"].astype(str) + " (seed " + rows["seed"].astype(str) + ")")
    recs = rows.to_dict("records")
    at: dict[tuple, dict] = {}
    for r in recs:
        k = (r["checkpoint"], r[unit])
        if k in at:
            raise ValueError(f"checkpoint '{k[0]}' has more than one row for {k[1]}; expected one per checkpoint "
                             "and language")
        at[k] = r
    checkpoints = sorted({r["checkpoint"] for r in recs})
    arm_of = {r["checkpoint"]: str(r["method"]) for r in recs}
    arms = [arm_of[c] for c in checkpoints]
    units_of = {c: {u for (ck, u) in at if ck == c} for c in checkpoints}
    units = sorted(set.intersection(*units_of.values()))
    dropped = sorted(set.union(*units_of.values()) - set(units))
    if not units:
        raise ValueError(f"no language is scored by every checkpoint ({', '.join(checkpoints)})")
    at = {(c, u): at[(c, u)] for c in checkpoints for u in units}
    per_item = all(_has_items(r.get(PER_EXAMPLE)) for r in at.values())
    if not per_item:
        values = np.array([[float(at[(c, u)]["value"]) for u in units] for c in checkpoints])
        return ItemTable(checkpoints, arms, units, values, per_item=False, n_items=len(units),
                         n_items_max=len(units), dropped_units=dropped)
    items = {k: _row_items(r, unit) for k, r in at.items()}
    named = all(_has_items(r.get(ITEM_IDS)) for r in at.values())
    lengths = {k: len(v) for k, (_, v) in items.items()}
    n_max = max(lengths.values())
    if not named and min(lengths.values()) != n_max:
        (k1, n1), (k2, n2) = min(lengths.items(), key=lambda kv: kv[1]), max(lengths.items(), key=lambda kv: kv[1])
        raise ValueError(f"per-example values of different lengths (checkpoint '{k1[0]}', {k1[1]}: {n1}; checkpoint "
                         f"'{k2[0]}', {k2[1]}: {n2}) and no item ids to match them (an '{ITEM_IDS}' column)")
    if not named:  # positions: the same rows everywhere
        values = np.array([np.mean([items[(c, u)][1] for u in units], axis=0) for c in checkpoints])
        return ItemTable(checkpoints, arms, units, values, per_item=True, n_items=n_max, n_items_max=n_max,
                         dropped_units=dropped)
    per_ck = {c: functools.reduce(np.intersect1d, [items[(c, u)][0] for u in units]) for c in checkpoints}
    common = functools.reduce(np.intersect1d, per_ck.values())
    if not len(common):
        scored = {c: set(np.concatenate([items[(c, u)][0] for u in units]).tolist()) for c in checkpoints}
        pair = _no_shared_items(scored)
        lone = [c for c in checkpoints if not len(per_ck[c])]
        raise ValueError(pair or (f"checkpoint '{lone[0]}': no item is scored in every language ({', '.join(units)})"
                                  if lone else "no item is scored by every checkpoint in every language"))
    values = np.array([np.mean([_aligned(*items[(c, u)], common) for u in units], axis=0) for c in checkpoints])
    return ItemTable(checkpoints, arms, units, values, per_item=True, n_items=len(common), n_items_max=n_max,
                     dropped_units=dropped)
