# %% [markdown]
# # Alignment
# How well each checkpoint aligns languages, per layer, on parallel data that never scores transfer
# (see `xltlib.data.parallel`: LASER Tatoeba; XNLI premises of the *training* split; PUD sentences; MUSE words).
# Layer 0 is the embedding output. Every metric of every checkpoint is in `results/alignment/`.
# `retrieval.acc1_en2xx` queries with English and searches the xx sentences: XTREME's Tatoeba direction.
# Pair metrics use one pool size per dataset (the smallest language's, a seeded subsample of the others), so
# retrieval accuracy compares across languages; `cka.cka` is debiased CKA (unbiased HSIC), near 0 for unrelated
# representations at any pool size, where linear CKA (`cka.cka_linear_biased`, its n and d in the row) is not.
# Retrieval also keeps each sentence pair's top-1 outcome (`results/alignment_outcomes/`) for the item-level
# comparison of checkpoints in the analysis.

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder
unit = ""  # one checkpoint only (a unit of a distributed run, xltlib.runner.executors); empty: every checkpoint
compute = True  # False: show the rows on disk and compute nothing (the page after distributed units)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from xltlib.analysis.merge import alignment_pools
from xltlib.reporting.plots import alignment_heatmaps, plot_heatmap
from xltlib.reporting.tables import alignment_summary, langid_by_layer, show
from xltlib.runner.stages import Run, stage_alignment

run = Run.open(run_dir)
alignment = stage_alignment(run, unit=unit, compute=compute)
display(Markdown(f"{alignment['checkpoint'].nunique()} checkpoints (the pre-trained model and every fine-tuned "
                 f"one) · datasets: {', '.join(sorted(alignment['dataset'].unique()))} · metrics: "
                 f"{', '.join(sorted(alignment['metric'].unique()))}"))

# %% [markdown]
# ## Pool per language: pairs scored (n) and pairs available

# %%
show(alignment_pools(alignment))

# %% [markdown]
# ## Pre-trained model: last layer and best layer per language

# %%
show(alignment_summary(alignment))

# %% [markdown]
# ## Language-ID probe accuracy by layer (lower = more language-neutral)

# %%
show(langid_by_layer(alignment))

# %% [markdown]
# ## Heat-maps: language × layer, pre-trained and the change after fine-tuning with each method

# %%
for title, frame, kwargs in alignment_heatmaps(alignment):
    plot_heatmap(title, frame, kwargs); plt.show()
