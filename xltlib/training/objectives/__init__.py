"""Robust fine-tuning objectives for zero-shot cross-lingual transfer.

Huang et al. (2021, EMNLP), "Improving Zero-Shot Cross-Lingual Transfer Learning via Robust
Training" (code: uclanlp/Robust-XLT): fine-tune a multilingual encoder on English with an
objective that tolerates noise in the input embedding space, then evaluate zero-shot.

Registered objectives (``OBJECTIVES``): ``baseline``, ``pgd`` (Madry et al., 2018), ``freelb``
(Zhu et al., 2020), ``rs_rp`` (randomized smoothing, random embedding noise) and ``rs_da``
(randomized smoothing, synonym-substitution augmentation; Ye et al., 2020). Use
``build_objective(name, hparams, data_dir=..., entry=...)``; ``objective_defaults(name)``
gives the documented defaults.
"""
from xltlib.training.objectives.base import OBJECTIVES, HParam, Objective, build_objective, objective_defaults, register
from xltlib.training.objectives.embedding import PGD, RSRP, SCALES, Baseline, FreeLB, median_token_norm
from xltlib.training.objectives.synonyms import (
    LOOKUPS,
    REFERENCE_SCHEDULE,
    RSDA,
    load_synonym_table,
    substitute_synonyms,
)

__all__ = [
    "OBJECTIVES", "HParam", "Objective", "build_objective", "objective_defaults", "register",
    "Baseline", "PGD", "FreeLB", "RSRP", "RSDA", "load_synonym_table", "substitute_synonyms",
    "median_token_norm", "SCALES", "LOOKUPS", "REFERENCE_SCHEDULE",
]
