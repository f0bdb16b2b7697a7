# %% [markdown]
# # Does robust training align languages, and does alignment explain zero-shot transfer?

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder

# %%
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from xltlib.analysis import merge as A
from xltlib.reporting.report import analyze, english_targets, result_tables, score_name, suite_table, task_coverage, train_diagnostics, transfer_table
from xltlib.runner.stages import Run

warnings.filterwarnings("ignore")
pd.set_option("display.max_columns", None)  # every language of a task, not the first and last ten
run = Run.open(run_dir)
transfer, alignment = run.load_results("transfer"), run.load_results("alignment")
cfg = run.cfg.report
res = analyze(transfer, alignment, primary=cfg.primary, headline_metric=cfg.correlation_metric, n_boot=cfg.n_boot,
              n_perm=cfg.n_perm, seed=cfg.seed, expected_cells=[c["cell_id"] for c in run.cells()],
              majority=run.majority_rates(), protocol=run.cfg.protocol.name, drift=run.weight_drift())
tables = {name: (table, title) for name, table, title in result_tables(res)}

# %%
display(Markdown(res.summary))

# %% [markdown]
# ## Model-quality gate
# English score per task and checkpoint with its Wilson 95% CI (F1, QA and mAP: their bootstrap CI), beside the
# majority-label rate. A checkpoint
# whose lower bound does not clear the majority rate has no transfer to explain: it is left out of RQ1 and RQ2.

# %%
with pd.option_context("display.max_colwidth", None):
    display(tables["quality_gate"][0].round(3))
targets = english_targets(transfer)
if len(targets):
    display(Markdown("**English score vs each task's target (%)** — a fixed bar, chance (XCOPA) or the pre-trained "
                     "encoder's own score (LAReQA); `ci_low`–`ci_high` envelope the per-seed 95% CIs"))
    display(targets.round(1))

# %% [markdown]
# ## Robust methods vs the baseline
# Mean over target languages of each method's score minus the baseline's at the same seeds, with a paired
# bootstrap 95% CI (test examples when the rows carry per-example values, else languages) plus the seed variance.

# %%
with pd.option_context("display.max_colwidth", None):
    display(tables["method_vs_baseline"][0].round(4))

# %% [markdown]
# ## What each method did in training
# Last epoch, mean over its steps then over seeds: the loss, the clean and the perturbed loss and their gap (an
# adversary that works raises the loss), the perturbation's L2 norm per token (absolute, and relative to the
# token embeddings' norm), RS-DA's substitution rate, and the weight drift from the pre-trained encoder.

# %%
display(train_diagnostics(run.load_results("train")).round(4))

# %% [markdown]
# ## The suite: task scores (%), XTREME-R style
# Each task's score is the mean over its languages of its XTREME-R metric (accuracy; tag F1; the mean of QA
# F1 and EM; mAP@20), the suite average is the mean over the tasks of this run; mean ± sd over seeds.

# %%
display(suite_table(transfer))
display(Markdown("**What was scored** (tasks, languages, and what the offline data lacks)"))
with pd.option_context("display.max_colwidth", None):
    display(task_coverage(run.cfg.grid.task, transfer))

# %% [markdown]
# ## Transfer: task score (%) per language, mean ± sd over seeds

# %%
for task, table in transfer_table(transfer).items():
    display(Markdown(f"**{task}** ({score_name(task)})")); display(table)

# %% [markdown]
# ## RQ1: alignment vs transfer
# The primary test (declared in `report.primary`) relates languages' mean alignment to their mean transfer:
# the language is the unit, so languages are permuted (one permutation for every checkpoint) and resampled.
# Within languages, a regression with checkpoint and language fixed effects and SEs clustered by both.
# Every other metric × layer is exploratory, Holm-adjusted within its family.

# %%
if len(res.headline_frame):
    A.plot_language_means(res.headline_frame); plt.show()
    A.plot_alignment_vs_transfer(res.headline_frame); plt.show()
display(Markdown("**Primary test and the exploratory ones** (across languages)"))
display(tables["correlations"][0].round(3).head(40))
display(Markdown("**Within languages** (checkpoint + language fixed effects, two-way clustered SEs)"))
display(tables["regressions"][0].round(4).head(40))
if len(res.rq1_exploratory) and res.rq1_exploratory["r"].notna().any():
    A.plot_corr_by_layer(res.rq1_exploratory); plt.show()
if len(res.rq1_drift):
    display(Markdown("**Less drift?** Each checkpoint's weight drift (relative L2 distance of the encoder from the "
                     "pre-trained weights) and the within-language slope with and without it as a covariate "
                     "(language fixed effects, two-way clustered SEs). A slope that shrinks once drift enters "
                     "means part of \"robust training aligns\" is \"robust training moves the weights less\"."))
    display(res.drift.merge(transfer[["checkpoint", "method", "seed"]].drop_duplicates(), on="checkpoint")
            .sort_values(["method", "seed"]).round(4))
    display(res.rq1_drift.round(4))
display(Markdown("**Alignment pools** (pairs per language used by the pair metrics, and available)"))
display(res.pools)

# %% [markdown]
# ## RQ2: robust minus baseline, and low-resource languages
# Seed-matched gains over the baseline, one point per language (a language in two tasks counts once),
# regressed on log10 CC-100 size; Holm across methods. Negative slope = larger gains for lower-resource languages.

# %%
if len(res.delta):
    A.plot_deltas(res.delta, metric=res.primary_metric, layer=next(iter(res.primary_layer.values()), None)); plt.show()
display(tables["gain_vs_resource"][0].round(4))
if len(res.rq2_frame):
    A.plot_gain_vs_resource(res.rq2_frame); plt.show()

# %% [markdown]
# ## Provenance

# %%
display(Markdown(f"git commit `{transfer['git_commit'].iloc[0] if len(transfer) else 'n/a'}` · params "
                 f"`{run.params_file}` · seeds {sorted(run.cfg.grid.seed)} · protocol `{run.cfg.protocol.name}`"))
display(Markdown("```yaml\n" + open(run.path("config.yaml")).read() + "\n```"))
