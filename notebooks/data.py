# %% [markdown]
# # Data
# Which rows of each task every cell trains and evaluates on (the offline protocol, see `xltlib.tasks`).

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder (set by `xlt run`)

# %%
import pandas as pd
from IPython.display import Markdown, display

from xltlib.stages import Run, stage_data

run = Run.open(run_dir)
summary = stage_data(run)
p = run.cfg.protocol
display(Markdown(
    f"**Protocol `{p.name}`**: {p.train_fraction:.0%} of the English dev groups (XNLI premise blocks, "
    f"PAWS-X shared-sentence groups; split seed {p.split_seed}) train the model; the other rows, the same "
    f"row indices in every language, are evaluated. Data folder: `{run.data_dir or 'Hugging Face hub'}`."))

# %%
summary
