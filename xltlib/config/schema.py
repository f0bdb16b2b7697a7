"""Typed run configuration loaded from a params YAML, and its grid expansion.

Every key has a typed default with a one-line comment (nanoGPT style); unknown
keys and values of the wrong type are errors that name the file, the key, the
value and what is allowed."""
from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xltlib.data.languages import resource_table, to_iso1
from xltlib.data.tasks import get_task

CC100 = "cc100"  # alignment.languages: every Tatoeba language with a CC-100 size


def tatoeba_cc100_languages() -> list[str]:
    """The Tatoeba language codes (as the task names them) whose language has a CC-100 size in the language table."""
    sizes = resource_table()["size_gib"]

    def size(code: str) -> float:
        try:
            return float(sizes.get(to_iso1(code), float("nan")))
        except ValueError:  # a Tatoeba language the table does not list
            return float("nan")

    return [c for c in get_task("tatoeba").languages if size(c) > 0]


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message names what and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GridConfig(_Strict):
    model: list[str] = ["me5-small"]  # hub names, local paths, or the offline 'me5-small'
    task: list[str] = ["xnli"]  # names from the task registry (xlt list-tasks)
    method: list[str] = ["baseline"]  # entries of `methods` (or registered objective names)
    seed: list[int] = [1]  # training seeds; every cell is seeded and the seed recorded
    # cells left out of the cross product, per task: {pawsx: [pgd_r10]} (e.g. a search arm already ruled out on
    # another task); names are checked against the registries, not the grid, so `--set grid.task=[...]` subsets work
    exclude: dict[str, list[str]] = {}
    # a task trained at other seeds than grid.seed: {panx: [1]} (a task the budget runs at fewer seeds)
    task_seeds: dict[str, list[int]] = {}


class ProtocolConfig(_Strict):
    # 'zero_shot' (XTREME's): train on the task's English training sets, score every language's labelled
    # test split (XNLI, PAWS-X); no training row's translation is scored (xltlib.data.split).
    # 'offline_dev_split': for data folders without labelled test sets: train on part of English dev, score
    # the rest in every language (split by XNLI premise block / PAWS-X shared-sentence group).
    name: Literal["zero_shot", "offline_dev_split"] = "zero_shot"
    train_sets: dict[str, list[str]] = {}  # per task, registered training sets (`xlt list train-sets`); default per task
    train_fraction: float = Field(0.5, gt=0, lt=1)  # offline_dev_split: share of English dev groups used for training
    split_seed: int = 0  # seed of the row samples (fixed across the grid so every cell sees the same rows)
    # cap on training examples (a fixed random sample): one number for every task, or per task ({panx: 5000});
    # a task missing from the mapping is not capped
    max_train: int | dict[str, int | None] | None = None
    max_eval: int | None = Field(None, ge=1)  # cap on scored examples per language (the same rows everywhere)
    # keep the epoch whose English *selection* score is best, on rows neither trained on nor scored
    # (xltlib.data.split.SELECTION: PAWS-X English dev; otherwise selection_fraction of the training groups held out)
    selection: bool = False
    selection_fraction: float = Field(0.1, gt=0, lt=1)  # share of training groups held out for selection
    max_select: int | None = Field(500, ge=1)  # cap on selection rows (evaluated after every epoch)

    @field_validator("max_train")
    @classmethod
    def _positive_caps(cls, v):
        for key, cap in (v.items() if isinstance(v, dict) else [("", v)]):
            if cap is not None and cap < 1:
                raise ValueError(f"max_train{'.' + key if key else ''} must be at least 1 (or null), got {cap}")
        return v

    def train_cap(self, task: str) -> int | None:
        """The training-example cap of one task (``max_train``, per task when it is a mapping: the task's own key,
        else its training task's, e.g. ``tydiqa`` for XQuAD and MLQA, which share one checkpoint)."""
        if not isinstance(self.max_train, dict):
            return self.max_train

        return self.max_train.get(task, self.max_train.get(get_task(task).training_task))


class TrainConfig(_Strict):
    epochs: float = Field(3.0, gt=0)  # passes over the training examples
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0)  # AdamW peak learning rate (linear warm-up then decay); small data, small model
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_length: int = Field(128, ge=8)  # tokens per (pair) example
    bf16: bool = True  # bf16 compute on the CPU (about 4x a fp32 matmul with AVX-512 bf16 / AMX)
    bf16_weights: bool = True  # with bf16: bf16 weights + fp32 master copies (xltlib.training.precision); false = autocast
    freeze_embeddings: bool = True  # keep the 96M-parameter word-embedding table fixed (see docs)
    pooling: Literal["mean", "cls"] = "mean"  # classification head input: mean of token states (E5's pooling) or <s>
    fast_dropout: bool = True  # byte-mask dropout (xltlib.training.dropout): same expectation, ~1.5x faster steps on CPU; false = exact Bernoulli masks
    diagnostics: bool = True  # per-step clean loss and loss gap in the train log (one extra no-grad forward for pgd/freelb/rs_rp)
    threads: int | None = Field(None, ge=1)  # torch CPU threads of every stage (None = all cores)
    # the first k epochs train with plain cross-entropy on the clean text, whatever the method (no perturbation, no
    # synonym rewrite): a robust objective then starts from a model off the majority plateau. The best epoch is
    # chosen among the later ones only, so a robust checkpoint is never a clean one (docs/recipes.md). A method's
    # own adv_begin_iter (PGD, FreeLB) counts its updates from the end of the clean epochs
    clean_epochs: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _robust_epochs_remain(self):
        if self.clean_epochs and self.clean_epochs >= math.ceil(self.epochs):
            raise ValueError(f"clean_epochs = {self.clean_epochs} leaves no robust epoch of epochs = {self.epochs}: "
                             f"expected clean_epochs < epochs")
        return self


class EvalConfig(_Strict):
    batch_size: int = Field(128, ge=1)
    generalized: bool = False  # also score pairs whose two sentences are in different languages
    generalized_languages: list[str] | None = None  # languages crossed in generalized pairs (None = all of the task's)
    generalized_max_rows: int | None = Field(None, ge=1)  # evaluation rows per pair (the first k held-out rows)
    bootstrap: int = Field(1000, ge=100)  # resamples for per-language accuracy CIs
    robustness: bool = False  # also score English test rows under attack (xltlib.evaluation.robustness), alike for every checkpoint
    robustness_max_examples: int = Field(500, ge=1)  # English rows attacked per checkpoint: the first k scored rows
    robustness_attack_steps: int = Field(10, ge=1)  # PGD ascent steps of the attack
    # Attack strengths: the same for every checkpoint of a task, whatever it trained with, in relative units (fractions
    # of the median token-embedding norm per token, `scale: relative` of xltlib.training.objectives.embedding). One list
    # for every task, or one per task ({xnli: [0.02, 0.05], pawsx: [0.05]}): a task the mapping lacks is an error.
    # defaults: spread from a small to a large accuracy drop on mE5-small XNLI checkpoints (benchmarks/README.md,
    # "Robustness attacks")
    robustness_pgd_eps: list[float] | dict[str, list[float]] = [0.01, 0.02, 0.05]  # l2 PGD radius (adversarial)
    robustness_noise_sigma: list[float] | dict[str, list[float]] = [0.3, 1.0]  # Gaussian noise (one draw, not an attack)
    robustness_synonym_queries: int = Field(300, ge=1)  # query budget per row of the greedy synonym-swap attack
    robustness_synonym_max_change: float = Field(0.2, gt=0, le=1)  # share of the attacked words it may swap (at least 1)
    robustness_synonym_sentences: Literal["second", "both"] = "second"  # attacked: the hypothesis / 2nd sentence, or both
    robustness_synonyms: str | None = None  # synonym table (JSON word -> neighbours); None = <data_dir>/synonyms/counterfitted_neighbors.json

    @field_validator("robustness_pgd_eps", "robustness_noise_sigma")
    @classmethod
    def _strength_lists(cls, v, info):
        for task, values in (v.items() if isinstance(v, dict) else [("", v)]):
            key = f"{info.field_name}{'.' + task if task else ''}"
            if not values or any(x <= 0 for x in values) or len(set(values)) < len(values):
                raise ValueError(f"{key} = {values}: expected a non-empty list of distinct strengths > 0")
        return v

    def robustness_strengths(self, task: str) -> dict[str, list[float]]:
        """``{"pgd": eps, "noise": sigma}`` of ``task`` (relative units); ConfigError naming the key whose per-task
        mapping lacks the task."""
        out = {}
        for attack, key in (("pgd", "robustness_pgd_eps"), ("noise", "robustness_noise_sigma")):
            v = getattr(self, key)
            if isinstance(v, dict) and task not in v:
                raise ConfigError(f"evaluate.{key} sets no strength for task '{task}' (it sets {', '.join(v) or 'none'}): "
                                  f"add evaluate.{key}.{task}: [...], or give one list for every task")
            out[attack] = list(v[task] if isinstance(v, dict) else v)
        return out


class AlignmentConfig(_Strict):
    datasets: list[str] = ["tatoeba"]  # parallel data used for alignment (xltlib.data.parallel: tatoeba, xnli, pud, muse)
    # Tatoeba codes (None = every language of the tasks in the grid; 'cc100' = every Tatoeba language with a CC-100
    # size in xltlib.data.languages, RQ2's low-resource languages)
    languages: list[str] | None = None
    metrics: list[str] = ["retrieval"]  # names from the alignment metric registry
    layers: list[int] | None = None  # None = every layer (0 = embedding output)
    pooling: Literal["mean", "cls"] = "mean"
    max_sentences: int | None = Field(1000, ge=10)  # per language (Tatoeba has 1000 per language)
    batch_size: int = Field(128, ge=1)
    max_length: int = Field(64, ge=8)
    include_pretrained: bool = True  # also measure the pre-trained model
    pool: Literal["common", "full"] = "common"  # pair metrics on the smallest language's pool size (seeded subsample)

    @field_validator("languages", mode="before")
    @classmethod
    def _cc100(cls, v):
        if isinstance(v, str):
            if v != CC100:
                raise ValueError(f"expected a list of Tatoeba language codes or '{CC100}' (every Tatoeba language "
                                 f"with a CC-100 size), got '{v}'")
            return tatoeba_cc100_languages()
        return v


class ReportConfig(_Strict):
    class Primary(_Strict):
        """The one confirmatory RQ1 test; everything else is exploratory."""

        metric: str = "retrieval.acc1_en2xx"  # alignment metric row name; en->xx is XTREME's Tatoeba direction
        layer: int | Literal["last"] = "last"  # encoder layer (0 = embeddings) or the last one
        # checkpoint: alignment vs transfer across checkpoints (methods x strengths x seeds) within each language,
        # checkpoint labels permuted; language: across languages' means, languages permuted (xltlib.analysis.rq1)
        unit: Literal["checkpoint", "language"] = "checkpoint"

        @field_validator("metric")
        @classmethod
        def _dotted(cls, v: str) -> str:  # the metric is checked against its registry in config.validate
            if "." not in v:
                raise ValueError(f"'{v}' is not '<metric>.<value>', e.g. retrieval.acc1_en2xx")
            return v

    primary: Primary = Primary()  # declared before the data are seen; tested alone
    correlation_metric: str = "retrieval.acc1_en2xx"  # the alignment measure on the headline scatter
    n_boot: int = Field(2000, ge=100)  # bootstrap resamples for confidence intervals
    n_perm: int = Field(10000, ge=100)  # permutations (raised per family so Holm is not decided by 1/(n_perm+1))
    seed: int = 0


class ExecutorConfig(_Strict):
    # 'local': every notebook in this process's machine, one after another. 'ray': each training cell and each
    # checkpoint's transfer / alignment work is a Ray task running the same stage notebook (xltlib.runner.executors);
    # the run folder must be on a filesystem every worker sees.
    name: str = "local"  # a registered executor (`xlt list executors`)
    # local: notebooks run at once, each kernel with (usable cores // workers) torch threads; 'auto' = every usable
    # core on a CPU-only machine (one-thread cells: 2 at once on 2 cores train ~1.7x the cells per hour), 1 with a GPU
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    address: str | None = None  # ray: None = a local cluster on this machine, 'auto' = the running cluster, 'ray://host:port'
    cell_resources: dict[str, float] = {"num_cpus": 2, "num_gpus": 0}  # ray: resources of each task
    max_retries: int = Field(1, ge=0)  # ray: a failed task is retried this many times, then marked failed
    # local: each checkpoint's transfer scores and alignment right after its training, by the worker that trained
    # it, before the next cell: a run cut off (a session's end, on a machine whose disk does not come back) leaves
    # complete rows for every checkpoint it finished, which a later run on another machine keeps (xltlib.runner.keys).
    # Ray runs the stages one after another as before (its run folder is on a shared disk), and says so
    evaluate_as_trained: bool = False


class RunConfig(_Strict):
    name: str = "run"  # run name; outputs go to outputs/<name> unless --out is given
    data_dir: str | None = None  # XTREME-layout folder; None = $XLT_DATA_DIR, else the Hugging Face hub
    grid: GridConfig = GridConfig()
    # named method entries: {type: pgd, eps: 1.0, ...}; `train:` in an entry overrides train settings for its
    # checkpoints, e.g. {baseline_emb: {type: baseline, train: {freeze_embeddings: false}}} (a control arm)
    methods: dict[str, dict[str, Any]] = {}
    protocol: ProtocolConfig = ProtocolConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvalConfig = EvalConfig()
    languages: dict[str, list[str]] = {}  # per task, the evaluation languages (default: all of the task's)
    task_train: dict[str, dict[str, Any]] = {}  # per training task, TrainConfig overrides, e.g. {pawsx: {epochs: 3}}
    # recipe search: every method of grid.method trains at every combination of these train settings (the same
    # budget for each method), as method entries named '<method>@lr=2e-05'; `xlt recipes RUN` picks the best on
    # English selection data (protocol.selection), e.g. {lr: [2.0e-5, 5.0e-5, 1.0e-4]}
    search: dict[str, list[Any]] = {}
    # the recipe chosen per (training task, method entry), TrainConfig overrides applied after task_train and the
    # method's own `train`, e.g. {pawsx: {pgd: {lr: 5.0e-5}}} (written from `xlt recipes RUN --yaml`)
    recipes: dict[str, dict[str, dict[str, Any]]] = {}
    # training tasks whose every method of the grid must have a `recipes` entry: a study that compares methods
    # refuses to start before the search has chosen theirs (at the baseline's rate, half the robust PAWS-X
    # checkpoints of the first study-lite never learned)
    recipes_required: list[str] = []
    alignment: AlignmentConfig = AlignmentConfig()
    report: ReportConfig = ReportConfig()
    smoke: bool = False  # tiny random model + tiny data made on the fly (tests)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where training and scoring run: auto = CUDA when visible
    executor: ExecutorConfig = ExecutorConfig()  # how grid cells are run: in this process, or as Ray tasks

    @field_validator("methods")
    @classmethod
    def _methods_are_mappings(cls, v):
        for name, entry in v.items():
            if not isinstance(entry, dict):
                raise ValueError(f"methods.{name} must be a mapping of hyperparameters, got {entry!r}")
        return v

    def resolved_data_dir(self) -> Path | None:
        d = self.data_dir or os.environ.get("XLT_DATA_DIR")
        return Path(d).expanduser().resolve() if d else None

    def train_for(self, task: str, method: str | None = None) -> "TrainConfig":
        """The training settings of a checkpoint: ``train``, then the task's ``task_train`` overrides, then the
        method entry's ``train`` overrides, then the (task, method) ``recipes`` entry, then a search entry's values."""
        over = dict(self.task_train.get(task, {}))
        if method:
            base, searched = self.split_entry(method)
            over.update(self.method_train(base))
            over.update(self.recipes.get(task, {}).get(base, {}))
            over.update(searched)
        return TrainConfig.model_validate({**self.train.model_dump(), **over}) if over else self.train

    def grid_methods(self) -> list[str]:
        """The method entries of the grid's cells: ``grid.method``, or with a ``search`` every method at every
        combination of its values ('pgd@lr=2e-05'), the settings outermost so each one's methods run together."""
        if not self.search:
            return list(self.grid.method)
        keys = list(self.search)
        return [f"{m}@" + ",".join(f"{k}={_setting_text(v)}" for k, v in zip(keys, combo))
                for combo in itertools.product(*self.search.values()) for m in self.grid.method]

    def split_entry(self, entry: str) -> tuple[str, dict[str, Any]]:
        """(method entry, searched train settings) of a grid entry: 'pgd@lr=2e-05' -> ('pgd', {'lr': 2e-05})."""
        if "@" not in entry:
            return entry, {}
        base, settings = entry.split("@", 1)
        return base, {k: yaml_load(v) for k, v in (part.split("=", 1) for part in settings.split(","))}

    def method_spec(self, entry: str) -> tuple[str, dict]:
        """(objective type, hyperparameters) of a grid method entry (its ``train`` overrides are not the objective's)."""
        entry = self.split_entry(entry)[0]
        spec = dict(self.methods.get(entry, {}))
        spec.pop("train", None)
        return spec.pop("type", entry), spec

    def method_train(self, entry: str) -> dict:
        """The train-setting overrides of a method entry (``methods.<entry>.train``), or {}."""
        return dict(self.methods.get(self.split_entry(entry)[0], {}).get("train") or {})


def _setting_text(value) -> str:
    """A searched value as it appears in an entry name: 2e-05, 3, true."""
    return f"{value:g}" if isinstance(value, float) else yaml.safe_dump(value, default_flow_style=True).strip().strip(".").strip()


def _format_validation(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    lines = [f"{source}: invalid params"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parent = _sub_model(model, e["loc"][:-1])
            valid = ", ".join(parent.model_fields) if parent else "?"
            lines.append(f"  unknown key '{key}'; valid keys here: {valid}")
        else:
            lines.append(f"  key '{key}' = {e.get('input')!r}: {e['msg']}")
    return "\n".join(lines)


def _sub_model(model: type[BaseModel], loc) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"""),
    list("-+0123456789."),
)


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=1")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml_load(raw)


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
