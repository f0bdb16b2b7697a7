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
from IPython.display import Markdown, display

from xltlib.analysis.score import score_name
from xltlib.reporting.plots import plot_generalized
from xltlib.reporting.tables import (
    english_targets,
    generalized_matrix,
    robustness_table,
    show,
    suite_table,
    transfer_table,
)
from xltlib.runner.keys import missing_cells
from xltlib.runner.stages import Run, stage_transfer

run = Run.open(run_dir)
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
    show(targets, 1)
suite = suite_table(transfer)
if len(suite.columns) > 3:
    display(Markdown("### The suite: task scores (%) and their average"))
    show(suite)
for task, table in transfer_table(transfer).items():
    display(Markdown(f"### {task}: {score_name(task)} (%) per language, mean ± sd over seeds"))
    show(table)

# %% [markdown]
# ### Generalized cross-lingual transfer
# First sentence in one language, second in another, on the same held-out rows (XNLI's 15 dev files and
# PAWS-X's 7 are translations of the same rows in the same order); the gold label is the first sentence's
# language's. PAWS-X gold labels differ from English in a few rows (de 32, es 16, fr 3, ja 9, ko 23, zh 10 of
# 2,000, see the data MANIFEST), so a few mixed pairs carry a label that one of the two languages disputes.
# Shown when `evaluate.generalized` is on.

# %%
generalized = generalized_matrix(transfer)
for (task, method), (mat, summary) in generalized.items():
    display(Markdown(f"**{task} · {method}** — {summary}"))
for task in sorted({t for t, _ in generalized}):
    plot_generalized(generalized, task); plt.show()

# %% [markdown]
# ### Did robust training make the model robust?
# English test accuracy (%) clean and under the same attacks for every checkpoint of a task, at the strengths of
# `evaluate.robustness_*` (relative to the median token-embedding norm): (a) PGD on the input embeddings,
# `robust_acc_pgd_<eps>`, with `attack_loss_gain_pgd_<eps>` the mean loss increase it causes (positive: the adversary
# works); (b) Gaussian noise, `robust_acc_noise_<sigma>` (a random draw, not an attack); (c) a greedy synonym-swap
# attack within a query budget, logged as TextAttack logs it: accuracy under attack, success rate, share of words
# perturbed, queries; (d) a random synonym draw (not an attack; RS-DA's training distribution),
# `synonym_subst_rate` the share of tokens replaced (`xltlib.evaluation.robustness`; shown when
# `evaluate.robustness` is on). Each method against the baseline under each attack (seed-matched, paired bootstrap, checkpoints that
# fail the model-quality gate left out) is on the analysis page, step 2.

# %%
robust = robustness_table(transfer)
if len(robust):
    show(robust)
else:
    display(Markdown("_Robustness not scored in this run (`evaluate.robustness: false`)._"))
