# %% [markdown]
# # Zero-shot transfer
# Task score per language of every fine-tuned checkpoint (trained on English only): accuracy for XNLI, PAWS-X
# and XCOPA, seqeval F1 for UD-POS and PAN-X, the mean of F1 and EM for QA, mAP@20 for LAReQA. A task's score
# is the mean over its languages, as XTREME-R reports it; numbers are percentages, mean ± sd over seeds.

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder
unit = ""  # one cell only (a unit of a distributed run, xltlib.runner.executors); empty: every cell
compute = True  # False: show the rows on disk and compute nothing (the page after distributed units)

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from xltlib.reporting.report import english_targets, generalized_matrix, robustness_table, robustness_vs_baseline, score_name, suite_table, transfer_table
from xltlib.runner.stages import Run, missing_cells, stage_transfer

run = Run.open(run_dir)
pd.set_option("display.max_columns", None)  # every language of a task, not the first and last ten
transfer = stage_transfer(run, unit=unit, compute=compute)
missing = missing_cells(run)
if transfer.attrs.get("stale_rows"):
    display(Markdown(f"{transfer.attrs['stale_rows']} result rows of earlier settings or checkpoints are on disk "
                     "and left out (their key no longer matches this run)."))
if missing:
    display(Markdown(f"**Missing cells (training failed or not run):** {', '.join(missing)}"))

# %%
targets = english_targets(transfer)
if len(targets):
    display(Markdown("### Does each task learn? English score vs its target (%)\n"
                     "Target: the score a recipe should reach, reported beside the quality gate, not gated (XCOPA: "
                     "chance; LAReQA: the pre-trained encoder's own mAP@20). `ci_low`–`ci_high`: the envelope of the per-seed "
                     "bootstrap 95% CIs over English examples."))
    display(targets.round(1))
suite = suite_table(transfer)
if len(suite.columns) > 3:
    display(Markdown("### The suite: task scores (%) and their average"))
    display(suite)
for task, table in transfer_table(transfer).items():
    display(Markdown(f"### {task}: {score_name(task)} (%) per language, mean ± sd over seeds"))
    display(table)

# %% [markdown]
# ### Generalized cross-lingual transfer
# First sentence in one language, second in another, on the same held-out rows (XNLI's 15 dev files and
# PAWS-X's 7 are translations of the same rows in the same order); the gold label is the first sentence's
# language's. PAWS-X gold labels differ from English in a few rows (de 32, es 16, fr 3, ja 9, ko 23, zh 10 of
# 2,000, see the data MANIFEST), so a few mixed pairs carry a label that one of the two languages disputes.
# Shown when `evaluate.generalized` is on.

# %%
for (task, method), (mat, summary) in generalized_matrix(transfer).items():
    display(Markdown(f"**{task} · {method}** — {summary}"))
    fig, ax = plt.subplots(figsize=(0.45 * len(mat) + 2, 0.4 * len(mat) + 1.5))
    sns.heatmap(100 * mat, annot=len(mat) <= 8, fmt=".0f", cmap="viridis", ax=ax,
                cbar_kws={"label": "accuracy (%)"})
    ax.set_xlabel("second sentence language"); ax.set_ylabel("first sentence language")
    plt.show()

# %% [markdown]
# ### Did robust training make the model robust?
# English test accuracy (%) clean and under (a) a PGD attack on the input embeddings at the trained strength
# and twice it, (b) RS-DA synonym substitution of both sentences, (c) Gaussian noise at RS-RP's sigma
# (`xltlib.evaluation.robustness`; shown when `evaluate.robustness` is on). `attack_loss_gain_pgd_eps` is the mean loss
# increase the attack causes (positive: the adversary works); `synonym_subst_rate` is the share of tokens
# replaced.

# %%
robust = robustness_table(transfer)
if len(robust):
    display(robust)
    from xltlib.analysis.stats import gate_failures, quality_gate

    failed = gate_failures(quality_gate(transfer, run.majority_rates()))  # majority-label predictors look "robust"
    vs = robustness_vs_baseline(transfer, n_boot=run.cfg.report.n_boot, seed=run.cfg.report.seed, failed=failed)
    display(Markdown("**Method − baseline** (points of English accuracy under each attack, same seeds; 95% CI from a "
                     "paired bootstrap over the same English rows plus the seed variance). A method is more robust "
                     "than the baseline where the CI lies above 0. Checkpoints that fail the model-quality gate are left out."))
    if len(vs):
        display(vs.drop(columns=["resampled"]).round(2))
else:
    display(Markdown("_Robustness not scored in this run (`evaluate.robustness: false`)._"))
