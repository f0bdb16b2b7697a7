# %% [markdown]
# # Fine-tuning one grid cell

# %% tags=["parameters"]
run_dir = ""  # absolute path of the run folder
cell_id = ""  # which grid cell (model__task__method__seed)

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from xltlib.stages import Run, find_cell, stage_train

run = Run.open(run_dir)
cell = find_cell(run, cell_id)
log = stage_train(run, cell_id)
secs = log["elapsed_s"].iloc[-1]
display(Markdown(
    f"**{cell['task']}** · method **{cell['method']}** (`{cell['method_type']}` {cell['method_params'] or ''}) · "
    f"seed {cell['seed']} · model `{cell['model']}`  \n"
    f"{len(log)} steps, {log['examples'].iloc[-1]} examples, {log['tokens'].iloc[-1]:,} tokens in {secs:.0f} s "
    f"({log['examples'].iloc[-1] / secs:.1f} examples/s, bf16={run.cfg.train.bf16})"))

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(log["step"], log["loss"], alpha=0.4, label="loss")
ax.plot(log["step"], log["loss"].rolling(10, min_periods=1).mean(), label="moving mean (10)")
ax.set_xlabel("step"); ax.set_ylabel("training loss"); ax.legend(); fig.tight_layout()
