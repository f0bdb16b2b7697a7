# %% [markdown]
# # Does robust training align languages, and does alignment explain zero-shot transfer?
# The answers first, then the analysis behind them in six steps, one section each. `analyze_run`
# (`xltlib.analysis.summary`) runs the six steps on this run folder, each one call of `xltlib.analysis` on what the
# steps before it returned; each section names its call and shows its field of the result (`res.gate`,
# `res.comparison`, ...) with the tables and figures a reader needs. `xlt export` writes the same result to
# `docs/results/`. The full plain-words summary, with every unit, n and estimand, is step 6.

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder

# %%
import warnings

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from xltlib.analysis.score import score_name
from xltlib.analysis.summary import analyze_run
from xltlib.reporting.plots import (
    plot_alignment_vs_transfer,
    plot_corr_by_layer,
    plot_deltas,
    plot_gain_vs_resource,
    plot_language_means,
    vs_baseline_figures,
)
from xltlib.reporting.tables import (
    english_targets,
    rq1_checkpoints,
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
transfer = run.load_results("transfer")
res = analyze_run(run)  # steps 1-6 with the run's `report` settings (primary analysis, bootstrap and permutations)

# %% [markdown]
# ## The answers in brief
# One line per question, each with its 95% interval: which checkpoints learned (step 1), robust training vs the
# baseline on zero-shot transfer (step 2), RQ1 (step 4) and RQ2 (step 5) at the analyses declared in
# `report.primary`, the source paper's claims (step 6). Units, n and estimands are in step 6's summary.

# %%
display(Markdown(res.brief))
for _, figure in vs_baseline_figures(res):  # the brief's two comparisons as pictures
    display(figure)
    plt.close(figure)

# %% [markdown]
# ## Step 1: do the models learn their tasks? The model-quality gate
# `res.gate` from `apply_gate`: English score per task and checkpoint with its CI beside the bar it must clear (`bar`, `bar_kind`),
# decided on the English *selection* rows (`protocol.selection`; `split` names the rows; a run without them falls
# back to test and says so): accuracy with its Wilson CI against the majority-label rate (XNLI, PAWS-X); PAN-X's
# span F1 with a bootstrap CI over sentences against the memorized-entity F1, a lookup of the training entities
# (`xltlib.evaluation.memorized`); UD-POS, QA and mAP show their bootstrap CI, not gated. A checkpoint whose lower
# bound does not clear its bar has no transfer to explain: its rows are left out of every later step. The note
# names a run whose training loss never left the majority plateau.

# %%
gate_table = res.gate.table
if "split" in gate_table and len(gate_table):  # one line per task instead of a long cell in every row
    display(Markdown("Rows deciding the gate: " + "; ".join(
        f"**{task}**: {' / '.join(splits)}" for task, splits in gate_table.groupby("task")["split"].unique().items())))
    gate_table = gate_table.drop(columns=["split"])
show(gate_table, 3)
targets = english_targets(transfer)
if len(targets):
    display(Markdown("**English score vs each task's target (%)** — a fixed bar, chance (XCOPA) or the pre-trained "
                     "encoder's own score (LAReQA); `ci_low`–`ci_high` envelope the per-seed 95% CIs"))
    show(targets, 1)

# %% [markdown]
# ## Step 2: robust methods vs the baseline
# `res.comparison` from `compare_methods`: the mean over target languages of each method's score minus the baseline's (each averaged over
# its checkpoints), shown two ways (`checkpoints`): the checkpoints passing the gate, and every trained checkpoint (a
# collapsed run counts with what it scored). 95% CI: a bootstrap over test item ids, one draw per replicate shared by
# every language, seed and method (`se_items`; rows without per-item values: languages), plus the seed variance
# pooled over the baseline and every method of the task, or a side's own arm's where that is larger (`se_seeds`,
# `seed_variance`), t with Satterthwaite's df; a side with fewer than 3 seeds gets its difference and "too few
# seeds for an interval". The same for English accuracy
# under each attack (points), where robustness was scored: more robust than the baseline where that CI lies above 0.

# %%
comparison = res.comparison
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
# `res.points` from `merge_points`: one point per fine-tuned checkpoint, task, target language, alignment metric and layer, with
# the alignment and the task score (`score_metric` says which: accuracy, F1, ...); `gate_ok` marks the points
# whose checkpoint passes the gate. Below: the pairs per language the pair metrics used, and the pairs available.

# %%
points = res.points
show(points.merged.head(10), 4)
show(points.pools)

# %% [markdown]
# ### Alignment: robust methods vs the baseline, and "less drift"?
# `res.alignment_comparison` from `compare_alignment`, on the checkpoints that pass the gate, at the primary alignment measure (`report.primary`):
# per task, the mean over languages of each method's alignment minus the baseline's at the same seeds, its 95% CI
# from the parallel sentence pairs (items; one per English sentence, shared by the languages that have it) crossed
# with the checkpoints, the seed variance pooled over the task's arms or a side's own where larger (fewer than 3
# matched seeds: the difference
# and "too few seeds for an interval"). Then OLS over checkpoints: alignment ~ method, and + each checkpoint's weight
# drift over its trained parameters (the frozen word-embedding table is not drift): a method effect that shrinks
# once drift enters is "moves the weights less", not "aligns more".

# %%
alignment_cmp = res.alignment_comparison
show(alignment_cmp.table, 4)
show(alignment_cmp.drift, 4)

# %% [markdown]
# ## Step 4: RQ1, does the alignment a checkpoint reaches track the transfer it gets?
# `res.rq1` from `answer_rq1`, at the measure declared in `report.primary`, per task: across checkpoints within each language
# (unit: the checkpoint, the default primary `unit`; language fixed effects; checkpoint labels permuted, each
# checkpoint's alignment over all its languages moving as one block; CI by inverting that test); across languages
# (unit: the language; languages permuted and resampled; mostly what pre-training gave each language); and with
# checkpoint and language fixed effects (SEs clustered by both). Every other metric × layer is exploratory,
# Holm-adjusted within its family. Last, the within-language slope with and without each checkpoint's weight drift:
# a slope that shrinks once drift enters means part of "robust training aligns" is "robust training moves the
# weights less".

# %%
rq1 = res.rq1
if len(rq1.headline):
    plot_language_means(rq1.headline); plt.show()
    plot_alignment_vs_transfer(rq1.headline); plt.show()
display(Markdown(f"**Across checkpoints within languages** (unit: checkpoint; declared primary unit: {rq1.unit})"))
show(rq1_checkpoints(rq1).head(40), 4)
display(Markdown("**Across languages** (unit: language), then the exploratory tests"))
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
if len(rq1.english_fits):
    display(Markdown("**Learned less?** Across checkpoints (their means over the languages), alignment's slope "
                     "without and with each checkpoint's English selection score as a covariate (OLS): alignment's "
                     "relation to transfer at a given English score."))
    show(rq1.english_fits, 4)

# %% [markdown]
# ## Step 5: RQ2, does robust training improve alignment, most for low-resource languages?
# `res.rq2` from `answer_rq2`, primary: at the primary measure, each checkpoint's alignment on every Tatoeba language with a
# CC-100 size (common pool) minus the baseline's at the same seed, and minus the pre-trained encoder's: the mean
# gain and its slope on log10 CC-100 size, intervals from the seed and language strata, Holm within each reference.
# Secondary: the task score's seed-matched gains over the baseline, one point per language (a language in two
# tasks counts once), regressed on log10 CC-100 size; Holm across methods. Negative slope = larger gains for
# lower-resource languages.

# %%
rq2 = res.rq2
display(Markdown("**Alignment gains on Tatoeba** (primary; points = alignment × 100 in the summary)"))
show(rq2.alignment, 4)
if len(rq2.delta):
    plot_deltas(rq2.delta, metric=rq1.metric, layer=next(iter(rq1.layers.values()), None)); plt.show()
show(rq2_slopes(rq2), 4)
if len(rq2.frame):
    plot_gain_vs_resource(rq2.frame); plt.show()

# %% [markdown]
# ## Step 6: the summary
# `res.literature` from `check_claims`: each claim of the source paper (Huang et al. 2021) beside this study's
# estimate from step 2, with its interval and the verdict; then `res.summary` from `summarize`: every step's result
# in plain words, the answers in brief at its top.

# %%
show(res.literature, 2)
display(Markdown(res.summary))

# %% [markdown]
# ## Provenance

# %%
display(Markdown(f"git commit `{transfer['git_commit'].iloc[0] if len(transfer) else 'n/a'}` · params "
                 f"`{run.params_file}` · seeds {sorted(run.cfg.grid.seed)} · protocol `{run.cfg.protocol.name}`"))
display(Markdown("```yaml\n" + open(run.path("config.yaml")).read() + "\n```"))
