"""The recipe search's verdicts: per training setting of every method, did it learn on the English selection rows,
and which setting each (task, method) keeps (``params: search``; ``xlt recipes RUN``).

Every method gets the same search (the settings of ``search`` crossed with the task's epoch budget, the best epoch
kept by checkpoint selection), and every verdict is decided on English *selection* rows, never on test: a setting
*learns* at a seed when the selected epoch's score clears the selection rows' majority rate by its Wilson CI (the
gate's rule, :func:`xltlib.analysis.gate.selection_verdict`, at the level corrected for choosing among epochs; an
entity tagger's span F1 must beat the memorized-entity F1, :func:`xltlib.analysis.gate.span_verdict`).
The chosen setting of a (task, method) is the best mean selection score among the settings that learned at every
seed tried; a method with no such setting is a finding, reported as "cannot learn at any setting of the search".
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
import yaml

from xltlib.analysis.gate import SelectionRows, selection_verdict, train_verdicts

RECIPE_COLS = ["task", "method", "setting", "seed", "checkpoint", "key", "select_score", "ci_lo", "ci_hi", "majority", "n",
               "selected_epoch", "epochs_scored", "learned", "plateau", "updates", "train_seconds", "precision"]
# added after the ledger's first rows: an older ledger's rows read "" (not recorded) in it
LATER_COLS = {"precision": ""}
CHOICE_COLS = ["task", "method", "chosen", "select_score", "seeds", "settings_learned", "settings_tried", "finding"]
NO_RECIPE = "cannot learn at any setting of the search"


def recipe_table(train: pd.DataFrame, selection: dict[str, SelectionRows],
                 split_entry: Callable[[str], tuple[str, dict]], *, level: float = 0.95) -> pd.DataFrame:
    """One row per checkpoint of a search run: its method and setting (``split_entry``: 'pgd@lr=2e-05' ->
    ('pgd', {'lr': 2e-05}), :meth:`RunConfig.split_entry`), the selected epoch's English selection score with its
    CI against the selection rows' majority rate (an entity tagger's: its span F1 against the memorized-entity F1;
    ``majority`` is NaN), whether it learned, the plateau check's verdict, its cost and the precision it trained in
    (bf16 weights with fp32 masters where the machine has bf16, else fp32: a search that spans machines says so)."""
    if train is None or not len(train):
        return pd.DataFrame(columns=RECIPE_COLS)
    log = train[train["metric"] == "train_loss"] if "metric" in train else train
    verdicts = train_verdicts(train)
    rows = []
    for ck, g in log.groupby("checkpoint", sort=False):
        first = g.iloc[0]
        method, setting = split_entry(str(first["method"]))
        judged = selection_verdict(dict(task=first["task"], checkpoint=ck), selection.get(first["task"]),
                                   verdicts.loc[ck], level)
        selected = g["selected_epoch"].dropna() if "selected_epoch" in g else pd.Series(dtype=float)
        rows.append(dict(task=first["task"], method=method, setting=setting_text(setting), seed=int(first["seed"]),
                         checkpoint=ck, key=str(first["key"]) if "key" in g else "",
                         select_score=judged["english"], ci_lo=judged["ci_lo"], ci_hi=judged["ci_hi"],
                         majority=judged["majority"], n=judged["n"],
                         selected_epoch=int(selected.iloc[0]) + 1 if len(selected) else math.nan,
                         epochs_scored=int(verdicts.loc[ck, "epochs_scored"]), learned=judged["passes"],
                         plateau=verdicts.loc[ck, "plateau"], updates=int(g["n"].max()),
                         train_seconds=float(g["elapsed_s"].max()) if "elapsed_s" in g else math.nan,
                         precision=verdicts.loc[ck, "precision"]))
    return pd.DataFrame(rows, columns=RECIPE_COLS)


def merge_ledger(ledger: pd.DataFrame | None, table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The search's ledger (its per-checkpoint table kept in a CSV file) with a run's table merged in, and the
    checkpoints whose ledger row the run replaced with another training key (its settings or code changed).

    A 30-cell search takes more core-hours than one session keeps a run folder: each session runs some cells and
    merges them into the ledger, so the verdicts of earlier sessions (and machines) are kept, one row per
    checkpoint, the run's row winning, sorted by cell (a merge adds lines to the file's diff, never moves them)."""
    if ledger is None or not len(ledger):
        return _by_cell(table), []
    ledger = ledger.assign(**{c: v for c, v in LATER_COLS.items() if c not in ledger})
    missing = [c for c in RECIPE_COLS if c not in ledger]
    if missing:
        raise ValueError(f"recipe ledger lacks the columns {missing}: expected the columns of `xlt recipes --csv` "
                         f"({', '.join(RECIPE_COLS)})")
    old = ledger.set_index("checkpoint")
    replaced = [ck for ck, key in zip(table["checkpoint"], table["key"])
                if ck in old.index and str(old.loc[ck, "key"]) != str(key)]
    kept = ledger[~ledger["checkpoint"].isin(table["checkpoint"])]
    return _by_cell(pd.concat([kept, table], ignore_index=True)), replaced


def _by_cell(table: pd.DataFrame) -> pd.DataFrame:
    return table[RECIPE_COLS].sort_values(["task", "method", "setting", "seed"], ignore_index=True)


def setting_text(setting: dict) -> str:
    """'lr=2e-05' (the searched values of one setting), or 'as configured' for a cell outside a search."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in setting.items()) or "as configured"


def choose_recipes(table: pd.DataFrame, settings_order: list[str] | None = None) -> pd.DataFrame:
    """Per (task, method): the setting with the best mean selection score among those that learned at every seed
    (a tie goes to the earlier setting of ``settings_order``, the search's order), or the finding that none did
    (only once every setting of ``settings_order`` was tried; before, "no setting learned so far")."""
    rows = []
    for (task, method), g in table.groupby(["task", "method"], sort=False):
        order = settings_order or list(dict.fromkeys(g["setting"]))
        per = g.groupby("setting").agg(score=("select_score", "mean"), seeds=("seed", "nunique"),
                                       learned=("learned", "all"))
        per = per.reindex([s for s in order if s in per.index])
        ok = per[per["learned"]]
        row = dict(task=task, method=method, settings_learned=int(len(ok)), settings_tried=int(len(per)))
        if len(ok):
            best = ok.index[int(np.argmax(ok["score"].to_numpy()))]  # argmax: the first of equal scores
            row.update(chosen=best, select_score=float(ok.loc[best, "score"]), seeds=int(ok.loc[best, "seeds"]),
                       finding="")
        elif settings_order and len(per) < len(settings_order):  # the search is not finished: no finding yet
            row.update(chosen="", select_score=float(per["score"].max()), seeds=int(per["seeds"].max()),
                       finding=f"no setting learned so far ({len(per)} of {len(settings_order)} settings tried)")
        else:
            row.update(chosen="", select_score=float(per["score"].max()), seeds=int(per["seeds"].max()),
                       finding=f"{method} {NO_RECIPE} on {task} ({len(per)} settings tried)")
        rows.append(row)
    return pd.DataFrame(rows, columns=CHOICE_COLS)


def recipe_grid(table: pd.DataFrame, choice: pd.DataFrame, planned: list[tuple[str, str, str]]) -> pd.DataFrame:
    """The search at a glance: a row per (task, method), a column per setting (the plan's order), each cell the mean
    English selection score in % over its seeds; ``**bold**`` the chosen setting once every setting of the row was
    trained, "(not learned)" a setting that did not learn at every seed, "—" one not trained yet; the precisions the
    row trained in. ``planned``: (task, method,
    setting) of every cell of the search, trained or not, in the plan's order."""
    settings = list(dict.fromkeys(s for _, _, s in planned))
    chosen = {(r.task, r.method): r.chosen for r in choice.itertuples()}
    rows = []
    for task, method in dict.fromkeys((t, m) for t, m, _ in planned):
        mine = table[(table["task"] == task) & (table["method"] == method)]
        wanted = pd.Series([s for t, m, s in planned if (t, m) == (task, method)]).value_counts()  # seeds per setting
        complete = all((mine["setting"] == s).sum() >= n for s, n in wanted.items())
        row = {"task": task, "method": method}
        for setting in settings:
            g = mine[mine["setting"] == setting]
            if not len(g):
                row[setting] = "—" if (task, method, setting) in planned else ""
                continue
            text = f"{100 * g['select_score'].mean():.1f}" + (f" ({len(g)} seeds)" if len(g) > 1 else "")
            if complete and chosen.get((task, method)) == setting:
                text = f"**{text}**"
            row[setting] = text if g["learned"].all() else f"{text} (not learned)"
        row["precision"] = precision_text(mine, settings)
        rows.append(row)
    return pd.DataFrame(rows, columns=["task", "method", *settings, "precision"])


def precision_text(cells: pd.DataFrame, settings: list[str]) -> str:
    """The precision a row of the grid trained in: one word when its cells agree, else per setting ("not
    recorded" for a ledger row from before the column)."""
    if not len(cells):
        return ""
    recorded = cells.get("precision", pd.Series("", index=cells.index)).fillna("").astype(str).replace("", "not recorded")
    per = {s: ", ".join(sorted(set(recorded[cells["setting"] == s]))) for s in settings if (cells["setting"] == s).any()}
    return next(iter(per.values())) if len(set(per.values())) == 1 else "; ".join(f"{s}: {v}" for s, v in per.items())


def recipes_yaml(choice: pd.DataFrame, split_entry: Callable[[str], tuple[str, dict]],
                 settings: int | None = None) -> str:
    """The ``recipes:`` block of a params file for the chosen settings (methods without one are left out, and with
    ``settings``, the number of settings of the search, those not tried at all of them yet: a best-so-far is not a
    recipe)."""
    out: dict[str, dict[str, dict]] = {}
    for r in choice.itertuples():
        if r.chosen and (settings is None or r.settings_tried >= settings):
            _, setting = split_entry(f"{r.method}@" + r.chosen.replace(", ", ","))
            out.setdefault(r.task, {})[r.method] = setting
    return yaml.safe_dump({"recipes": out}, sort_keys=False, default_flow_style=None)
