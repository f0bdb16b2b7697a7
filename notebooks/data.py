# %% [markdown]
# # Data
# Which English rows train each task's checkpoints and which rows of every language score them
# (`xltlib.data.split`). Under `zero_shot` (XTREME's protocol) the model trains on the task's English training
# sets and every language's labelled *test* split is scored, the same row indices in every language; no
# training row's translation is scored. `offline_dev_split` splits English dev by group instead.

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder (set by `xlt run`)

# %%
import pandas as pd
from IPython.display import Markdown, display

from xltlib.data.trainsets import TRAIN_SETS
from xltlib.reporting.tables import show
from xltlib.runner.stages import Run, stage_data

run = Run.open(run_dir)
summary = stage_data(run)
p = run.cfg.protocol
caps = (", ".join(f"{task}: {cap or 'all'}" for task, cap in p.max_train.items()) if isinstance(p.max_train, dict)
        else p.max_train or "all")
display(Markdown(
    f"**Protocol `{p.name}`** · row samples drawn with seed {p.split_seed} · at most "
    f"{caps} training rows and {p.max_eval or 'all'} scored rows per language · data folder: "
    f"`{run.data_dir or 'Hugging Face hub'}`."))

# %%
show(summary)

# %% [markdown]
# **Training sets used** (registered in `xltlib.data.trainsets`; `xlt list train-sets` lists them all)

# %%
used = sorted({s for task in run.cfg.grid.task for s in run.split(task).train_rows if s in TRAIN_SETS})
show(pd.DataFrame([dict(name=s, task=TRAIN_SETS[s].task, file=TRAIN_SETS[s].layout, notes=TRAIN_SETS[s].notes)
                   for s in used]))
