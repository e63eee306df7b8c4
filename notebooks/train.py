# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Train one run
#
# This notebook trains and tests one variant of the paper's Tables 1-5 with
# `thadcr.run.train.train` (all model code lives in the package) and shows its training curves and
# test metrics. `thadcr reproduce` runs it once per run with papermill, e.g.
# `papermill notebooks/train.ipynb out.ipynb -p variant THA -p seed 1`.

# %% tags=["parameters"]
variant = "THA+DCR"  # DP, THA, THA+DP, DCR, THA+DCR, DP+LD, DP+LD+LA
dataset = "audiocaps"  # "audiocaps" or "clotho"
profile = "tiny"  # "tiny" (embedded data, CPU) or "paper" (the paper's data and models)
seed = 0
n_factors = 8  # K, the number of latent factors (section 2.3)
alpha = 0.01  # weight of L_D
beta = 0.005  # weight of L_A
epochs = None  # None: the profile's default
out_dir = "results/manual/run"
device = "auto"  # "auto" (CUDA when present), "cpu", "cuda:0", ...
overrides = {}  # other Config keys, e.g. {"audio_encoder": "resnet38"}
resume = False  # continue an interrupted run in out_dir
progress = "bar"  # "bar", "lines" (one line per epoch; thadcr reproduce) or "none"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from thadcr.experiments.plan import config_from_parameters
from thadcr.run.train import train

config = config_from_parameters({
    "variant": variant, "dataset": dataset, "profile": profile, "seed": seed, "n_factors": n_factors,
    "alpha": alpha, "beta": beta, "epochs": epochs, "device": device, "overrides": overrides,
})  # fmt: skip
pd.Series(config.to_dict(), name="value").to_frame()

# %% [markdown]
# ## Training
# One epoch is tested: with `model_selection: best_val` (the paper profiles) the best on
# validation text-to-audio R@1 + R@5 + R@10, with `last` (the tiny profile) the last one. Every
# file of the run (log.csv, checkpoints, metrics.json last) is written to `out_dir`.

# %%
metrics = train(config, out_dir, resume=resume, progress=progress)

# %% [markdown]
# ## Training curves

# %%
log = pd.read_csv(Path(out_dir) / "log.csv")
loss_terms = [c for c in ("loss", "loss_S", "loss_D", "loss_A") if c in log.columns]
recall_terms = [c for c in log.columns if c.startswith("val_")]
losses = log.melt(id_vars="epoch", value_vars=loss_terms, var_name="term", value_name="value")
recalls = log.melt(id_vars="epoch", value_vars=recall_terms, var_name="metric", value_name="recall (%)")
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
sns.lineplot(losses, x="epoch", y="value", hue="term", marker="o", ax=axes[0])
axes[0].set_title("training loss (epoch mean)")
sns.lineplot(recalls, x="epoch", y="recall (%)", hue="metric", marker="o", ax=axes[1])
axes[1].set_title("validation recall")
for ax in axes:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
fig.suptitle(f"{variant} on {dataset} ({profile}), seed {seed}")
fig.tight_layout()

# %% [markdown]
# ## Test metrics (the tested epoch)

# %%
test = metrics["test"]
columns = {"R@1": "R1", "R@5": "R5", "R@10": "R10", "mAP@10": "mAP10"}
table = pd.DataFrame(
    {name: [test.get(f"{d}_{key}") for d in ("t2a", "a2t")] for name, key in columns.items()},
    index=["Text-to-Audio", "Audio-to-Text"],
)
print(f"tested epoch {metrics['best_epoch']} (model_selection: {config.model_selection}), device {metrics['device']}, wall time {metrics['wall_time_s']:.0f} s")
table.round(2)
