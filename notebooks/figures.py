# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Figures: claims, ablations, training curves, factors
#
# Everything here is read from the files `thadcr reproduce` writes under
# `results/<profile>/`: the claims table (`tables/claims.csv`, effects with 95 % intervals),
# each run's `log.csv`, and `factors.npz` (the factor correlation $C$ of section 2.3 and the
# confidence weights $g_i$ of the CA module, section 2.4). A figure whose inputs are missing
# says which file it needs. Our effects are R-sum differences on a small CPU data set; the
# paper's are on AudioCaps and Clotho. Read each claim by its interval, as the Experiments page
# does: a sign says something only when the whole interval lies on one side of 0 (the verdict
# records it); at this noise the sign of a point estimate alone says nothing, and neither does a
# count of such signs. Compare the paper's effect with the interval, not with the point. The
# code that reads the files and draws is folded under each "Show code cell source".

# %% tags=["parameters", "hide-input"]
profile = "tiny"  # "tiny" or "paper"
results_dir = None  # None: the results/ folder of this checkout

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from thadcr.interfaces.notebook import figures as page
from thadcr.interfaces.notebook.figures import COLUMN_INCHES
from thadcr.interfaces.notebook.method import (confidence_sentence,
                                               factor_loss_sentence, table1_run_id)
from thadcr.interfaces.notebook.results import missing_file, results_folder

page.figure_style()  # text at the body text's size in figures as wide as the column
root = results_folder(profile, results_dir)


def note(text):
    display(Markdown(f"*{text}*"))


def missing(path):
    display(missing_file(path, profile))


claims_path = root / "tables" / "claims.csv"
claims = pd.read_csv(claims_path) if claims_path.is_file() else None

# %% [markdown]
# ## Every claim: our effect with its interval, and the paper's
#
# One row per claim, grouped by the paper's table (the Tables page lists them and where the
# paper makes each): our R-sum difference between the better and the worse row, with its 95 %
# interval (coloured by the verdict), the paper's difference as an open black diamond, and zero
# as a vertical line. A claim holds here when its whole interval lies right of zero.

# %% tags=["hide-input"]
if claims is None:
    missing(claims_path)
else:
    decided = claims.dropna(subset=["effect"])
    if len(decided) < len(claims):
        left = ", ".join(f"T{r.table} {r.claim}" for r in claims.itertuples()
                         if pd.isna(r.effect))
        note(f"No paired runs yet for: {left}.")
    if len(decided):
        page.claims_forest_plot(decided)
        plt.show()

# %% [markdown]
# ## K, alpha and beta: changes from the default setting (Tables 4 and 5)
#
# The paper's Tables 4 and 5 change one of $K$, $\alpha$, $\beta$ from its default
# ($K = 8$, $\alpha = 0.01$, $\beta = 0.005$) and claim that the default is best. Below, each
# other value's R-sum minus the default's: ours with its 95 % interval (the claim's interval,
# mirrored), the paper's as a black diamond. The default is 0 by definition; our runs show the
# default to be better only where the whole interval lies below 0 (a point below 0 alone does
# not).


# %% tags=["hide-input"]
def changes(table: int, parameter: str) -> pd.DataFrame:
    """The claims of one table about one parameter: (value, change from the default)."""
    about = claims["claim"].str.startswith(parameter)
    rows = claims[(claims["table"] == table) & about]
    worse = rows["claim"].str.split(" > ").str[1]  # e.g. "K=6"
    return pd.DataFrame({
        "value": worse.str.split("=").str[1].astype(float),
        "ours": -rows["effect"].to_numpy(),
        "low": -rows["ci_high"].to_numpy(),
        "high": -rows["ci_low"].to_numpy(),
        "paper": -rows["paper_effect"].to_numpy(),
        "verdict": rows["verdict"].to_numpy(),
    })


panels = ((4, "K", 8.0), (5, "alpha", 0.01), (5, "beta", 0.005))
if claims is None:
    missing(claims_path)
else:
    fig, axes = plt.subplots(1, 3, figsize=(COLUMN_INCHES, 3.6), sharey=True,
                             layout="constrained")
    for ax, (table, parameter, default) in zip(axes, panels):
        frame = changes(table, parameter)
        ax.axhline(0, color="black", lw=0.8)
        ax.plot([default], [0], "o", color="tab:blue", label="default (0)")
        ok = frame.dropna(subset=["ours"])
        ax.errorbar(ok["value"], ok["ours"], fmt="o", capsize=3, color="tab:blue",
                    yerr=[ok["ours"] - ok["low"], ok["high"] - ok["ours"]],
                    label="ours, 95 % interval")
        ax.scatter(frame["value"], frame["paper"], marker="D", color="black", zorder=3,
                   label="paper")
        values = sorted({default, *frame["value"]})
        ax.set_xscale("linear" if parameter == "K" else "log")
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
        ax.margins(x=0.15)
        ax.set(title=f"Table {table}: {parameter}", xlabel=parameter)
    axes[0].set_ylabel("R-sum change from the default")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    plt.show()

# %% [markdown]
# ## Training curves of the variants (Table 1, every seed)
#
# The training loss $\mathcal{L}$ after each epoch and the validation R-sum (the six validation
# recalls added) after the epochs that were validated, from the `log.csv` of every Table 1 run
# (THA rows: seed 0 only). The loss has one panel per method, all on one logarithmic y scale
# (it falls more than tenfold, and a log scale keeps the late epochs apart), so that a curve can
# be compared with its neighbours'; thin grey lines are single seeds, the thick blue line their
# mean. The tiny profile validates only its last epoch (`val_every: 8`), so its R-sum is one
# value per run and has no curve: one panel shows the methods side by side, each seed a grey
# dot, their mean a blue bar. For DCR and THA+DCR, $\mathcal{L}$ includes
# $\alpha \mathcal{L}_D + \beta \mathcal{L}_A$ beside the contrastive loss $\mathcal{L}_S$
# that all variants share. The reading under the figure is computed from the same files.

# %% tags=["hide-input"]
page.show_training_curves(root, profile)

# %% [markdown]
# ## Factor correlation $C$ before and after training, and the confidence weights $g_i$
#
# $C$ is computed on the matching test pairs (section 2.3): decoupling ($\mathcal{L}_D$)
# pushes the off-diagonal entries to 0, alignment ($\mathcal{L}_A$) the diagonal to 1. $g_i$ is
# the CA module's confidence (section 2.4) for matching and non-matching caption-clip pairs.
# Both come from the THA+DCR run of Table 1 with the default settings and seed 0 (the DCR run
# when that one is missing), read by its run id; the sentences below the figures are computed
# from the file.

# %% tags=["hide-input"]
factors, factors_run = None, None
for method in ("THA+DCR", "DCR"):
    path = root / "runs" / table1_run_id(method) / "factors.npz"
    if path.is_file():
        factors, factors_run = np.load(path), path.parent.name
        break
    missing(path)
if factors is not None:
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN_INCHES, 3.4), layout="constrained")
    keys = (("C_initial", "untrained"), ("C_trained", "trained"))
    for ax, (key, title) in zip(axes, keys):
        image = ax.imshow(factors[key], vmin=-1, vmax=1, cmap="vlag")
        ax.grid(False)
        ax.set(title=f"C {title}", xlabel="audio factor j", ylabel="text factor i")
    fig.colorbar(image, ax=axes, shrink=0.8)
    fig.suptitle(factors_run)
    plt.show()
    C_initial, C_trained = factors["C_initial"], factors["C_trained"]
    display(Markdown(factor_loss_sentence(C_initial, C_trained)))

# %% tags=["hide-input"]
if factors is not None and "g_positive" in factors.files:
    weights = pd.concat([
        pd.DataFrame({"g": factors["g_positive"].ravel(), "pair": "matching"}),
        pd.DataFrame({"g": factors["g_negative"].ravel(), "pair": "non-matching"}),
    ])
    fig, ax = plt.subplots(figsize=(COLUMN_INCHES, 3.6), layout="constrained")
    sns.histplot(weights, x="g", hue="pair", stat="density", common_norm=False,
                 element="step", ax=ax)
    ax.set_title(f"confidence weights g_i on the test set\n{factors_run}")
    plt.show()
    g_positive, g_negative = factors["g_positive"], factors["g_negative"]
    display(Markdown(confidence_sentence(g_positive, g_negative)))
elif factors is not None:
    note(f"{factors_run}/factors.npz holds no confidence weights "
         "(g_positive, g_negative).")
