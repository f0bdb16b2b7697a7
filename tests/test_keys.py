"""The chained cache keys (xltlib.runner.keys) hash what they hashed before: a key that moves makes every existing
run folder recompute everything it holds."""
from __future__ import annotations

from pathlib import Path

import pytest

from xltlib.config.validate import load_config
from xltlib.core.rows import write_json
from xltlib.runner import keys
from xltlib.runner.keys import AlignmentCheckpoint
from xltlib.runner.run_dir import init_run
from xltlib.runner.stages import stage_data

SMOKE = Path(__file__).resolve().parents[1] / "params" / "smoke.yaml"
PARALLEL_KEY = "0123456789abcdef"  # stands in for the alignment stage's parallel data
# cell -> (checkpoint, transfer, alignment) key of the smoke params, computed with the code of commit b22b862
# (keys of dict cells, on the Run). They move, rightly, when params/smoke.yaml, the smoke data or a setting's
# default changes; then recompute them, and say in the commit that existing run folders recompute.
# The alignment keys moved with alignment metric version 2 (xltlib.evaluation.alignment.METRICS_VERSION: debiased
# `cka.cka`, per-pair retrieval outcomes): every run folder recomputes its alignment rows.
# And with version 4 (only a common pool's pairs are encoded; the language-ID probe draws from the pools).
# The checkpoint keys of robust methods moved when the key began hashing the objective's hyperparameters with their
# defaults filled in (PGD's random start became the reference's: such a checkpoint retrains; a baseline's key is
# unchanged); the transfer keys moved with the fixed-strength robustness settings (evaluate.robustness_*).
PINNED = {
    "tiny-random__xnli__baseline__s1": ("ca64e41c3d775a61", "78f108a7f50e5e0d", "0957d5ca1a3f94e7"),
    "tiny-random__pawsx__pgd__s2": ("8ad3c6b80d37b1ba", "5d8a07d1375faf7d", "56d065e9f3b945f7"),
    "tiny-random__xnli__rs_da__s1": ("0a8b56d549705744", "b56bfde2530591d9", "076037b8787939e3"),
}
PRETRAINED_ALIGNMENT = "f1cfd6349fb6b68b"


@pytest.fixture(scope="module")
def smoke_split(tmp_path_factory):
    run = init_run(load_config(SMOKE), tmp_path_factory.mktemp("keys"))
    stage_data(run)
    write_json(dict(key=PARALLEL_KEY, datasets=["tatoeba"]), run.path("data", "parallel.json"))
    return run


@pytest.mark.parametrize("cell_id", PINNED)
def test_keys_are_the_keys_of_before(smoke_split, cell_id):
    run = smoke_split
    cell = run.find_cell(cell_id)
    ck = keys.checkpoint_key(run, cell)
    trained = AlignmentCheckpoint(checkpoint=cell.checkpoint, model=cell.model, task=cell.task, method=cell.method,
                                  seed=cell.seed, path=run.checkpoint_dir(cell.checkpoint), key=ck)
    assert (ck, keys.transfer_key(run, cell), keys.alignment_key(run, trained)) == PINNED[cell_id]


def test_pretrained_alignment_key_is_the_key_of_before(smoke_split):
    assert keys.alignment_key(smoke_split, AlignmentCheckpoint.pretrained("tiny-random")) == PRETRAINED_ALIGNMENT


def test_keys_follow_what_they_chain_on(smoke_split):
    run = smoke_split
    cell = run.find_cell("tiny-random__xnli__baseline__s1")
    other_seed = run.find_cell("tiny-random__xnli__baseline__s2")
    assert keys.checkpoint_key(run, cell) != keys.checkpoint_key(run, other_seed)
    assert not keys.cell_done(run, cell) and keys.missing_cells(run) == [c.cell_id for c in run.cells()]
    assert keys.finished_cells(run) == [] and keys.alignment_checkpoints(run) == [
        AlignmentCheckpoint.pretrained("tiny-random")]
    with pytest.raises(ValueError, match="unknown results kind 'scores'; kinds: train, transfer, alignment"):
        keys.live_keys(run, "scores")
