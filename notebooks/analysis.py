# %% [markdown]
# # Does robust training align languages, and does alignment explain zero-shot transfer?

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder

# %%
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from xltlib import analysis as A
from xltlib.report import analyze, score_name, suite_table, task_coverage, transfer_table
from xltlib.stages import Run, load_results, majority_rates

warnings.filterwarnings("ignore")
pd.set_option("display.max_columns", None)  # every language of a task, not the first and last ten
run = Run.open(run_dir)
transfer, alignment = load_results(run, "transfer"), load_results(run, "alignment")
res = analyze(transfer, alignment, headline_metric=run.cfg.report.correlation_metric,
              n_boot=run.cfg.report.n_boot, n_perm=run.cfg.report.n_perm, seed=run.cfg.report.seed,
              expected_cells=[c["cell_id"] for c in run.cells()], majority=majority_rates(run))

# %%
display(Markdown(res["summary"]))

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
# Each point is one (checkpoint, target language). Correlations resample languages (cluster bootstrap);
# the permutation test shuffles transfer across languages within a checkpoint; Holm corrects across all
# metric × layer tests.

# %%
if "headline_frame" in res:
    h = res["headline"]
    display(Markdown(f"Headline measure: `{h['metric']}` at the last layer ({h['last_layer']})."))
    A.plot_alignment_vs_transfer(res["headline_frame"]); plt.show()
    A.plot_corr_by_layer(res["corr"]); plt.show()
    display(Markdown("**Regressions** (last layer): OLS with language and method fixed effects; mixed model "
                     "with a random intercept per language."))
    display(res["ols"]); display(res["mixed"])
    if "corr_by_seed" in res:
        display(Markdown(f"**Per seed** (`{h['metric']}`, every layer; Holm within this table)"))
        display(res["corr_by_seed"].sort_values(["layer", "seed"]).round(3))
    display(Markdown("**All correlations** (sorted by Holm-adjusted p)"))
    display(res["corr"].sort_values("p_holm").round(3).head(40))

# %% [markdown]
# ## Δ-analysis and RQ2: robust minus baseline, and low-resource languages

# %%
if "delta" in res:
    A.plot_deltas(res["delta"], metric=res["headline"]["metric"], layer=res["headline"]["last_layer"]); plt.show()
    display(Markdown("**Transfer gain vs CC-100 size** (slope per method; negative = larger gains for "
                     "lower-resource languages)"))
    display(res["gain_slopes"].round(4))
    A.plot_gain_vs_resource(res["gain_frame"]); plt.show()
    display(Markdown("**Alignment gain vs CC-100 size**"))
    display(res["align_gain_slopes"].round(4))

# %% [markdown]
# ## Provenance

# %%
import json
display(Markdown(f"git commit `{transfer['git_commit'].iloc[0] if len(transfer) else 'n/a'}` · params "
                 f"`{run.params_file}` · seeds {sorted(run.cfg.grid.seed)} · protocol `{run.cfg.protocol.name}`"))
display(Markdown("```yaml\n" + open(run.path("config.yaml")).read() + "\n```"))
