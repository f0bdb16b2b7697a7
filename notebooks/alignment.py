# %% [markdown]
# # Alignment
# How well each checkpoint aligns languages, per layer, on parallel sentences that never score transfer
# (LASER Tatoeba; and, when asked for, XNLI premises of the *training* split). Layer 0 is the embedding output.

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder

# %%
import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import Markdown, display

from xltlib.report import alignment_heatmaps, alignment_summary
from xltlib.stages import Run, stage_alignment

run = Run.open(run_dir)
alignment = stage_alignment(run)
display(Markdown(f"{alignment['checkpoint'].nunique()} checkpoints · metrics: "
                 f"{', '.join(sorted(alignment['metric'].unique()))}"))

# %%
display(Markdown("### Last layer and best layer, per language (pre-trained model)"))
display(alignment_summary(alignment))

# %%
for title, frame, kwargs in alignment_heatmaps(alignment):
    fig, ax = plt.subplots(figsize=(0.5 * frame.shape[1] + 2.5, 0.3 * frame.shape[0] + 1.5))
    sns.heatmap(frame, ax=ax, **kwargs)
    ax.set_title(title); ax.set_xlabel("layer"); ax.set_ylabel("language")
    plt.show()
