# %% [markdown]
# # Fine-tuning one grid cell

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder
cell_id = ""  # which grid cell (model__task__method__seed)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from xltlib.reporting.tables import show
from xltlib.runner.stages import Run, stage_train
from xltlib.training.plateau import FLAGGED, plateau_note

run = Run.open(run_dir)
cell = run.find_cell(cell_id)
log = stage_train(run, cell_id)
secs = log["elapsed_s"].iloc[-1]
display(Markdown(
    f"**{cell.task}** · method **{cell.method}** (`{cell.method_type}` {cell.method_params or ''}) · "
    f"seed {cell.seed} · model `{cell.model}`  \n"
    f"{len(log)} steps, {log['examples'].iloc[-1]} examples, {log['tokens'].iloc[-1]:,} tokens in {secs:.0f} s "
    f"({log['examples'].iloc[-1] / secs:.1f} examples/s, bf16={run.cfg.train.bf16})"))

# %% [markdown]
# Training loss, and for robust objectives the diagnostics they log per step (`xltlib.training.objectives`): the clean
# loss beside the perturbed/adversarial one and their gap (positive: the perturbation hurts, as an adversary
# should), the perturbation's norm per token relative to a token embedding, RS-DA's substitution rate.

# %%
diag = [c for c in ("clean_loss", "adv_loss") if c in log and log[c].notna().any()]
extra = [c for c in ("loss_gap", "delta_token_norm_rel", "subst_rate") if c in log and log[c].notna().any()]
fig, axes = plt.subplots(1, 1 + len(extra), figsize=(5 * (1 + len(extra)), 3), squeeze=False)
ax = axes[0, 0]
ax.plot(log["step"], log["loss"].rolling(10, min_periods=1).mean(), label="training loss (moving mean, 10)")
if "prior_entropy" in log and log["prior_entropy"].notna().any():  # where a majority-class collapse sits
    ax.axhline(log["prior_entropy"].iloc[0], color="grey", ls=":", label="entropy of the label prior")
for c in diag:
    ax.plot(log["step"], log[c].rolling(10, min_periods=1).mean(), label=c.replace("_", " "))
ax.set_xlabel("step"); ax.set_ylabel("loss"); ax.legend(fontsize=8)
for ax, c in zip(axes[0, 1:], extra):
    ax.plot(log["step"], log[c].rolling(10, min_periods=1).mean())
    ax.set_xlabel("step"); ax.set_ylabel(c.replace("_", " "))
fig.tight_layout()
if diag or extra:
    cols = [c for c in ("clean_loss", "adv_loss", "loss_gap", "delta_token_norm", "delta_token_norm_rel",
                        "subst_rate") if c in log and log[c].notna().any()]
    display(Markdown("**Diagnostics, mean over training**"))
    show(log[cols].mean().to_frame("mean").T, 4)

# %% [markdown]
# Did training leave the majority plateau? (`xltlib.training.plateau`) A classifier that predicts the training labels'
# prior whatever its input (a tagger: the tags' prior for every word) has a loss equal to the prior's entropy; a run whose loss over the last quarter of its steps
# is still within a small share of it (`MARGIN`) learned (almost) nothing, and the model-quality gate's note says so.

# %%
if "plateau" in log:
    first = log.iloc[0]
    text = plateau_note(first["plateau"], first["plateau_tail_loss"], first["prior_entropy"])
    display(Markdown(f"**{text}**" if first["plateau"] in FLAGGED else text))

# %% [markdown]
# Checkpoint selection (`protocol.selection`): the task score on English rows neither trained on nor scored,
# after every epoch; the best epoch's weights are the checkpoint.

# %%
if "select_score" in log and log["select_score"].notna().any():
    sel = log.dropna(subset=["select_score"])[["epoch", "step", "select_score"]].assign(epoch=lambda d: d.epoch + 1)
    display(Markdown(f"Kept epoch **{int(log['selected_epoch'].iloc[0]) + 1}** of {int(log['epoch'].max()) + 1}."))
    show(sel, 4)
