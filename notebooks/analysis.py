# %% [markdown]
# # Does robust training align languages, and does alignment explain zero-shot transfer?
# The analysis in six steps, one section each. Each step is one call of `xltlib.analysis` on what the steps
# before it returned, with its tables and figures under it; `xlt export` runs the same calls
# (`xltlib.analysis.summary.analyze_run`) and writes what they return to `docs/results/`.
# The plain-words summary is step 6, at the end.

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder

# %%
import warnings

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from xltlib.analysis.compare import compare_methods
from xltlib.analysis.gate import apply_gate
from xltlib.analysis.merge import merge_points
from xltlib.analysis.rq1 import answer_rq1
from xltlib.analysis.rq2 import answer_rq2
from xltlib.analysis.score import score_name
from xltlib.analysis.summary import missing_cells_note, summarize
from xltlib.reporting.plots import (
    plot_alignment_vs_transfer,
    plot_corr_by_layer,
    plot_deltas,
    plot_gain_vs_resource,
    plot_language_means,
)
from xltlib.reporting.tables import (
    english_targets,
    rq1_correlations,
    rq1_regressions,
    rq2_slopes,
    show,
    suite_table,
    task_coverage,
    train_diagnostics,
    transfer_table,
)
from xltlib.runner.stages import Run

warnings.filterwarnings("ignore")
run = Run.open(run_dir)
report = run.cfg.report  # the declared primary analysis, bootstrap and permutation counts, seed
transfer, alignment = run.load_results("transfer"), run.load_results("alignment")
notes = missing_cells_note(transfer, [c.cell_id for c in run.cells()])

# %% [markdown]
# ## Step 1: do the models learn their tasks? The model-quality gate
# `apply_gate`: English score per task and checkpoint with its Wilson 95% CI (F1, QA and mAP: their bootstrap
# CI), beside the majority-label rate. A checkpoint whose lower bound does not clear the majority rate has no
# transfer to explain: its rows are left out of every later step.

# %%
gate = apply_gate(transfer, run.majority_rates())
show(gate.table, 3)
targets = english_targets(transfer)
if len(targets):
    display(Markdown("**English score vs each task's target (%)** — a fixed bar, chance (XCOPA) or the pre-trained "
                     "encoder's own score (LAReQA); `ci_low`–`ci_high` envelope the per-seed 95% CIs"))
    show(targets, 1)

# %% [markdown]
# ## Step 2: robust methods vs the baseline
# `compare_methods`: the mean over target languages of each method's score minus the baseline's at the same
# seeds, with a paired bootstrap 95% CI (test examples when the rows carry per-example values, else languages)
# plus the seed variance; and the same for English accuracy under each attack (points), where robustness was
# scored. A method is more robust than the baseline where that CI lies above 0.

# %%
comparison = compare_methods(transfer, gate, n_boot=report.n_boot, seed=report.seed)
show(comparison.scores, 4)
if len(comparison.robustness):
    display(Markdown("**Under attack** (points of English accuracy, method − baseline)"))
    show(comparison.robustness.drop(columns=["resampled"]), 2)

# %% [markdown]
# ### The scores behind the comparison
# What each method did in training (the kept epoch, mean over its steps then over seeds: the loss, the clean and
# perturbed loss and their gap, the perturbation's norm per token, RS-DA's substitution rate, the weight drift
# from the pre-trained encoder); the XTREME-R style suite (each task's score is the mean over its languages, the
# XTREME-R average the mean over this run's XTREME-R tasks: PAWS-X, an XTREME v1 task, is shown but not
# averaged); what was scored; each task's score (%) per language. Mean ± sd over seeds.

# %%
show(train_diagnostics(run.load_results("train")), 4)
show(suite_table(transfer))
show(task_coverage(run.cfg.grid.task, transfer))
for task, table in transfer_table(transfer).items():
    display(Markdown(f"**{task}** ({score_name(task)})"))
    show(table)

# %% [markdown]
# ## Step 3: alignment beside the task score
# `merge_points`: one point per fine-tuned checkpoint, task, target language, alignment metric and layer, with
# the alignment and the task score (`score_metric` says which: accuracy, F1, ...); `gate_ok` marks the points
# whose checkpoint passes the gate. Below: the pairs per language the pair metrics used, and the pairs available.

# %%
points = merge_points(alignment, transfer, gate)
show(points.merged.head(10), 4)
show(points.pools)

# %% [markdown]
# ## Step 4: RQ1, does alignment track transfer?
# `answer_rq1`: the primary test (declared in `report.primary`) relates languages' mean alignment to their mean
# task score: the language is the unit, so languages are permuted (one permutation for every checkpoint) and
# resampled. Within languages, a regression with checkpoint and language fixed effects and SEs clustered by
# both. Every other metric × layer is exploratory, Holm-adjusted within its family. Last, the within-language
# slope with and without each checkpoint's weight drift: a slope that shrinks once drift enters means part of
# "robust training aligns" is "robust training moves the weights less".

# %%
rq1 = answer_rq1(points, report.primary, n_boot=report.n_boot, n_perm=report.n_perm, seed=report.seed,
                 drift=run.weight_drift())
if len(rq1.headline):
    plot_language_means(rq1.headline); plt.show()
    plot_alignment_vs_transfer(rq1.headline); plt.show()
display(Markdown("**Primary test and the exploratory ones** (across languages)"))
show(rq1_correlations(rq1).head(40), 3)
display(Markdown("**Within languages** (checkpoint + language fixed effects, two-way clustered SEs)"))
show(rq1_regressions(rq1).head(40), 4)
if len(rq1.exploratory) and rq1.exploratory["r"].notna().any():
    plot_corr_by_layer(rq1.exploratory); plt.show()
if len(rq1.drift_fits):
    display(Markdown("**Less drift?** Each checkpoint's weight drift (relative L2 distance of the encoder from the "
                     "pre-trained weights), then the within-language slope with and without it as a covariate "
                     "(language fixed effects, two-way clustered SEs)."))
    show(rq1.drift, 4)
    show(rq1.drift_fits, 4)

# %% [markdown]
# ## Step 5: RQ2, do robust objectives help low-resource languages most?
# `answer_rq2`: seed-matched gains over the baseline, one point per language (a language in two tasks counts
# once), regressed on log10 CC-100 size; Holm across methods. Negative slope = larger gains for lower-resource
# languages.

# %%
rq2 = answer_rq2(points, gate, rq1)
if len(rq2.delta):
    plot_deltas(rq2.delta, metric=rq1.metric, layer=next(iter(rq1.layers.values()), None)); plt.show()
show(rq2_slopes(rq2), 4)
if len(rq2.frame):
    plot_gain_vs_resource(rq2.frame); plt.show()

# %% [markdown]
# ## Step 6: the summary
# `summarize`: every step's result in one `AnalysisResult`, and the claims it supports in plain words.

# %%
res = summarize(report.primary, gate, comparison, points, rq1, rq2, alignment=alignment,
                headline_metric=report.correlation_metric, protocol=run.cfg.protocol.name, notes=notes)
display(Markdown(res.summary))

# %% [markdown]
# ## Provenance

# %%
display(Markdown(f"git commit `{transfer['git_commit'].iloc[0] if len(transfer) else 'n/a'}` · params "
                 f"`{run.params_file}` · seeds {sorted(run.cfg.grid.seed)} · protocol `{run.cfg.protocol.name}`"))
display(Markdown("```yaml\n" + open(run.path("config.yaml")).read() + "\n```"))
