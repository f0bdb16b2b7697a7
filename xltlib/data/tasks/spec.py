"""What a task is: the one record type of the task registry (:mod:`xltlib.data.tasks`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # a key of xltlib.evaluation.task_types.KINDS: how records become model inputs and how they are scored
    languages: tuple[str, ...]
    labels: tuple[str, ...] = ()
    metric: str = "accuracy"
    local_reader: Callable | None = None  # (data_dir, lang) -> list[record]
    hub_reader: Callable | None = None  # (lang) -> list[record]
    layout: str = ""  # the expected local file pattern, for error messages
    group_fn: Callable | None = None  # english records -> group ids used by the offline split
    row_aligned: bool = True  # rows are translations of each other across languages
    notes: str = ""
    # English training data when the task ships a training file (read by ``train_reader``) or borrows
    # another task's (``train_from``: QA tasks train on TyDiQA-GoldP English, as XTREME trains them all on
    # SQuAD). Tasks with neither use the offline protocol: a split of the English dev set by group.
    train_reader: Callable | None = None  # (data_dir) -> English training records
    train_hub_reader: Callable | None = None  # () -> the same, from the hub
    train_from: str = ""
    score_metrics: tuple[str, ...] = ("accuracy",)  # the XTREME-R task score is their mean (QA: F1 and EM)
    hub_only: bool = False  # no offline reader: listed, but a run offline fails with a clear error
    # Evaluation splits the readers accept; XNLI and PAWS-X have labelled test sets (zero-shot protocol),
    # the other tasks read the one split the offline data holds (see their notes).
    splits: tuple[str, ...] = ("dev",)
    # The English score a recipe should reach (issue 12's bars), reported beside the gate, not gated:
    # (metric, value in [0, 1]); instead of a value, "pretrained" = the pre-trained encoder's own score on it,
    # "chance" = 1 / number of labels, to be cleared by the lower end of the score's CI
    english_target: tuple[str, float | str] | None = None
    # the benchmark whose average the task counts in: XTREME-R (Ruder et al., 2021, EMNLP, its 10 tasks) dropped
    # PAWS-X and BUCC, which are XTREME (Hu et al., 2020) tasks only
    benchmark: str = "XTREME-R"

    @property
    def training_task(self) -> str:
        """The task whose English training data (and checkpoint) this task uses."""
        return self.train_from or self.name

    @property
    def protocol(self) -> str:
        return "train_file" if (self.train_reader or self.train_from) else "dev_split"

    def check_language(self, lang: str) -> None:
        if lang not in self.languages:
            raise ValueError(f"task '{self.name}' has no language '{lang}'; its languages: {', '.join(self.languages)}")
