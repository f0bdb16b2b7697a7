"""What the alignment stage stores for the item-level comparison, and how the analysis reads it back
(xltlib.runner.stages.stage_alignment, xltlib.runner.results.alignment_outcomes), and the weight drift a run
reports (xltlib.runner.results.weight_drift). Smoke params: the tiny random model, seconds."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from xltlib.config.validate import load_config
from xltlib.evaluation.alignment import METRICS_VERSION, compute_alignment_pairs
from xltlib.models.load import load_encoder, load_tokenizer
from xltlib.runner import results, stages
from xltlib.runner.keys import AlignmentCheckpoint, alignment_key
from xltlib.runner.run_dir import init_run
from xltlib.runner.stages import stage_alignment, stage_data
from xltlib.training.checkpoints import save_checkpoint
from xltlib.training.drift import DRIFT_METRIC

SMOKE = Path(__file__).resolve().parents[1] / "params" / "smoke.yaml"
METRIC = "retrieval.acc1_en2xx"


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """A smoke run whose alignment stage ran on the pre-trained model only (no checkpoint trained)."""
    run = init_run(load_config(SMOKE), tmp_path_factory.mktemp("outcomes"))
    stage_data(run)
    return run, stage_alignment(run)


def test_rows_carry_the_metric_version_and_cka_names(aligned):
    _, rows = aligned
    assert (rows["metrics_version"] == METRICS_VERSION).all()
    pair = rows[rows["language"] != "all"]
    assert {"cka.cka", "cka.cka_linear_biased"} <= set(pair["metric"]) and (pair["d"] == pair["d"].iloc[0]).all()


def test_outcomes_come_back_per_pair_with_their_items(aligned):
    run, rows = aligned
    out = run.alignment_outcomes(METRIC, 2)
    want = rows[(rows["metric"] == METRIC) & (rows["layer"] == 2)].set_index("language")["value"]
    assert set(out["language"]) == set(want.index) and set(out["checkpoint"]) == {"pretrained:tiny-random"}
    for _, r in out.iterrows():
        assert r["correct"].dtype == bool and len(r["correct"]) == len(r["items"]) == r["n"]
        assert r["correct"].mean() == pytest.approx(want[r["language"]])
        assert r["items"].dtype == np.int64 and len(set(r["items"])) == len(r["items"])
    assert not len(run.alignment_outcomes(METRIC, 7)) and "rerun" in run.alignment_outcomes(METRIC, 7).attrs["note"]


def test_items_follow_the_parallel_data(aligned):
    run, _ = aligned
    items = pd.read_parquet(run.path("data", results.PARALLEL_ITEMS))
    assert set(items["dataset"]) == {"tatoeba"} and (items["key"] == results.parallel_key(run)).all()
    (run.path("data", results.PARALLEL_ITEMS)).rename(run.path("data", "moved.parquet"))
    try:
        with pytest.raises(FileNotFoundError, match="parallel_items.parquet.*rerun the alignment stage"):
            run.alignment_outcomes(METRIC, 2)
    finally:
        run.path("data", "moved.parquet").rename(run.path("data", results.PARALLEL_ITEMS))


def test_the_metric_version_is_in_the_alignment_key(aligned, monkeypatch):
    """Rows of an older metric version are stale: the alignment stage recomputes them."""
    run, _ = aligned
    ck = AlignmentCheckpoint.pretrained("tiny-random")
    now = alignment_key(run, ck)
    monkeypatch.setattr("xltlib.runner.keys.METRICS_VERSION", METRICS_VERSION - 1)
    assert alignment_key(run, ck) != now


def test_the_stage_encodes_only_the_pool_and_scores_as_if_it_encoded_every_pair(tmp_path, monkeypatch):
    """Languages with unequal pairs (sw cut to 17 of 30): the stage encodes the common pool only (17 pairs per
    language), and its pair rows and per-pair outcomes are those of encoding every pair."""
    run = init_run(load_config(SMOKE), tmp_path)
    stage_data(run)
    full = stages.parallel_sentences(run, "tatoeba")
    cut = {lang: (xs[:17], en[:17]) if lang == "sw" else (xs, en) for lang, (xs, en) in full.items()}
    monkeypatch.setattr(stages, "parallel_sentences", lambda run, dataset: cut)
    encoded: list[int] = []
    real_encode = stages.encode_layers
    monkeypatch.setattr(stages, "encode_layers", lambda model, tok, texts, **kw: (
        encoded.append(len(texts)), real_encode(model, tok, texts, **kw))[1])
    rows = stage_alignment(run)
    assert set(encoded) == {17}  # every side of every language: the pool, not the 30 pairs
    a = run.cfg.alignment
    model, tok = load_encoder("tiny-random"), load_tokenizer("tiny-random")
    kw = dict(pooling=a.pooling, batch_size=a.batch_size, max_length=a.max_length, bf16=run.bf16)
    x = {lang: real_encode(model, tok, xs, **kw) for lang, (xs, _) in cut.items()}
    y = {lang: real_encode(model, tok, en, **kw) for lang, (_, en) in cut.items()}
    outcomes: list[dict] = []
    want = compute_alignment_pairs(x, y, metrics=[m for m in a.metrics if m != "langid_probe"], layers=a.layers,
                                   pool=a.pool, outcomes=outcomes)
    got = rows[rows["language"] != "all"].set_index(["metric", "language", "layer"])
    for r in want:
        stored = got.loc[(r["metric"], r["language"], r["layer"])]
        assert stored["value"] == pytest.approx(r["value"], abs=1e-6)
        assert (stored["n"], stored["n_available"]) == (17, 30 if r["language"] != "sw" else 17)
    out = run.alignment_outcomes(METRIC, 2).set_index("language")
    for o in outcomes:
        if o["metric"] == METRIC and o["layer"] == 2:
            assert np.array_equal(out.loc[o["language"], "correct"], o["correct"])


# ------------------------------------------------------------------------------------------------ drift
class _Tiny(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.config = encoder, encoder.config
        self.config.num_labels = 2


def test_weight_drift_reads_new_rows_and_falls_back_to_the_checkpoint(tmp_path, monkeypatch):
    """A checkpoint with a `weight_drift_trained` row reports it; one trained before (an old `weight_drift` row
    only) gets it from its saved parameters, never the old value."""
    torch.manual_seed(0)
    base = BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16, max_position_embeddings=16))
    tuned = _Tiny(BertModel(base.config))
    tuned.encoder.load_state_dict(base.state_dict())
    tuned.encoder.get_input_embeddings().weight.requires_grad_(False)
    with torch.no_grad():
        tuned.encoder.pooler.dense.bias.add_(1.0)
    save_checkpoint(tuned, None, tmp_path / "old", base_model="tiny", meta={})
    cells = [SimpleNamespace(checkpoint=c, model="tiny") for c in ("new", "old", "missing")]
    run = SimpleNamespace(training_cells=lambda: cells, checkpoint_dir=lambda c: tmp_path / c)
    rows = pd.DataFrame(dict(checkpoint=["new", "old"], metric=[DRIFT_METRIC, "weight_drift"], value=[0.03, 0.001]))
    monkeypatch.setattr(results, "load_results", lambda run, kind: rows)
    monkeypatch.setattr(results, "cell_done", lambda run, cell: cell.checkpoint != "missing")
    monkeypatch.setattr(results, "load_encoder", lambda name: base)
    drift = results.weight_drift(run)
    den = sum(float(p.detach().double().pow(2).sum()) for n, p in base.named_parameters()
              if n != "embeddings.word_embeddings.weight")
    assert drift == {"new": 0.03, "old": pytest.approx((8 / den) ** 0.5)}  # 8 bias entries moved by 1
