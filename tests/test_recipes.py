"""The recipe search's verdicts (xltlib.analysis.recipes) on train logs made by the test, and `xlt recipes` on a
smoke search trained in two sessions."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from xltlib.analysis.gate import SelectionRows
from xltlib.analysis.recipes import (NO_RECIPE, RECIPE_COLS, choose_recipes, merge_ledger, recipe_grid, recipe_table,
                                    recipes_yaml, setting_text)
from xltlib.cli import main, replace_top_level_block
from xltlib.config.grid import expand_grid
from xltlib.config.schema import RunConfig
from xltlib.config.validate import load_config
from xltlib.runner.run_dir import Run
from xltlib.training.resume import EpochState, save_epoch_state

SMOKE = Path(__file__).resolve().parents[1] / "params" / "smoke.yaml"
CFG = RunConfig.model_validate({"grid": {"task": ["pawsx"], "method": ["baseline", "pgd"], "seed": [1, 2]},
                                "search": {"lr": [1e-4, 2e-5]}})
SELECTION = {"pawsx": SelectionRows("pawsx", 1000, 0.576, "pawsx English dev")}


def train_log(method: str, seed: int, scores: list[float]) -> pd.DataFrame:
    """Three epochs of 10 steps; the selection score on each epoch's last step; the best epoch selected."""
    best = max(range(len(scores)), key=lambda e: (scores[e], -e))
    rows = []
    for epoch, score in enumerate(scores):
        for step in range(10):
            n = epoch * 10 + step + 1
            rows.append(dict(checkpoint=f"me5__pawsx__{method}__s{seed}", task="pawsx", method=method, seed=seed,
                             metric="train_loss", value=0.5, n=n, epoch=epoch, elapsed_s=2.0 * n,
                             select_score=score if step == 9 else float("nan"), selected_epoch=best,
                             precision="bf16"))
    return pd.DataFrame(rows)


def search_logs(scores: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    return pd.concat([train_log(m, s, v) for (m, s), v in scores.items()], ignore_index=True)


def test_a_setting_learns_when_its_selection_ci_clears_the_majority_and_the_best_learned_setting_is_chosen():
    train = search_logs({
        ("baseline@lr=0.0001", 1): [0.78, 0.82, 0.81], ("baseline@lr=0.0001", 2): [0.80, 0.83, 0.84],
        ("baseline@lr=2e-05", 1): [0.70, 0.75, 0.77], ("baseline@lr=2e-05", 2): [0.71, 0.74, 0.78],
        ("pgd@lr=0.0001", 1): [0.576, 0.58, 0.57], ("pgd@lr=0.0001", 2): [0.80, 0.85, 0.86],  # one seed collapsed
        ("pgd@lr=2e-05", 1): [0.70, 0.76, 0.79], ("pgd@lr=2e-05", 2): [0.72, 0.77, 0.80]})
    table = recipe_table(train, SELECTION, CFG.split_entry)
    assert len(table) == 8 and set(table["setting"]) == {"lr=0.0001", "lr=2e-05"}
    row = table[(table.method == "baseline") & (table.setting == "lr=0.0001") & (table.seed == 1)].iloc[0]
    assert row.select_score == pytest.approx(0.82) and row.selected_epoch == 2 and row.updates == 30
    assert row.learned and row.ci_lo > 0.576 and row.n == 1000 and row.precision == "bf16"
    collapsed = table[(table.method == "pgd") & (table.setting == "lr=0.0001") & (table.seed == 1)].iloc[0]
    assert not collapsed.learned  # 58.0% on 1,000 rows does not clear 57.6%
    choice = choose_recipes(table, ["lr=0.0001", "lr=2e-05"]).set_index("method")
    assert choice.loc["baseline", "chosen"] == "lr=0.0001"
    # pgd's higher mean at 1e-4 does not count: it did not learn at every seed
    assert choice.loc["pgd", "chosen"] == "lr=2e-05" and choice.loc["pgd", "settings_learned"] == 1
    assert recipes_yaml(choice.reset_index(), CFG.split_entry).split() == \
        "recipes: pawsx: baseline: {lr: 0.0001} pgd: {lr: 2.0e-05}".split()


def test_a_best_so_far_is_not_a_recipe_and_the_block_replaces_the_params_files_own():
    train = search_logs({("baseline@lr=0.0001", 1): [0.78, 0.82, 0.81], ("baseline@lr=2e-05", 1): [0.7, 0.75, 0.77],
                         ("pgd@lr=0.0001", 1): [0.70, 0.76, 0.79]})
    choice = choose_recipes(recipe_table(train, SELECTION, CFG.split_entry), ["lr=0.0001", "lr=2e-05"])
    block = recipes_yaml(choice, CFG.split_entry, settings=2)
    assert block.split() == "recipes: pawsx: baseline: {lr: 0.0001}".split()  # pgd tried 1 of 2 rates: none yet
    params = "name: s\n# a comment kept\nrecipes:\n  pawsx:\n    pgd: {lr: 1.0e-3}\n\nreport:\n  n_boot: 10\n"
    assert replace_top_level_block(params, "recipes", block) == \
        "name: s\n# a comment kept\n" + block + "report:\n  n_boot: 10\n"
    assert replace_top_level_block("name: s\n", "recipes", block) == "name: s\n" + block


def test_a_method_that_learns_at_no_setting_is_reported_as_a_finding():
    train = search_logs({("pgd@lr=0.0001", 1): [0.57, 0.58, 0.576], ("pgd@lr=2e-05", 1): [0.576, 0.576, 0.58]})
    choice = choose_recipes(recipe_table(train, SELECTION, CFG.split_entry))
    assert choice.iloc[0]["chosen"] == "" and NO_RECIPE in choice.iloc[0]["finding"]
    assert "recipes: {}" in recipes_yaml(choice, CFG.split_entry)
    # a search that has not tried every setting yet makes no finding
    partial = choose_recipes(recipe_table(train[train["method"] == "pgd@lr=0.0001"], SELECTION, CFG.split_entry),
                             ["lr=0.0001", "lr=2e-05"])
    assert partial.iloc[0]["chosen"] == "" and partial.iloc[0]["finding"] == \
        "no setting learned so far (1 of 2 settings tried)"


def test_a_checkpoint_without_selection_scores_is_an_error_naming_it():
    train = train_log("baseline@lr=0.0001", 1, [0.8, 0.8, 0.8]).assign(select_score=float("nan"))
    with pytest.raises(ValueError, match="baseline@lr=0.0001__s1 has no English selection score"):
        recipe_table(train, SELECTION, CFG.split_entry)


def test_the_ledger_keeps_earlier_sessions_cells_and_a_rerun_replaces_its_own_row():
    first = recipe_table(search_logs({("baseline@lr=0.0001", 1): [0.78, 0.82, 0.81],
                                      ("pgd@lr=0.0001", 1): [0.576, 0.58, 0.57]}), SELECTION, CFG.split_entry)
    ledger, replaced = merge_ledger(None, first)
    assert len(ledger) == 2 and replaced == []
    # a later session: pgd at 2e-5 is new, pgd at 1e-4 was retrained after a change (another key)
    later = recipe_table(search_logs({("pgd@lr=2e-05", 1): [0.70, 0.76, 0.79],
                                      ("pgd@lr=0.0001", 1): [0.75, 0.80, 0.81]}).assign(key="k2"),
                         SELECTION, CFG.split_entry)
    ledger, replaced = merge_ledger(ledger, later)
    assert list(ledger["checkpoint"]) == [f"me5__pawsx__{m}__s1" for m in  # sorted by cell: a stable file diff
                                          ("baseline@lr=0.0001", "pgd@lr=0.0001", "pgd@lr=2e-05")]
    assert replaced == ["me5__pawsx__pgd@lr=0.0001__s1"]
    assert ledger.set_index("checkpoint").loc["me5__pawsx__pgd@lr=0.0001__s1", "learned"]  # the rerun's verdict
    choice = choose_recipes(ledger, ["lr=0.0001", "lr=2e-05"]).set_index("method")
    assert choice.loc["pgd", "chosen"] == "lr=0.0001" and choice.loc["pgd", "settings_tried"] == 2


def test_a_ledger_without_the_tables_columns_is_an_error_naming_them():
    table = recipe_table(search_logs({("baseline@lr=0.0001", 1): [0.78, 0.82, 0.81]}), SELECTION, CFG.split_entry)
    with pytest.raises(ValueError, match=r"lacks the columns \['select_score'\]"):
        merge_ledger(table.drop(columns=["select_score"]), table)
    assert list(merge_ledger(None, table)[0].columns) == RECIPE_COLS


def test_the_grid_shows_every_planned_cell_and_bolds_a_choice_only_once_its_row_is_complete():
    train = search_logs({("baseline@lr=0.0001", 1): [0.78, 0.82, 0.81], ("baseline@lr=0.0001", 2): [0.80, 0.83, 0.84],
                         ("baseline@lr=2e-05", 1): [0.70, 0.75, 0.77], ("pgd@lr=0.0001", 1): [0.576, 0.58, 0.57]})
    table = recipe_table(train, SELECTION, CFG.split_entry)
    planned = [("pawsx", m, s) for m in ("baseline", "pgd") for s in ("lr=0.0001", "lr=2e-05")]
    grid = recipe_grid(table, choose_recipes(table, ["lr=0.0001", "lr=2e-05"]), planned).set_index("method")
    assert list(grid.columns) == ["task", "lr=0.0001", "lr=2e-05", "precision"]
    assert grid.loc["baseline", "lr=0.0001"] == "**83.0 (2 seeds)**"  # (0.82 + 0.84) / 2, the chosen setting
    assert grid.loc["baseline", "lr=2e-05"] == "77.0" and grid.loc["baseline", "precision"] == "bf16"
    # pgd's row is not complete: no bold, its untrained setting a dash, its collapse named
    assert grid.loc["pgd", "lr=0.0001"] == "58.0 (not learned)" and grid.loc["pgd", "lr=2e-05"] == "—"
    # a row whose settings trained in different precisions (or before the ledger recorded it) says so per setting
    mixed = table.assign(precision=table["setting"].map({"lr=0.0001": "", "lr=2e-05": "bf16"}))
    grid = recipe_grid(mixed, choose_recipes(mixed, ["lr=0.0001", "lr=2e-05"]), planned).set_index("method")
    assert grid.loc["baseline", "precision"] == "lr=0.0001: not recorded; lr=2e-05: bf16"
    assert grid.loc["pgd", "precision"] == "not recorded"


def test_a_ledger_from_before_the_precision_column_merges_with_its_rows_not_recorded():
    old = recipe_table(search_logs({("baseline@lr=0.0001", 1): [0.78, 0.82, 0.81]}), SELECTION, CFG.split_entry)
    new = recipe_table(search_logs({("pgd@lr=0.0001", 1): [0.70, 0.76, 0.79]}).assign(precision="fp32"),
                       SELECTION, CFG.split_entry)
    ledger, _ = merge_ledger(old.drop(columns=["precision"]), new)
    assert list(ledger.columns) == RECIPE_COLS
    assert ledger.set_index("method")["precision"].to_dict() == {"baseline": "", "pgd": "fp32"}


def test_the_studys_recipes_are_the_searchs_choice():
    """params/study.yaml's `recipes:` block is what `xlt recipes` chooses from the ledger for every (task, method)
    the study requires; a method without one is allowed only while its search is unfinished."""
    root = Path(__file__).resolve().parents[1]
    study = yaml.safe_load((root / "params" / "study.yaml").read_text())
    search = RunConfig.model_validate(yaml.safe_load((root / "params" / "recipe-search.yaml").read_text()))
    ledger = pd.read_csv(root / "docs" / "results" / "recipe-search.csv")
    order = list(dict.fromkeys(setting_text(search.split_entry(m)[1]) for m in search.grid_methods()))
    choice = choose_recipes(ledger, order).set_index(["task", "method"])
    for task in study["recipes_required"]:
        for method in study["grid"]["method"]:
            have = (study.get("recipes") or {}).get(task, {}).get(method)
            row = choice.loc[(task, method)] if (task, method) in choice.index else None
            if row is None or not row["chosen"]:
                assert have is None, f"recipes.{task}.{method} is set but the search chose none"
                assert row is None or row["settings_tried"] < len(order) or NO_RECIPE in row["finding"]
                continue
            chosen = search.split_entry(f"{method}@" + row["chosen"].replace(", ", ","))[1]
            assert have is None and row["settings_tried"] < len(order) or have == chosen, (task, method, have, chosen)


def test_study_lite_is_cells_of_the_study_under_the_same_settings():
    """params/study-lite.yaml's expanded cells are study cells with the same objective and the same resolved
    training settings, and every setting outside the grid is the study's, so each of its cells is a study cell
    under the same keys (its export is made from the study's rows of those cells)."""
    root = Path(__file__).resolve().parents[1]
    study, lite = (load_config(root / "params" / f"{n}.yaml", check=False) for n in ("study", "study-lite"))
    study_cells = {c.cell_id: c for c in expand_grid(study)}
    lite_cells = expand_grid(lite)
    assert lite_cells
    for cell in lite_cells:
        twin = study_cells.get(cell.cell_id)
        assert twin is not None, f"{cell.cell_id} is not a cell of the study"
        assert (twin.method_type, twin.method_params, twin.checkpoint) == (
            cell.method_type, cell.method_params, cell.checkpoint), cell.cell_id
        assert lite.train_for(cell.task, cell.method) == study.train_for(cell.task, cell.method), cell.cell_id
    for block in ("protocol", "task_train", "evaluate", "alignment", "report", "executor", "train"):
        assert getattr(lite, block) == getattr(study, block), block
    assert set(lite.recipes_required) == {c.task for c in lite_cells} <= set(study.recipes_required)


@pytest.mark.e2e
def test_subsets_trained_one_after_another_in_one_folder_all_count(tmp_path, capsys):
    """Each `xlt run` of a subset rewrites the folder's config.yaml; `xlt recipes --params --set` still finds the
    cells trained before it, under the overrides they were trained with, also when the plan has a task whose data
    the folder never made (the sessions trained one task)."""
    search = tmp_path / "search.yaml"
    search.write_text((SMOKE.read_text().replace("name: smoke", "name: search")
                       .replace("seed: [1, 2]", "seed: [1]"))
                      + "search: {lr: [1.0e-3, 1.0e-4]}\nprotocol: {selection: true}\n")
    out = tmp_path / "run"
    common = ["--stages", "data,train", "--out", str(out), "--set", "train.threads=1", "--set", "grid.method=[baseline]",
              "--set", "grid.task=[xnli]"]
    assert main(["run", str(search), *common, "--set", "search.lr=[1.0e-3]"]) == 0
    assert main(["run", str(search), *common, "--set", "search.lr=[1.0e-4]"]) == 0
    capsys.readouterr()
    ledger = tmp_path / "ledger.csv"
    table = tmp_path / "search.md"  # a docs page: only the part between its marks is rewritten
    table.write_text("# Recipes\n\n<!-- recipe-table: start (written by `xlt recipes --markdown`, do not edit) -->\n"
                     "a stale table\n<!-- recipe-table: end -->\n\nThe prose after it.\n")
    assert main(["recipes", str(out), "--params", str(search), "--set", "train.threads=1",
                 "--ledger", str(ledger), "--markdown", str(table)]) == 0
    assert "2 of 12 training cells finished" in capsys.readouterr().out
    markdown = table.read_text()
    assert "2 of 12 cells finished" in markdown and "| lr=0.001 " in markdown and "| pgd " in markdown
    assert markdown.startswith("# Recipes\n") and markdown.endswith("The prose after it.\n")
    assert "a stale table" not in markdown
    assert "| xnli   | baseline |" in markdown and "—" in markdown  # pgd and PAWS-X: not trained yet
    assert sorted(pd.read_csv(ledger)["setting"]) == ["lr=0.0001", "lr=0.001"]
    # without the overrides the cells were trained with, their keys are not the plan's: only the last config's cell
    assert main(["recipes", str(out), "--params", str(search)]) == 0
    assert "1 of 12 training cells finished" in capsys.readouterr().out
    # a cell cut off after its first epoch is named with where it stands (its resume state, xltlib.training.resume)
    plan = Run(load_config(search, ["train.threads=1"]), out)
    cut = next(c.checkpoint for c in plan.training_cells() if c.method.startswith("pgd"))
    save_epoch_state(plan.resume_path(cut), EpochState(
        epoch=0, step=5, tokens=100, examples=40, elapsed_s=120.0, rows=[], params=[torch.zeros(2)], optimizers=[],
        schedulers=[], objective={}, data_rng={}), "fingerprint")
    assert main(["recipes", str(out), "--params", str(search), "--set", "train.threads=1"]) == 0
    assert f"in progress: {cut}, epoch 1 finished and saved (2 min of training so far)" in capsys.readouterr().out
