# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Figures: ablations, variants, training curves, factors
#
# Everything here is read from the files `thadcr reproduce` writes under `results/<profile>/`:
# the table CSVs (ours and the paper's values), each run's `log.csv`, and `factors.npz` (the
# factor correlation C of Eq. 3's covariance and the confidence weights g_i of the CA module,
# section 2.4). A figure whose inputs are missing says which files it needs.

# %% tags=["parameters"]
profile = "tiny"  # "tiny" or "paper"
results_dir = None  # None: the results/ folder of this checkout

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from matplotlib.ticker import MaxNLocator

from thadcr.reproduce import METRICS, REPO_ROOT

sns.set_theme(style="whitegrid")
root = (Path(results_dir) if results_dir else REPO_ROOT / "results") / profile


def note(text):
    display(Markdown(f"*{text}*"))


def load_table(number):
    """A table CSV in long form with one row per (method, metric, source), or None when absent."""
    path = root / "tables" / f"table{number}.csv"
    if not path.is_file():
        note(f"{path} is missing: run `thadcr reproduce --profile {profile}` first.")
        return None
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    frame = frame[frame["metric"].isin(METRICS)]
    empty = sorted(frame.loc[frame["n_runs"] == 0, "method"].unique())
    if empty:
        note(f"Table {number}: no finished run yet for {', '.join(empty)}.")
    ours = frame.assign(source="ours", value=frame["ours_mean"], std=frame["ours_std"])
    paper = frame.assign(source="paper", value=frame["paper_mean"], std=frame["paper_std"])
    long = pd.concat([ours, paper], ignore_index=True)[["method", "metric", "source", "value", "std", "runs"]]
    long["direction"] = long["metric"].str[:3].map({"t2a": "text-to-audio", "a2t": "audio-to-text"})
    long["recall"] = "R@" + long["metric"].str.split("_R").str[1]
    return long


def first_run(long, method):
    """The first finished run id of a method (seed 0 when present), or None."""
    runs = long.loc[(long["method"] == method) & (long["source"] == "ours"), "runs"].dropna()
    return runs.iloc[0].split(";")[0] if len(runs) and runs.iloc[0] else None


# %% [markdown]
# ## Recall against the number of latent factors K (Table 4)

# %%
t4 = load_table(4)
if t4 is not None:
    t4["K"] = t4["method"].str.removeprefix("K=").astype(int)
    grid = sns.relplot(t4, x="K", y="value", hue="recall", style="source", col="direction",
                       kind="line", markers=True, height=3.5, aspect=1.2)
    grid.set(xticks=sorted(t4["K"].unique()), ylabel="recall (%)")

# %% [markdown]
# ## Sensitivity to alpha (weight of L_D) and beta (weight of L_A) (Table 5)

# %%
t5 = load_table(5)
if t5 is not None:
    t5[["parameter", "setting"]] = t5["method"].str.split("=", expand=True)
    t5["setting"] = t5["setting"].astype(float)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharey="row")
    for row, direction in enumerate(("text-to-audio", "audio-to-text")):
        for col, parameter in enumerate(("alpha", "beta")):
            part = t5[(t5["parameter"] == parameter) & (t5["direction"] == direction)]
            sns.lineplot(part, x="setting", y="value", hue="recall", style="source", markers=True, ax=axes[row, col],
                         legend=(row, col) == (0, 1))
            axes[row, col].set(xscale="log", xlabel=parameter, ylabel="recall (%)", title=f"{direction}, {parameter}")
            settings = sorted(part["setting"].unique())
            axes[row, col].set_xticks(settings, [f"{v:g}" for v in settings])
            axes[row, col].minorticks_off()
    sns.move_legend(axes[0, 1], "upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()


# %% [markdown]
# ## Variants against the paper (Tables 1 and 2)
# Bars: mean over seeds; error bars: sample standard deviation (Table 1, where the paper gives
# it too); Table 2 is a single run per variant.

# %%
def variant_bars(long, title):
    methods = list(dict.fromkeys(long["method"]))
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharey="row")
    width = 0.4
    for ax, metric in zip(axes.flat, METRICS):
        for offset, source in ((-width / 2, "ours"), (width / 2, "paper")):
            part = long[(long["metric"] == metric) & (long["source"] == source)].set_index("method").loc[methods]
            ax.bar(np.arange(len(methods)) + offset, part["value"], width, yerr=part["std"].fillna(0),
                   capsize=3, label=source)
        ax.set_xticks(np.arange(len(methods)), methods, rotation=35, ha="right")
        ax.set_title(metric.replace("_", " "))
    axes[0, 0].set_ylabel("recall (%)")
    axes[1, 0].set_ylabel("recall (%)")
    axes[0, 0].legend()
    fig.suptitle(title)
    fig.tight_layout()


t1, t2 = load_table(1), load_table(2)
for table, title in ((t1, "Table 1 (AudioCaps)"), (t2, "Table 2 (Clotho)")):
    if table is not None:
        variant_bars(table, title)

# %% [markdown]
# ## Training curves of the variants (Table 1, first seed)

# %%
curves = []
if t1 is not None:
    for method in dict.fromkeys(t1["method"]):
        run_id = first_run(t1, method)
        path = root / "runs" / str(run_id) / "log.csv"
        if run_id is None or not path.is_file():
            note(f"no training log for {method} ({path if run_id else 'no finished run'}).")
            continue
        curves.append(pd.read_csv(path).assign(method=method))
if curves:
    curves = pd.concat(curves, ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    sns.lineplot(curves, x="epoch", y="loss", hue="method", marker="o", ax=axes[0])
    axes[0].set_title("training loss L")
    sns.lineplot(curves, x="epoch", y="val_t2a_R1", hue="method", marker="o", ax=axes[1])
    axes[1].set(title="validation text-to-audio R@1", ylabel="R@1 (%)")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()

# %% [markdown]
# ## Factor correlation C before and after training, and the confidence weights g_i
# C is computed on the matching test pairs (section 2.3): decoupling (L_D) pushes the
# off-diagonal entries to 0, alignment (L_A) the diagonal to 1. g_i is the CA module's
# confidence (section 2.4) for matching and non-matching caption-clip pairs.

# %%
factors = None
if t1 is not None:
    for method in ("THA+DCR", "DCR"):
        run_id = first_run(t1, method)
        path = root / "runs" / str(run_id) / "factors.npz"
        if run_id is not None and path.is_file():
            factors, factors_method = np.load(path), method
            break
if factors is None:
    note("no factors.npz from a THA+DCR or DCR run of Table 1 yet.")
else:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for ax, key, title in zip(axes, ("C_initial", "C_trained"), ("untrained", "trained")):
        image = ax.imshow(factors[key], vmin=-1, vmax=1, cmap="vlag")
        ax.grid(False)
        ax.set(title=f"C {title} ({factors_method})", xlabel="audio factor j", ylabel="text factor i")
    fig.colorbar(image, ax=axes, shrink=0.8)

# %%
if factors is not None and "g_positive" in factors.files:
    weights = pd.concat([
        pd.DataFrame({"g": factors["g_positive"].ravel(), "pair": "matching"}),
        pd.DataFrame({"g": factors["g_negative"].ravel(), "pair": "non-matching"}),
    ])
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.histplot(weights, x="g", hue="pair", stat="density", common_norm=False, element="step", ax=ax)
    ax.set_title(f"confidence weights g_i on the test set ({factors_method})")
elif factors is not None:
    note("factors.npz holds no confidence weights (g_positive, g_negative).")
