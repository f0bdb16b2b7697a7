"""Load a params file and check it: types and ranges (the schema), then every name against its registry.

The checks name the file, the key, the value and what is allowed. This module imports the registries of tasks,
objectives, metrics and task types, so it sits above them in the layers (``pyproject.toml``).
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from xltlib.config.schema import ConfigError, RunConfig, TrainConfig, _format_validation, _parse_override, yaml_load
from xltlib.data.parallel import PARALLEL
from xltlib.data.tasks import TASKS
from xltlib.data.trainsets import TRAIN_SETS, check_train_sets
from xltlib.evaluation.alignment import METRICS
from xltlib.evaluation.task_types import KINDS
from xltlib.training import objectives as robust
from xltlib.training.objectives.synonyms import DEFAULT_TABLE as SYNONYM_TABLE


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = (), *, check: bool = True,
                **updates) -> RunConfig:
    """Read a params YAML, apply ``key.sub=value`` overrides, validate, check registries.

    ``check=False`` skips the registry checks (which build every objective): a run folder's snapshot was
    checked when the run started, so the stage kernels only parse it."""
    source = str(path) if path else "<defaults>"
    data: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"params file {p} does not exist")
        try:
            data = yaml_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of params at the top level, got {type(data).__name__}")
    if overrides:
        source = f"{source} (with --set overrides)"
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{k}' is not a section")
        node[keys[-1]] = value
    data.update(updates)
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source, RunConfig)) from None
    if check:
        check_registries(cfg, source)
    return cfg


def check_hyperparameters(kind: str, hparams: dict, entry: str, source: str) -> None:
    """Every hyperparameter of a method entry against its objective's ``HPARAMS`` (unknown key, type, range;
    absent keys take their defaults), without building the objective: RS-DA's build reads a synonym table that a
    smoke run writes only when it starts."""
    try:
        robust.OBJECTIVES.get(kind).checked_hparams(hparams, entry)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def check_task_keys(tasks, key: str, source: str) -> None:
    """Every task a per-task mapping of the params names (``key``: its place, e.g. ``grid.exclude``) is registered."""
    for task in tasks:
        if task not in TASKS:
            raise ConfigError(f"{source}: {key}.{task}: not a registered task; registered: {', '.join(TASKS)}")


def is_method_entry(cfg: RunConfig, name: str) -> bool:
    """An entry of ``methods:`` or a registered method (what grid.method may name)."""
    return name in cfg.methods or name in robust.OBJECTIVES


def check_registries(cfg: RunConfig, source: str) -> None:
    """Names in the grid must exist in their registries; method hyperparameters must validate."""
    data = cfg.resolved_data_dir()
    if data is not None and not cfg.smoke and not data.is_dir():  # else every reader fails later, one at a time
        raise ConfigError(f"{source}: the data folder {data} (data_dir, else $XLT_DATA_DIR, else ../shared/data for "
                          "make) does not exist; point XLT_DATA_DIR at an XTREME-layout folder")
    for t in cfg.grid.task:
        if t not in TASKS:
            raise ConfigError(f"{source}: grid.task '{t}' is not a registered task; registered: {', '.join(TASKS)}")
        if TASKS[t].kind not in KINDS:
            trainable = [n for n, task in TASKS.items() if task.kind in KINDS]
            raise ConfigError(f"{source}: grid.task '{t}' ({TASKS[t].kind}) cannot be fine-tuned and scored here; "
                              f"tasks that can: {', '.join(trainable)}")

    check_task_keys(cfg.grid.exclude, "grid.exclude", source)
    for task, methods in cfg.grid.exclude.items():
        for m in methods:
            if not is_method_entry(cfg, m):
                raise ConfigError(f"{source}: grid.exclude.{task}: '{m}' is neither an entry of methods "
                                  f"({', '.join(cfg.methods) or 'none'}) nor a registered method")

    check_task_keys(cfg.grid.task_seeds, "grid.task_seeds", source)
    for task, seeds in cfg.grid.task_seeds.items():
        if not seeds:
            raise ConfigError(f"{source}: grid.task_seeds.{task} = []: expected a non-empty list of training seeds "
                              "(leave the task out of grid.task to train it at none)")

    for d in cfg.alignment.datasets:
        if d not in PARALLEL:
            raise ConfigError(f"{source}: alignment.datasets '{d}' is not registered; registered: {', '.join(PARALLEL)}")
        if d == "xnli" and "xnli" not in cfg.grid.task:
            raise ConfigError(f"{source}: alignment.datasets 'xnli' uses the XNLI training split, but grid.task lacks xnli")
    primary = cfg.report.primary.metric
    if primary.split(".", 1)[0] not in METRICS:
        raise ConfigError(f"{source}: report.primary.metric '{primary}' is not '<metric>.<value>' with a registered "
                          f"metric ({', '.join(METRICS)})")
    for m in cfg.alignment.metrics:
        if m not in METRICS:
            raise ConfigError(f"{source}: alignment.metrics '{m}' is not registered; registered: {', '.join(METRICS)}")
    for entry in dict.fromkeys(list(cfg.grid.method) + list(cfg.methods)):  # every entry, used or not
        kind, hp = cfg.method_spec(entry)
        if kind not in robust.OBJECTIVES:
            where = "grid.method" if entry in cfg.grid.method else "methods"
            raise ConfigError(
                f"{source}: {where} '{entry}' has type '{kind}', not a registered method; "
                f"registered: {', '.join(robust.OBJECTIVES)}")
        over = cfg.methods.get(entry, {}).get("train")
        if over is not None:
            if not isinstance(over, dict):
                raise ConfigError(f"{source}: methods.{entry}.train must be a mapping of train settings, got {over!r}")
            try:
                TrainConfig.model_validate({**cfg.train.model_dump(), **over})
            except ValidationError as exc:
                raise ConfigError(_format_validation(exc, f"{source}: methods.{entry}.train", TrainConfig)) from None
        check_hyperparameters(kind, hp, entry, source)
        if kind == "rs_da" and cfg.smoke and hp.get("synonyms") is None:
            continue  # smoke runs write their synonym table at run time: nothing to read yet
        try:
            objective = robust.build_objective(kind, hp, data_dir=cfg.resolved_data_dir(), entry=entry)
            if entry in cfg.grid.method:
                for task in dict.fromkeys(TASKS[t].training_task for t in cfg.grid.task):
                    objective.train_copies(task)  # e.g. RS-DA's copies: reference exists for some tasks only
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"{source}: {exc}") from None

    check_task_keys(cfg.protocol.train_sets, "protocol.train_sets", source)
    for task, names in cfg.protocol.train_sets.items():
        for name in names:
            if name not in TRAIN_SETS:
                raise ConfigError(f"{source}: protocol.train_sets.{task}: unknown training set '{name}'; "
                                  f"registered: {', '.join(TRAIN_SETS)}")
        try:
            check_train_sets(task, names)
        except ValueError as exc:
            raise ConfigError(f"{source}: protocol.train_sets.{task}: {exc}") from None
    check_task_keys(cfg.protocol.max_train if isinstance(cfg.protocol.max_train, dict) else (), "protocol.max_train",
                    source)
    caps: dict[str, tuple[str, int | None]] = {}  # training task -> (first grid task, its cap)
    for task in cfg.grid.task:
        if task not in TASKS:
            continue
        train_task, cap = TASKS[task].training_task, cfg.protocol.train_cap(task)
        if train_task in caps and caps[train_task][1] != cap:
            raise ConfigError(f"{source}: protocol.max_train: {caps[train_task][0]} ({caps[train_task][1]}) and {task} "
                              f"({cap}) train one {train_task} checkpoint and need the same cap")
        caps.setdefault(train_task, (task, cap))
    check_task_keys(cfg.task_train, "task_train", source)
    for task, over in cfg.task_train.items():
        if not isinstance(over, dict):
            raise ConfigError(f"{source}: task_train.{task} must be a mapping of train settings, got {over!r}")
        try:
            cfg.train_for(task)
        except ValidationError as exc:
            raise ConfigError(_format_validation(exc, f"{source}: task_train.{task}", TrainConfig)) from None
    check_search_and_recipes(cfg, source)
    check_robustness(cfg, source)
    check_task_keys(cfg.languages, "languages", source)
    for task, langs in cfg.languages.items():
        for lang in langs:
            if lang not in TASKS[task].languages:
                raise ConfigError(f"{source}: languages.{task} has '{lang}', which task '{task}' lacks; "
                                  f"its languages: {', '.join(TASKS[task].languages)}")


def check_robustness(cfg: RunConfig, source: str) -> None:
    """``evaluate.robustness_*``: per-task strength mappings name registered tasks and set every pair-classification
    task of the grid (the attacks of xltlib.evaluation.robustness); the synonym table can be found."""
    ev = cfg.evaluate
    for key in ("robustness_pgd_eps", "robustness_noise_sigma"):
        check_task_keys(getattr(ev, key) if isinstance(getattr(ev, key), dict) else (), f"evaluate.{key}", source)
    if not ev.robustness:
        return
    for task in cfg.grid.task:
        if task in TASKS and TASKS[task].kind == "pair_classification":
            try:
                ev.robustness_strengths(task)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
    if ev.robustness_synonyms:
        if not Path(ev.robustness_synonyms).expanduser().is_file():
            raise ConfigError(f"{source}: evaluate.robustness_synonyms = {ev.robustness_synonyms!r}: no such file "
                              "(expected a JSON synonym table, word -> neighbours)")
        return
    data = cfg.resolved_data_dir()
    if cfg.smoke:
        return  # a smoke run writes its tiny data, synonym table included, when it starts
    if data is None:
        raise ConfigError(f"{source}: evaluate.robustness needs a synonym table: set evaluate.robustness_synonyms "
                          f"(or data_dir, whose {SYNONYM_TABLE} is the default)")
    if data.is_dir() and not (data / SYNONYM_TABLE).is_file():
        raise ConfigError(f"{source}: evaluate.robustness: the default synonym table {data / SYNONYM_TABLE} does "
                          "not exist; set evaluate.robustness_synonyms to a JSON table (word -> neighbours)")


def check_search_and_recipes(cfg: RunConfig, source: str) -> None:
    """``search``: train settings with a non-empty list of values each; ``recipes``: per training task and method
    entry (those outside the grid are kept, unused), train settings that validate; ``recipes_required``: training
    tasks whose every method of the grid has a recipe, when the grid trains them."""
    for key, values in cfg.search.items():
        if key not in TrainConfig.model_fields:
            raise ConfigError(f"{source}: search.{key}: not a train setting; train settings: "
                              f"{', '.join(TrainConfig.model_fields)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: search.{key} = {values!r}: expected a non-empty list of values to try")
        for value in values:
            try:
                TrainConfig.model_validate({**cfg.train.model_dump(), key: value})
            except ValidationError as exc:
                raise ConfigError(_format_validation(exc, f"{source}: search.{key}", TrainConfig)) from None
    training_tasks = {TASKS[t].training_task for t in cfg.grid.task if t in TASKS}
    # a recipe or a required task outside the grid is kept, unused: `--set grid.task=[xnli]` runs a subset of a
    # study; only a name that is no training task or method at all (a typo) is an error
    known_tasks = {task.training_task for task in TASKS.values()}
    for task, by_method in cfg.recipes.items():
        if task not in training_tasks and task not in known_tasks:
            raise ConfigError(f"{source}: recipes.{task}: not a training task of grid.task "
                              f"({', '.join(sorted(training_tasks))}) nor of any registered task")
        if not isinstance(by_method, dict):
            raise ConfigError(f"{source}: recipes.{task} must map method entries to train settings, got {by_method!r}")
        for method, over in by_method.items():
            if not is_method_entry(cfg, method):
                raise ConfigError(f"{source}: recipes.{task}.{method}: not a method of grid.method "
                                  f"({', '.join(cfg.grid.method)}), an entry of methods or a registered method")
            if not isinstance(over, dict):
                raise ConfigError(f"{source}: recipes.{task}.{method} must be a mapping of train settings, got {over!r}")
            try:
                cfg.train_for(task, method)
            except ValidationError as exc:
                raise ConfigError(_format_validation(exc, f"{source}: recipes.{task}.{method}", TrainConfig)) from None
    for task in cfg.recipes_required:
        if task not in known_tasks:
            raise ConfigError(f"{source}: recipes_required: {task!r} is not a training task of any registered "
                              f"task (grid.task trains {', '.join(sorted(training_tasks))})")
        if task not in training_tasks:
            continue
        missing = [m for m in cfg.grid.method if m not in cfg.recipes.get(task, {})]
        if missing:
            raise ConfigError(f"{source}: recipes.{task} has no recipe for {', '.join(missing)}, and recipes_required "
                              f"names {task}: write the search's choice into the params file first (`xlt recipes "
                              f"RUN --ledger docs/results/recipe-search.csv --params params/recipe-search.yaml "
                              f"--write-recipes {source}`, docs/recipes.md)")
