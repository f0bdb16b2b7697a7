"""Tests for xltlib.config: typed params, error messages, --set overrides, grid expansion."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from xltlib.config.schema import ConfigError, GridConfig, RunConfig, TrainConfig, dump_config
from xltlib.config.grid import Cell, cell_id, expand_grid
from xltlib.config.validate import load_config
from xltlib.training.objectives import OBJECTIVES
from xltlib.data.tasks import TASKS

from conftest import real_data_dir

PARAMS_DIR = Path(__file__).resolve().parents[1] / "params"


def write_yaml(tmp_path: Path, data, name: str = "params.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


# ----------------------------------------------------------------------------- loading
def test_defaults_load():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.grid.model == ["me5-small"] and cfg.grid.task == ["xnli"]
    assert cfg.grid.method == ["baseline"] and cfg.grid.seed == [1]
    assert cfg.protocol.name == "zero_shot" and cfg.protocol.train_fraction == 0.5
    assert cfg.train.epochs == 3.0 and cfg.train.batch_size == 32 and cfg.train.pooling == "mean"
    assert cfg.methods == {} and cfg.languages == {} and cfg.smoke is False
    # the dumped defaults are valid params again
    assert load_config(**yaml.safe_load(dump_config(cfg))) == cfg


def test_yaml_file_loads(tmp_path):
    p = write_yaml(tmp_path, {
        "name": "mine",
        "grid": {"model": ["tiny-random"], "task": ["xnli", "pawsx"], "method": ["baseline", "pgd_small"],
                 "seed": [3, 4]},
        "methods": {"pgd_small": {"type": "pgd", "eps": 0.5, "steps": 2}},
        "protocol": {"train_fraction": 0.25, "max_train": 100},
        "train": {"epochs": 1, "lr": 1e-4, "bf16": False},
        "languages": {"xnli": ["en", "de"]},
    })
    cfg = load_config(p)
    assert cfg.name == "mine"
    assert cfg.grid.task == ["xnli", "pawsx"] and cfg.grid.seed == [3, 4]
    assert cfg.protocol.train_fraction == 0.25 and cfg.protocol.max_train == 100
    assert cfg.train.epochs == 1.0 and cfg.train.lr == 1e-4 and cfg.train.bf16 is False
    assert cfg.train.batch_size == TrainConfig().batch_size  # untouched keys keep their defaults
    assert cfg.languages == {"xnli": ["en", "de"]}
    assert cfg.method_spec("pgd_small") == ("pgd", {"eps": 0.5, "steps": 2})
    assert cfg.method_spec("baseline") == ("baseline", {})
    assert cfg.methods["pgd_small"]["type"] == "pgd"  # method_spec does not mutate the config


def test_empty_yaml_is_defaults(tmp_path):
    assert load_config(write_yaml(tmp_path, "")) == load_config()


def test_params_file_missing_names_path(tmp_path):
    missing = tmp_path / "nope" / "params.yaml"
    msg = config_error(missing)
    assert str(missing) in msg and "does not exist" in msg


def test_invalid_yaml_and_non_mapping(tmp_path):
    bad = write_yaml(tmp_path, "grid: [unclosed\n", "bad.yaml")
    assert "not valid YAML" in config_error(bad) and str(bad) in config_error(bad)
    lst = write_yaml(tmp_path, "- a\n- b\n", "list.yaml")
    msg = config_error(lst)
    assert str(lst) in msg and "mapping" in msg and "list" in msg


# ------------------------------------------------------------------------------ errors
def test_unknown_top_level_key_lists_valid_keys(tmp_path):
    p = write_yaml(tmp_path, {"epochs": 3})
    msg = config_error(p)
    assert str(p) in msg
    assert "unknown key 'epochs'" in msg
    for key in RunConfig.model_fields:
        assert key in msg


def test_unknown_nested_key_lists_section_keys():
    msg = config_error(train={"epoch": 1})
    assert "unknown key 'train.epoch'" in msg
    valid_line = next(line for line in msg.splitlines() if "train.epoch" in line)
    for key in TrainConfig.model_fields:
        assert key in valid_line
    assert "grid" not in valid_line  # the keys of the section, not the top level

    msg = config_error(grid={"models": ["me5-small"]})
    assert "unknown key 'grid.models'" in msg
    assert all(k in msg for k in GridConfig.model_fields)


def test_wrong_type_names_key_and_value():
    msg = config_error(train={"epochs": "many"})
    assert "train.epochs" in msg and "'many'" in msg
    msg = config_error(grid={"seed": "one"})
    assert "grid.seed" in msg and "'one'" in msg


@pytest.mark.parametrize("section,key,value", [
    ("protocol", "train_fraction", 1.5),
    ("protocol", "train_fraction", 0),
    ("train", "batch_size", 0),
    ("train", "epochs", -1),
    ("protocol", "max_eval", 0),
])
def test_out_of_range_names_key_and_value(section, key, value):
    msg = config_error(**{section: {key: value}})
    assert f"{section}.{key}" in msg and repr(value) in msg


def test_bad_protocol_name():
    msg = config_error(protocol={"name": "online"})
    assert "protocol.name" in msg and "'online'" in msg and "offline_dev_split" in msg


def test_method_entry_must_be_mapping():
    msg = config_error(methods={"pgd": 3})
    assert "methods.pgd" in msg


def test_unknown_task_lists_registered_tasks():
    msg = config_error(grid={"task": ["xnlii"]})
    assert "'xnlii'" in msg and "registered" in msg
    for t in TASKS:
        assert t in msg


def test_unknown_method_lists_registered_methods():
    msg = config_error(grid={"method": ["advtrain"]})
    assert "'advtrain'" in msg and "registered" in msg
    for m in OBJECTIVES:
        assert m in msg
    # an entry whose `type` is unknown
    msg = config_error(grid={"method": ["mine"]}, methods={"mine": {"type": "nope"}})
    assert "'mine'" in msg and "'nope'" in msg and "pgd" in msg


def test_unknown_alignment_metric_lists_registered():
    msg = config_error(alignment={"metrics": ["retrival"]})
    assert "'retrival'" in msg and "retrieval" in msg and "cka" in msg


def test_bad_method_hyperparameter_names_it():
    msg = config_error(grid={"method": ["pgd"]}, methods={"pgd": {"eps": -1}})
    assert "methods.pgd.eps" in msg and "-1" in msg
    msg = config_error(grid={"method": ["pgd"]}, methods={"pgd": {"epsilon": 1.0}})
    assert "epsilon" in msg and "eps" in msg  # unknown hyperparameter: lists the known ones


def test_bad_method_hyperparameter_from_yaml(tmp_path):
    p = write_yaml(tmp_path, {"grid": {"method": ["baseline", "pgd"]}, "methods": {"pgd": {"eps": -1}}})
    msg = config_error(p)
    assert str(p) in msg and "eps" in msg


def test_bad_hyperparameter_of_unused_method_entry_is_rejected():
    with pytest.raises(ConfigError, match="eps"):
        load_config(methods={"pgd": {"eps": -1}})


def test_bad_language_lists_task_languages():
    msg = config_error(languages={"xnli": ["xx"]})
    assert "'xx'" in msg and "xnli" in msg
    for lang in TASKS["xnli"].languages:
        assert lang in msg
    msg = config_error(languages={"xnlii": ["en"]})
    assert "xnlii" in msg and "registered" in msg


# --------------------------------------------------------------------------- overrides
def test_set_overrides_applied(tmp_path):
    p = write_yaml(tmp_path, {"train": {"epochs": 3, "lr": 1e-4}, "grid": {"seed": [7]}})
    cfg = load_config(p, ["train.epochs=1", "grid.seed=[1,2]", "protocol.max_train=50", "name=over"])
    assert cfg.train.epochs == 1.0
    assert cfg.train.lr == 1e-4  # siblings from the file are kept
    assert cfg.grid.seed == [1, 2]
    assert cfg.protocol.max_train == 50
    assert cfg.name == "over"


def test_set_overrides_without_file():
    cfg = load_config(None, ("train.bf16=false", "grid.task=[xnli, pawsx]", "evaluate.generalized=true"))
    assert cfg.train.bf16 is False and cfg.grid.task == ["xnli", "pawsx"] and cfg.evaluate.generalized is True


def test_set_override_is_validated():
    msg = config_error(None, ["train.epochs=many"])
    assert "train.epochs" in msg and "--set" in msg
    msg = config_error(None, ["train.epoch=1"])
    assert "unknown key 'train.epoch'" in msg
    msg = config_error(None, ["grid.task=[nope]"])
    assert "'nope'" in msg


def test_malformed_set_errors():
    msg = config_error(None, ["train.epochs"])
    assert "train.epochs" in msg and "key=value" in msg


def test_set_into_non_section_errors(tmp_path):
    p = write_yaml(tmp_path, {"name": "x"})
    msg = config_error(p, ["name.first=1"])
    assert "name" in msg and "not a section" in msg


# ------------------------------------------------------------------------- grid cells
def test_expand_grid_product_and_stable_ids():
    overrides = ["grid.model=[me5-small, org/some-model]", "grid.task=[xnli, pawsx]",
                 "grid.method=[baseline, pgd, small]", "grid.seed=[1, 2]"]
    cfg = load_config(None, overrides, methods={"small": {"type": "pgd", "eps": 0.1}})
    cells = expand_grid(cfg)
    assert len(cells) == 2 * 2 * 3 * 2
    ids = [c.cell_id for c in cells]
    assert len(set(ids)) == len(ids)
    assert ids == [c.cell_id for c in expand_grid(load_config(None, overrides,
                                                               methods={"small": {"type": "pgd", "eps": 0.1}}))]
    first = cells[0]
    assert first == Cell(cell_id="me5-small__xnli__baseline__s1", model="me5-small", task="xnli",
                         method="baseline", method_type="baseline", method_params={}, seed=1,
                         checkpoint="me5-small__xnli__baseline__s1")
    small = next(c for c in cells if c.method == "small" and c.model == "org/some-model")
    assert small.method_type == "pgd" and small.method_params == {"eps": 0.1}
    assert "/" not in small.cell_id and small.cell_id.startswith("org--some-model__")
    assert cell_id("org/some-model", "pawsx", "small", 2) == "org--some-model__pawsx__small__s2"
    assert {(c.model, c.task, c.method, c.seed) for c in cells} == {
        (m, t, me, s) for m in ("me5-small", "org/some-model") for t in ("xnli", "pawsx")
        for me in ("baseline", "pgd", "small") for s in (1, 2)}


def test_cells_are_frozen_and_hashable_with_their_hyperparameters_a_dict():
    cfg = load_config(None, ["grid.method=[small]", "grid.seed=[1, 2]"], methods={"small": {"type": "pgd", "eps": 0.1}})
    cells = expand_grid(cfg)
    assert len(set(cells)) == len(cells) == 2 and {cells[0]: 1}[expand_grid(cfg)[0]] == 1  # set members, dict keys
    with pytest.raises(dataclasses.FrozenInstanceError):
        cells[0].seed = 3
    # the cache keys hash the hyperparameters as the dict they were read as; the cell's hash leaves them out
    # (a value may be a list), its equality does not
    assert type(cells[0].method_params) is dict
    listed = dataclasses.replace(cells[0], method_params={"eps": [0.1, 0.2]})
    assert hash(listed) == hash(cells[0]) and listed != cells[0]


# ------------------------------------------------------------------ shipped params files
def _params_files():
    return sorted(PARAMS_DIR.glob("*.yaml"))


def _needs_data(path: Path) -> bool:
    data = yaml.safe_load(path.read_text()) or {}
    grid_methods = (data.get("grid") or {}).get("method") or []
    types = {((data.get("methods") or {}).get(m) or {}).get("type", m) for m in grid_methods}
    return "rs_da" in types and not data.get("smoke") and not data.get("data_dir")


def test_params_folder_has_smoke_and_quick():
    names = {p.stem for p in _params_files()}
    assert {"smoke", "quick"} <= names


@pytest.mark.parametrize("path", _params_files(), ids=lambda p: p.name)
def test_shipped_params_validate(path, monkeypatch, tmp_path):
    if _needs_data(path):
        d = real_data_dir()
        if d is None:
            pytest.skip(f"{path.name} uses rs_da, which needs the synonym table of the real data folder")
        monkeypatch.setenv("XLT_DATA_DIR", str(d))
    data = yaml.safe_load(path.read_text())
    missing = {t: [m for m in data["grid"]["method"] if m not in (data.get("recipes") or {}).get(t, {})]
               for t in data.get("recipes_required", [])}
    if any(missing.values()):  # a study whose recipes the search has not chosen yet refuses to start ...
        with pytest.raises(ConfigError, match=r"recipes\.\w+ has no recipe for .*recipes_required"):
            load_config(path)
        # ... and validates otherwise (any rate stands in for the missing recipes here)
        data["recipes"] = {t: {m: {"lr": 1.0e-4} for m in data["grid"]["method"]} | (data.get("recipes") or {}).get(t, {})
                           for t in data["recipes_required"]}
        path = tmp_path / path.name
        path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert cfg.name == path.stem
    cells = expand_grid(cfg)
    settings = int(np.prod([len(v) for v in cfg.search.values()])) if cfg.search else 1
    per_task = [len(cfg.grid.task_seeds.get(t, cfg.grid.seed))
                * (len(cfg.grid.method) - len(set(cfg.grid.exclude.get(t, ())) & set(cfg.grid.method)))
                for t in cfg.grid.task]
    assert len(cells) == len(cfg.grid.model) * sum(per_task) * settings


def test_grid_exclude_leaves_cells_out_of_the_product_at_every_searched_setting(tmp_path):
    p = write_yaml(tmp_path, "grid: {task: [pawsx, xnli], method: [baseline, strong], exclude: {pawsx: [strong]}}\n"
                             "methods: {strong: {type: pgd, eps: 0.1}}\nsearch: {lr: [1.0e-4, 2.0e-5]}\n")
    cells = expand_grid(load_config(p))
    assert [(c.task, c.method) for c in cells] == [
        ("pawsx", "baseline@lr=0.0001"), ("pawsx", "baseline@lr=2e-05"),
        ("xnli", "baseline@lr=0.0001"), ("xnli", "strong@lr=0.0001"),
        ("xnli", "baseline@lr=2e-05"), ("xnli", "strong@lr=2e-05")]
    # a subset of the grid (one task, one method) keeps the exclusion valid: names are checked against registries
    assert [c.method for c in expand_grid(load_config(p, ["grid.task=[xnli]", "grid.method=[baseline]"]))] == [
        "baseline@lr=0.0001", "baseline@lr=2e-05"]
    assert expand_grid(load_config(p, ["grid.task=[pawsx]", "grid.method=[strong]"])) == []


def test_grid_task_seeds_train_a_task_at_its_own_seeds(tmp_path):
    p = write_yaml(tmp_path, "grid: {task: [xnli, panx], method: [baseline, pgd], seed: [3, 1, 2], "
                             "task_seeds: {panx: [1]}}\n")
    cells = expand_grid(load_config(p))
    # seed by seed, in the params' order of seeds, tasks and methods: a run over sessions has whole replicates early
    assert [(c.task, c.method, c.seed) for c in cells] == [
        ("xnli", "baseline", 3), ("xnli", "pgd", 3), ("xnli", "baseline", 1), ("xnli", "pgd", 1),
        ("panx", "baseline", 1), ("panx", "pgd", 1), ("xnli", "baseline", 2), ("xnli", "pgd", 2)]
    # a seed of its own, outside grid.seed, is trained too; a task not in grid.task is not trained at all
    assert [c.seed for c in expand_grid(load_config(p, ["grid.task_seeds={panx: [7], pawsx: [1]}"]))
            if c.task == "panx"] == [7, 7]


@pytest.mark.parametrize("task_seeds, words", [("{pan_x: [1]}", ["grid.task_seeds.pan_x", "registered"]),
                                               ("{panx: []}", ["grid.task_seeds.panx", "non-empty"])])
def test_grid_task_seeds_names_a_task_that_does_not_exist_or_no_seed(tmp_path, task_seeds, words):
    msg = config_error(write_yaml(tmp_path, f"grid: {{task: [panx], task_seeds: {task_seeds}}}\n"))
    assert all(w in msg for w in words), msg


@pytest.mark.parametrize("exclude, words", [("{pawsx_typo: [baseline]}", ["grid.exclude.pawsx_typo", "registered"]),
                                            ("{pawsx: [stronk]}", ["grid.exclude.pawsx", "'stronk'", "strong"])])
def test_grid_exclude_names_a_task_or_method_that_does_not_exist(tmp_path, exclude, words):
    p = write_yaml(tmp_path, f"grid: {{task: [pawsx], method: [baseline, strong], exclude: {exclude}}}\n"
                             "methods: {strong: {type: pgd, eps: 0.1}}\n")
    msg = config_error(p)
    assert all(w in msg for w in words), msg


def test_search_expands_every_method_at_every_setting(tmp_path):
    p = write_yaml(tmp_path, "grid: {task: [pawsx], method: [baseline, pgd]}\n"
                             "search: {lr: [1.0e-4, 2.0e-5]}\n")
    cfg = load_config(p)
    cells = expand_grid(cfg)
    assert [c.method for c in cells] == ["baseline@lr=0.0001", "pgd@lr=0.0001", "baseline@lr=2e-05", "pgd@lr=2e-05"]
    assert [c.method_type for c in cells] == ["baseline", "pgd"] * 2
    assert cfg.train_for("pawsx", "pgd@lr=2e-05").lr == 2e-05
    assert cfg.split_entry("pgd@lr=2e-05") == ("pgd", {"lr": 2e-05})


def test_recipes_apply_per_task_and_method(tmp_path):
    p = write_yaml(tmp_path, "grid: {task: [pawsx, xnli], method: [baseline, pgd]}\ntrain: {lr: 1.0e-4}\n"
                             "task_train: {pawsx: {epochs: 3}}\nrecipes: {pawsx: {pgd: {lr: 5.0e-5}}}\n")
    cfg = load_config(p)
    assert cfg.train_for("pawsx", "pgd").lr == 5e-05 and cfg.train_for("pawsx", "pgd").epochs == 3
    assert cfg.train_for("pawsx", "baseline").lr == 1e-4 and cfg.train_for("xnli", "pgd").lr == 1e-4


@pytest.mark.parametrize("text,match", [
    ("grid: {method: [baseline]}\nsearch: {lr: []}\n", "search.lr"),
    ("grid: {method: [baseline]}\nsearch: {learning_rate: [1.0e-4]}\n", "search.learning_rate: not a train setting"),
    ("grid: {method: [baseline]}\nsearch: {lr: [-1]}\n", "search.lr"),
    ("grid: {task: [xnli], method: [baseline]}\nrecipes: {xnli: {pdg: {lr: 5.0e-5}}}\n",
     "recipes.xnli.pdg: not a method of grid.method"),
    ("grid: {task: [xnli], method: [baseline]}\nrecipes: {pawx: {baseline: {lr: 5.0e-5}}}\n",
     "recipes.pawx: not a training task"),
    ("grid: {task: [xnli], method: [baseline]}\nrecipes_required: [pawx]\n", "recipes_required: 'pawx'"),
    ("grid: {task: [xnli], method: [baseline]}\nrecipes: {xnli: {baseline: {lr: 0}}}\n", "recipes.xnli.baseline"),
])
def test_bad_search_or_recipes_name_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write_yaml(tmp_path, text))


def test_a_grid_subset_keeps_the_recipes_it_does_not_train(tmp_path):
    # `--set grid.task=[xnli]` or `grid.method=[baseline]` on a study runs part of it: the other recipes stay unused,
    # and a required task the subset does not train is not asked for
    p = write_yaml(tmp_path, "grid: {task: [xnli, pawsx], method: [baseline, pgd]}\nmethods: {pgd_r01: {type: pgd}}\n"
                             "recipes: {xnli: {baseline: {lr: 5.0e-5}, pgd: {lr: 1.0e-4}}, pawsx: {baseline: "
                             "{lr: 2.0e-5}, pgd_r01: {lr: 2.0e-5}}}\nrecipes_required: [xnli, pawsx]\n")
    with pytest.raises(ConfigError, match=r"recipes\.pawsx has no recipe for pgd"):
        load_config(p)
    cfg = load_config(p, ["grid.task=[xnli]"])
    assert cfg.train_for("xnli", "baseline").lr == 5e-05 and cfg.train_for("xnli", "pgd").lr == 1e-4
    assert load_config(p, ["grid.method=[baseline]"]).train_for("pawsx", "baseline").lr == 2e-05


def test_exponent_without_dot_in_method_hyperparameter(tmp_path):
    p = write_yaml(tmp_path, "grid: {method: [pgd]}\nmethods:\n  pgd: {eps: 1e-3}\n")
    assert load_config(p).method_spec("pgd") == ("pgd", {"eps": 1e-3})


def test_exponent_without_dot_in_typed_field(tmp_path):
    # the same YAML 1.1 quirk is harmless in typed fields: pydantic parses the string
    assert load_config(write_yaml(tmp_path, "train: {lr: 1e-4}\n")).train.lr == 1e-4
    assert load_config(None, ["train.lr=1e-4"]).train.lr == 1e-4


def test_per_task_train_overrides_are_validated_and_applied():
    cfg = load_config(None, ["task_train={pawsx: {epochs: 3, lr: 5.0e-5}}", "train.epochs=2"])
    assert cfg.train_for("pawsx").epochs == 3 and cfg.train_for("pawsx").lr == 5e-5
    assert cfg.train_for("xnli").epochs == 2
    with pytest.raises(ConfigError, match=r"(?s)task_train.pawsx.*unknown key 'epoch'"):
        load_config(None, ["task_train={pawsx: {epoch: 3}}"])
    with pytest.raises(ConfigError, match=r"task_train.nope: not a registered task"):
        load_config(None, ["task_train={nope: {epochs: 3}}"])


def test_max_train_per_task():
    cfg = load_config(None, ["protocol.max_train={panx: 5000, udpos: null}"])
    assert cfg.protocol.train_cap("panx") == 5000 and cfg.protocol.train_cap("udpos") is None
    assert cfg.protocol.train_cap("xnli") is None  # not in the mapping: not capped
    assert load_config(None, ["protocol.max_train=300"]).protocol.train_cap("xnli") == 300
    with pytest.raises(ConfigError, match=r"protocol.max_train.nope: not a registered task"):
        load_config(None, ["protocol.max_train={nope: 10}"])
    with pytest.raises(ConfigError, match=r"max_train.panx must be at least 1"):
        load_config(None, ["protocol.max_train={panx: 0}"])


def test_max_train_follows_the_shared_training_task():

    cfg = load_config(None, ["grid.task=[xquad,mlqa]", "protocol.max_train={tydiqa: 2000}"])
    assert cfg.protocol.train_cap("xquad") == cfg.protocol.train_cap("mlqa") == 2000
    with pytest.raises(ConfigError, match=r"xquad \(100\) and mlqa \(None\) train one tydiqa checkpoint"):
        load_config(None, ["grid.task=[xquad,mlqa]", "protocol.max_train={xquad: 100}"])


# ------------------------------------------------- every grid method checked before the first notebook
SMOKE = PARAMS_DIR / "smoke.yaml"


def synonym_data_dir(tmp_path: Path) -> Path:
    """A data folder holding only the default synonym table, so that RS-DA entries build."""
    table = tmp_path / "data" / "synonyms" / "counterfitted_neighbors.json"
    table.parent.mkdir(parents=True)
    table.write_text('{"good": ["fine", "nice"]}')
    return tmp_path / "data"


def test_smoke_rs_da_validates_with_its_defaults_before_its_synonym_table_exists(monkeypatch):
    monkeypatch.delenv("XLT_DATA_DIR", raising=False)  # the table a smoke run writes at run time: nowhere yet
    cfg = load_config(SMOKE)
    assert "rs_da" in cfg.grid.method and "rs_da" not in cfg.methods


def test_bad_hyperparameter_of_a_method_entry_names_key_and_value(tmp_path, monkeypatch):
    monkeypatch.delenv("XLT_DATA_DIR", raising=False)
    smoke = yaml.safe_load(SMOKE.read_text())
    smoke["methods"]["rs_da"] = {"lookup": "fuzzy_bogus"}
    p = write_yaml(tmp_path, smoke, "smoke-entry.yaml")
    msg = config_error(p)
    assert str(p) in msg and "methods.rs_da.lookup = 'fuzzy_bogus'" in msg and "'exact' | 'normalized'" in msg
    # a named RS-DA variant of a smoke run
    msg = config_error(SMOKE, ["grid.method=[syn]"], methods={"syn": {"type": "rs_da", "copies": 0}})
    assert "methods.syn.copies = 0" in msg and "'fresh', 'reference' or an integer >= 1" in msg
    # a run that reads its table: the entry is built, with the same message
    msg = config_error(None, ["grid.method=[rs_da]"], data_dir=str(synonym_data_dir(tmp_path)),
                       methods={"rs_da": {"lookup": "fuzzy_bogus"}})
    assert "methods.rs_da.lookup = 'fuzzy_bogus'" in msg


def test_grid_method_without_an_entry_is_built_with_its_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("XLT_DATA_DIR", raising=False)
    cfg = load_config(None, ["grid.method=[freelb, rs_rp]"])
    assert cfg.methods == {}
    # RS-DA's default table lives in the data folder: without one, the run stops here, not in training
    msg = config_error(None, ["grid.method=[rs_da]"])
    assert "methods.rs_da.synonyms = None" in msg and "no data_dir" in msg
    missing = tmp_path / "empty"
    missing.mkdir()
    msg = config_error(None, ["grid.method=[rs_da]"], data_dir=str(missing))
    assert "methods.rs_da.synonyms = None" in msg and "counterfitted_neighbors.json" in msg
    assert load_config(None, ["grid.method=[rs_da]"], data_dir=str(synonym_data_dir(tmp_path))).methods == {}


def test_method_entry_created_by_set_is_checked(monkeypatch):
    monkeypatch.delenv("XLT_DATA_DIR", raising=False)
    assert "rs_da" not in load_config(SMOKE).methods  # smoke.yaml has no rs_da entry: --set creates it
    msg = config_error(SMOKE, ["methods.rs_da.lookup=fuzzy_bogus"])
    assert f"{SMOKE} (with --set overrides)" in msg and "methods.rs_da.lookup = 'fuzzy_bogus'" in msg
    msg = config_error(SMOKE, ["methods.rs_da.lokup=exact"])  # a misspelt key lists the real ones
    assert "methods.rs_da.lokup = 'exact'" in msg and "copies, languages, lookup" in msg
    msg = config_error(SMOKE, ["grid.method=[freelb]", "methods.freelb.adv_steps=0"])
    assert "methods.freelb.adv_steps = 0" in msg and "an integer >= 1" in msg


def test_rs_da_reference_schedule_is_checked_against_the_grid_tasks(tmp_path):
    data = str(synonym_data_dir(tmp_path))
    cfg = load_config(None, ["grid.method=[rs_da]", "grid.task=[xnli, pawsx]", "methods.rs_da.copies=reference"],
                      data_dir=data)
    assert cfg.method_spec("rs_da") == ("rs_da", {"copies": "reference"})
    msg = config_error(None, ["grid.method=[rs_da]", "grid.task=[xnli, xcopa]", "methods.rs_da.copies=reference"],
                       data_dir=data)
    assert "methods.rs_da.copies = 'reference'" in msg and "'xcopa'" in msg


def test_a_data_folder_that_does_not_exist_is_named_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="nowhere.*does not exist"):
        load_config(PARAMS_DIR / "quick.yaml")
