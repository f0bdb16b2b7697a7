"""``xlt`` command line: run a params file, rebuild a report, rescore a run, list registries, open a run in JupyterLab."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd
import yaml

from xltlib.analysis.gate import selection_rows, with_counts
from xltlib.analysis.recipes import (choose_recipes, merge_ledger, recipe_grid, recipe_table, recipes_yaml,
                                    setting_text)
from xltlib.config.schema import ConfigError
from xltlib.config.validate import load_config
from xltlib.core.rows import write_csv_atomic
from xltlib.data.parallel import PARALLEL
from xltlib.data.tasks import TASKS, get_task
from xltlib.data.trainsets import TRAIN_SETS
from xltlib.evaluation.alignment import METRICS
from xltlib.evaluation.task_types import KINDS
from xltlib.reporting.export import DirtyTreeError, export_results
from xltlib.reporting.index import write_index
from xltlib.runner.cost import cost_table, format_report, machine_peak
from xltlib.runner.executors import EXECUTORS
from xltlib.runner.lab import lab
from xltlib.runner.pipeline import STAGES, StageFailed, execute_stage, run_pipeline
from xltlib.runner.rescore import rescore_run
from xltlib.runner.run_dir import Run, run_lock
from xltlib.training.resume import epoch_state_info
from xltlib.training import objectives as robust


def _default_out(name: str) -> Path:
    return Path("outputs") / name


def cmd_run(args) -> int:

    overrides = list(args.set)
    if args.executor:
        overrides.append(f"executor.name={args.executor}")
    if args.address:
        overrides.append(f"executor.address={args.address}")
    if args.device:
        overrides.append(f"device={args.device}")
    cfg = load_config(args.params, overrides)
    out = Path(args.out) if args.out else _default_out(cfg.name)
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ConfigError(f"--stages: unknown stage(s) {bad}; stages are {', '.join(STAGES)}")
    try:
        run = run_pipeline(cfg, out, params_file=str(args.params), stages=stages)
    except StageFailed as exc:
        print(f"xlt: {exc}", file=sys.stderr)
        return 1
    print(f"report: {run.path('report', 'index.html')}")
    return 0


def cmd_report(args) -> int:

    run = Run.open(args.dir)
    with run_lock(run.dir):
        sp = run.path("status.json")
        status = json.loads(sp.read_text()) if sp.exists() else {}
        ok = execute_stage(run, "analysis", "05_analysis", dict(run_dir=str(run.dir)), status)
        print(f"report: {write_index(run, status)}")
    return 0 if ok else 1


def cmd_export(args) -> int:

    try:
        written = export_results(Run.open(args.dir), args.dest, allow_dirty=args.allow_dirty)
    except DirtyTreeError as exc:
        print(f"xlt export: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def cmd_rescore(args) -> int:

    run = Run.open(args.dir)
    if args.write:
        with run_lock(run.dir):
            cells = rescore_run(run, write=True)
    else:
        cells = rescore_run(run)
    kept = sorted({m for c in cells for m in c.kept})
    for c in cells:
        if c.error:
            print(f"{c.cell_id}: NOT rescored: {c.error}")
            continue
        print(f"{c.cell_id}: {c.recomputed} rows rescored, {len(c.changed)} differ from the stored rows"
              + (f", {len(c.added)} added" if c.added else "")
              + (f", {c.stale_files} stale prediction file(s) ignored" if c.stale_files else ""))
        for line in c.changed + [f"added {a}" for a in c.added]:
            print(f"  {line}")
    if kept:
        print(f"kept as stored, they need the model (robustness under attack, the pre-trained encoder): {', '.join(kept)}")
    written = [c for c in cells if c.path is not None]
    if written:
        print(f"rows: {written[0].path.parent}" + ("" if args.write else " (the stored rows are unchanged; --write "
                                                                           "replaces them)"))
    failed = [c for c in cells if c.error]
    if not cells:
        print(f"xlt: error: {run.path('results', 'transfer')} holds no transfer rows", file=sys.stderr)
    return 1 if failed or not cells else 0


def cmd_cost(args) -> int:

    run = Run.open(args.dir)
    costs = cost_table(run)
    print(format_report(run, costs, machine_peak(run.dir, remeasure=args.remeasure), cells=args.cells))
    if args.csv:
        costs.to_csv(args.csv, index=False)
        print(f"every part: {args.csv}")
    return 0


def cmd_recipes(args) -> int:
    run = Run.open(args.dir)
    # the whole search's plan: a session that trained a subset (--set search.lr=[...]) is judged against it
    plan = Run(load_config(args.params, list(args.set)), run.dir) if args.params else run
    selection = selection_rows(run)
    if selection is None:
        print(f"xlt: error: {run.dir}: protocol.selection is off; a recipe is chosen on English selection rows "
              "(set protocol.selection: true and re-run the data and train stages)", file=sys.stderr)
        return 2
    # rows live under the run's last config or under the plan: a folder where several subsets were trained one
    # after another (each `xlt run` rewrites config.yaml) keeps every cell the plan names
    rows = run.load_results("train")
    if plan is not run:
        planned_rows = plan.load_results("train")
        rows = pd.concat([planned_rows, rows[~rows["checkpoint"].isin(planned_rows["checkpoint"])]], ignore_index=True)
        # an entity tagger's chunk counts: those made under the keys of the rows judged, not only the last config's
        selection = with_counts(selection, run.selection_counts(set(rows["key"]) if "key" in rows else set()))
    table = recipe_table(rows, selection, run.cfg.split_entry)
    in_run = len(table)
    if args.ledger:
        ledger_path = Path(args.ledger)
        try:
            ledger = pd.read_csv(ledger_path) if ledger_path.is_file() else None
            table, replaced = merge_ledger(ledger, table)
        except (ValueError, pd.errors.ParserError) as e:
            print(f"xlt: error: {ledger_path}: {e}", file=sys.stderr)
            return 2
        for ck in replaced:
            print(f"note: {ck} was retrained with another key; its ledger row is replaced", file=sys.stderr)
    planned = {c.checkpoint for c in plan.training_cells()}
    finished = set(table["checkpoint"]) if len(table) else set()
    source = f" ({in_run} from this run, the rest from {args.ledger})" if args.ledger else ""
    print(f"Recipe search {run.dir.name}: {len(planned & finished)} of {len(planned)} training cells finished{source}; "
          "verdicts on English selection rows (score of the selected epoch, Wilson CI vs the selection rows' majority "
          "rate; entity tagging: span F1, bootstrap CI vs the memorized-entity F1)\n")
    for ck in sorted(planned - finished):  # cut off mid-way: the same `xlt run` goes on from its saved state
        info = epoch_state_info(run.resume_path(ck))
        if info is not None:
            print(f"in progress: {ck}, epoch {info['epoch'] + 1} finished and saved "
                  f"({info['elapsed_s'] / 60:.0f} min of training so far)")
    if not len(table):
        print(f"xlt: error: {run.path('results', 'train')} holds no finished training cell", file=sys.stderr)
        return 1
    order = list(dict.fromkeys(setting_text(plan.cfg.split_entry(m)[1]) for m in plan.cfg.grid_methods()))
    choice = choose_recipes(table, order)
    show = table.assign(select_score=lambda d: (100 * d.select_score).round(1), ci_lo=lambda d: (100 * d.ci_lo).round(1),
                        ci_hi=lambda d: (100 * d.ci_hi).round(1), majority=lambda d: (100 * d.majority).round(1),
                        train_seconds=lambda d: d.train_seconds.round(0))
    print(show.drop(columns=["checkpoint", "key"]).to_string(index=False))
    print("\nChosen per (task, method): the best mean selection score among settings that learned at every seed\n")
    print(choice.assign(select_score=lambda d: (100 * d.select_score).round(1)).to_string(index=False))
    if args.yaml:
        print("\n" + recipes_yaml(choice, run.cfg.split_entry, len(order)))
    if args.write_recipes:
        target = Path(args.write_recipes)
        try:
            methods = (yaml.safe_load(target.read_text(encoding="utf-8")) or {}).get("grid", {}).get("method", [])
            block = recipes_yaml(choice[choice["method"].isin(methods)], run.cfg.split_entry, len(order))
            target.write_text(replace_top_level_block(target.read_text(encoding="utf-8"), "recipes", block),
                              encoding="utf-8")
        except (OSError, yaml.YAMLError, AttributeError) as e:
            print(f"xlt: error: {target}: {e}", file=sys.stderr)
            return 2
        written = sum(len(m) for m in (yaml.safe_load(block)["recipes"] or {}).values())
        print(f"recipes: {target} ({written} (task, method) recipes, those whose search tried every setting)")
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.ledger:
        write_csv_atomic(table, Path(args.ledger))
        print(f"\nledger: {args.ledger} ({len(table)} checkpoints)")
    if args.markdown:
        # the training task: XQuAD and MLQA cells are TyDiQA's checkpoints, named so in the table
        plan_cells = [(get_task(c.task).training_task, *plan.cfg.split_entry(c.method)) for c in plan.training_cells()]
        grid = recipe_grid(table, choice, [(task, method, setting_text(s)) for task, method, s in plan_cells])
        try:
            write_recipe_markdown(Path(args.markdown), grid, f"{len(planned & finished)} of {len(planned)} cells",
                                  args.ledger or str(run.dir))
        except ValueError as e:
            print(f"xlt: error: {e}", file=sys.stderr)
            return 2
        print(f"table: {args.markdown}")
    return 0


def replace_top_level_block(text: str, key: str, block: str) -> str:
    """``text`` (a params file) with its top-level ``key:`` block (the line and the indented lines under it)
    replaced by ``block``, or ``block`` added at the end: the file's comments and order are kept."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{key}:")), None)
    if start is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + block
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


RECIPE_TABLE_MARKS = ("<!-- recipe-table: start (written by `xlt recipes --markdown`, do not edit) -->",
                      "<!-- recipe-table: end -->")


def write_recipe_markdown(path: Path, grid: pd.DataFrame, progress: str, source: str) -> None:
    """The search's table for the docs, written by the command so that no number in it is typed by hand: between
    the :data:`RECIPE_TABLE_MARKS` of a page that has them (the rest of the page kept), else the whole file."""
    start, end = RECIPE_TABLE_MARKS
    table = (f"Recipe search: {progress} finished (`{source}`). English selection score of the kept epoch, %, "
             "mean over the seeds trained; **bold**: the setting chosen (the best that learned at every seed), once "
             "every setting of its row was trained; (not learned): the Wilson CI does not clear the selection rows' "
             "majority rate (PAN-X: the memorized-entity F1) at some seed; —: not trained yet; precision: bf16 "
             "weights with fp32 masters (a CPU with bf16) or fp32, per setting where a row mixes them.\n\n"
             + grid.to_markdown(index=False) + "\n")
    page = path.read_text(encoding="utf-8") if path.is_file() else ""
    if (start in page) != (end in page) or (start in page and page.index(end) < page.index(start)):
        raise ValueError(f"{path}: expected the marks {start!r} and then {end!r}, each once, or neither")
    if start in page:
        head, rest = page.split(start, 1)
        text = f"{head}{start}\n\n{table}\n{end}{rest.split(end, 1)[1]}"
    else:
        text = f"{start}\n\n{table}\n{end}\n"
    path.write_text(text, encoding="utf-8")


def cmd_list(args) -> int:

    if args.what in ("tasks", "all"):
        for t in TASKS.values():
            print(f"task {t.name:10s} {t.kind:20s} metric={t.metric:9s} languages={','.join(t.languages)}")
    if args.what in ("train-sets", "all"):
        for name, ts in TRAIN_SETS.items():
            state = f"REFUSED: {ts.refused}" if ts.refused else ts.notes
            print(f"train-set {name:15s} task={ts.task:6s} file={ts.layout:28s} {state}")
    if args.what in ("methods", "all"):
        for name in robust.OBJECTIVES:
            print(f"method {name:10s} defaults={robust.objective_defaults(name)}")
    if args.what in ("metrics", "all"):
        for name, spec in METRICS.items():
            print(f"metric {name:14s} kind={spec.kind}")
    if args.what in ("parallel", "all"):
        for name, src in PARALLEL.items():
            print(f"parallel {name:8s} languages={len(src.languages)}")
    if args.what in ("kinds", "all"):
        for name in KINDS:
            print(f"kind {name}")
    if args.what in ("executors", "all"):

        for name, cls in EXECUTORS.items():
            print(f"executor {name:6s} {cls.__doc__.strip().splitlines()[0]}")
    return 0


def cmd_lab(args) -> int:

    return lab(args.dir, args.stage, port=args.port, open_browser=not args.no_browser, fresh=args.fresh,
               dry_run=args.dry_run, allow_root=args.allow_root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xlt", description="Robust training vs cross-lingual alignment and transfer")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the stages for a params YAML")
    p.add_argument("params", help="params YAML, e.g. params/quick.yaml")
    p.add_argument("--out", help="run folder (default outputs/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. --set train.epochs=1 --set grid.seed=[1,2]")
    p.add_argument("--stages", help="comma-separated subset of stages (default: all)")
    p.add_argument("--executor", help="how units of work run: local (default) or ray (xlt list executors); "
                   "the same as --set executor.name=NAME")
    p.add_argument("--address", help="ray: the cluster, 'auto' (the running one) or ray://host:port "
                   "(default: a local cluster on this machine)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where training and scoring run (default: "
                   "the params' device, auto = CUDA when visible)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="rebuild the analysis and HTML report of a finished run (no training)")
    p.add_argument("dir")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("export", help="write a run's summary tables, figures and provenance (docs/results; an unfinished run is labelled interim)")
    p.add_argument("dir")
    p.add_argument("dest")
    p.add_argument("--allow-dirty", action="store_true", help="export rows computed from uncommitted code (refused "
                   "by default); the diff hashes they were computed with are recorded in provenance.json")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("rescore", help="recompute a run's transfer rows from its prediction files (no model or "
                       "checkpoint needed); rows that need the model (robustness, pretrained_*) are kept as stored",
                       description="Score the kept predictions (results/predictions/<cell_id>/) of every transfer rows "
                       "file again and write the rows to DIR/results/rescored/transfer/<cell_id>.parquet, leaving "
                       "DIR/results/transfer/ as it is; with --write, replace the rows in DIR/results/transfer/ "
                       "instead. Prints, per cell, how many rows were rescored and which differ from the stored ones. "
                       "Robustness rows (robust_*, attack_*, synonym_subst_rate) and LAReQA's pretrained_* rows need "
                       "the model and are kept as stored. Exit status 1 when a cell has no predictions of its key.")
    p.add_argument("dir", help="run folder, e.g. outputs/quick")
    p.add_argument("--write", action="store_true", help="replace DIR/results/transfer/<cell_id>.parquet with the "
                   "rescored rows (default: write them to DIR/results/rescored/transfer/)")
    p.set_defaults(func=cmd_rescore)
    p = sub.add_parser("cost", help="where a run's wall time went: per stage, notebook and part (training loop, "
                       "loading, scoring, encoding, each metric, kernel start, imports, HTML export), beside the "
                       "machine's matmul peak (bf16, or fp32 where bf16 is emulated)")
    p.add_argument("dir", help="run folder, e.g. outputs/quick")
    p.add_argument("--cells", action="store_true", help="also print every notebook and grid cell part by part")
    p.add_argument("--csv", help="write every part (stage, notebook, cell, component, seconds) to this CSV file")
    p.add_argument("--remeasure", action="store_true", help="measure the matmul peak again (it is kept in "
                   "DIR/timings/machine.json per host)")
    p.set_defaults(func=cmd_cost)
    p = sub.add_parser("recipes", help="a recipe search's verdicts (params `search`): per method and setting, the "
                       "English selection score and whether it learned; the setting each (task, method) keeps")
    p.add_argument("dir", help="run folder, e.g. outputs/recipe-search")
    p.add_argument("--yaml", action="store_true", help="also print the `recipes:` block for a params file")
    p.add_argument("--csv", help="write the per-checkpoint table to this CSV file")
    p.add_argument("--params", help="the search's params file (default: the run's own config): the settings and "
                   "cells the verdicts count against, when the run trained a subset of them")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --params: the overrides the cells were trained with (e.g. --set train.threads=1), so "
                   "their keys are the plan's")
    p.add_argument("--ledger", help="a CSV file that keeps the search's finished cells across sessions and machines: "
                   "the run's cells are merged into it (replacing a row of the same checkpoint), the verdicts are "
                   "taken over all of them, and it is written back")
    p.add_argument("--write-recipes", metavar="PARAMS", help="write the chosen recipes of the methods of PARAMS's grid "
                   "(those whose search tried every setting) as its top-level `recipes:` block, e.g. params/study.yaml")
    p.add_argument("--markdown", help="write the search's table (a row per task and method, a column per setting, "
                   "the chosen setting in bold) into this Markdown page, between its recipe-table marks if it has "
                   "them (docs/recipes.md does), else as the whole file")
    p.set_defaults(func=cmd_recipes)
    p = sub.add_parser("list", help="list the registries: tasks, training sets, methods, metrics, parallel data, task kinds, executors")
    p.add_argument("what", nargs="?", default="all", choices=["tasks", "train-sets", "methods", "metrics", "parallel", "kinds", "executors", "all"])
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("lab", help="open a stage notebook of a run in JupyterLab with the parameters that run used")
    p.add_argument("dir", help="run folder, e.g. outputs/quick")
    p.add_argument("stage", nargs="?", help="04_alignment, alignment, train/<checkpoint>, ... (default: all, "
                   "the file browser opens on DIR/lab)")
    p.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (0: any free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.add_argument("--fresh", action="store_true", help="rebuild DIR/lab/<stage>.ipynb even if you edited it")
    p.add_argument("--dry-run", action="store_true", help="write the notebook(s) and print the command, start nothing")
    p.add_argument("--allow-root", action="store_true", help="let JupyterLab run as root (containers)")
    p.set_defaults(func=cmd_lab)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        print(f"xlt: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
