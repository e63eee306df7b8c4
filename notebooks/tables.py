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
# # Tables 1-5: the paper's claims, and ours beside the paper's numbers
#
# Everything on this page is read from the files `thadcr reproduce` writes under
# `results/<profile>/tables/` and `summary.json`; the page computes nothing new. A file that
# is missing is named, with the command that makes it.

# %% tags=["parameters"]
profile = "tiny"  # "tiny" or "paper"
results_dir = None  # None: the results/ folder of this checkout

# %%
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from thadcr.reproduce import REPO_ROOT, TABLE_TITLES, TABLES, paper_layout

root = (Path(results_dir) if results_dir else REPO_ROOT / "results") / profile
make = f"run `thadcr reproduce --profile {profile}` first"


def missing(path: Path, what: str = "") -> None:
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    display(Markdown(f"**`{shown}` is missing**{what}: {make}."))


# %% [markdown]
# ## The claims
#
# The paper draws pairwise orderings from its tables: THA and DCR beat DP (HTSAT), THA+DP
# beats THA, THA+DCR beats every other row, each DCR part improves on the previous row, and
# $K = 8$, $\alpha = 0.01$, $\beta = 0.005$ beat the other values tried. We add DP (HTSAT)
# above DP (ResNet38) in Table 1: the text argues for a Transformer audio encoder (sections 1
# and 2.1) but does not state this comparison. `thadcr.claims` turns each into one row,
# compared on R-sum (the six recalls added):
#
# - `paper_effect`: the paper's R-sum of the better row minus that of the worse row;
# - `effect`: ours, the mean over the seeds run for both settings of the same difference;
# - `95 % interval`: its interval, from the seed-to-seed spread and a bootstrap over the test
#   clips (how: the claims section of the reproduction notes);
# - `verdict`: `holds` when the whole interval is above 0, `contradicted` when it is below 0,
#   `undecided` when it contains 0, `missing` when a run is not there.
#
# The Figures page draws the same rows as a forest plot.

# %%
claims_path = root / "tables" / "claims.csv"
if not claims_path.is_file():
    missing(claims_path, " (it needs each run's `test_ranks.npz`)")
else:
    claims = pd.read_csv(claims_path)
    shown = claims.assign(
        interval=[f"{lo:.1f} to {hi:.1f}" if pd.notna(lo) else "" for lo, hi in
                  zip(claims["ci_low"], claims["ci_high"])],
    )[["table", "claim", "basis", "paper_effect", "effect", "interval", "verdict",
       "n_seeds"]].rename(columns={"interval": "95 % interval", "n_seeds": "seeds"})
    display(shown.round(1))
    counts = claims["verdict"].value_counts()
    tally = ", ".join(f"{counts.get(v, 0)} {v}"
                      for v in ("holds", "undecided", "contradicted", "missing"))
    display(Markdown(f"Verdicts of the {len(claims)} claims on the `{profile}` runs: "
                     f"{tally}."))

# %% [markdown]
# ## The runs behind the tables

# %%
summary_path = root / "summary.json"
summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None


def hours(seconds):
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


if summary is None:
    missing(summary_path)
else:
    runs, wall, host = summary["runs"], summary["wall_time_s"], summary["machine"]
    datasets = ", ".join(f"{name} (`{info['data_root']}`)"
                         for name, info in summary["datasets"].items()) or "none"
    lines = [
        f"- **Profile**: `{summary['profile']}`; **data sets**: {datasets}",
        f"- **Runs**: {runs['complete']} of {runs['planned']} complete",
        f"- **Wall time**: {hours(wall['sum_of_runs'])} summed over runs; "
        f"{hours(wall['execute_elapsed'])} measured over "
        f"{len(wall['execute_calls'])} execute call(s)",
        f"- **Machine**: {host['platform']}, {host['cpu_count']} CPUs; "
        f"run devices: {', '.join(host['run_devices']) or '-'}",
    ]
    if runs["missing"]:
        lines.append(f"- **Missing runs** ({len(runs['missing'])}): "
                     + ", ".join(f"`{r}`" for r in runs["missing"]))
    display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Tables 1-5
#
# Each table is laid out as in the paper (rows: methods; columns: text-to-audio and
# audio-to-text R@1/5/10, in %), plus an R-sum column. Per method, "ours" is the mean ± sample
# standard deviation over the seeds we ran (no ± for a single seed) and "paper" the published
# value.

# %%
for table in TABLES:
    path = root / "tables" / f"table{table}.csv"
    display(Markdown(f"### Table {table}: {TABLE_TITLES[table]}"))
    if not path.is_file():
        missing(path)
        continue
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    display(paper_layout(frame))
    not_run = sorted({r for cell in frame["missing"].dropna() for r in cell.split(";")})
    if not_run:
        display(Markdown("Not yet run (shown as *missing*): "
                         + ", ".join(f"`{r}`" for r in not_run)))

# %% [markdown]
# ### How far apart the seeds of one row are
#
# Table 1 is the only table run with three seeds. The seed-to-seed standard deviation of each
# row's test R-sum, pooled over the rows (the square root of the mean variance), is the noise a
# single-run comparison of Tables 2-5 carries; it mixes the seed's effect on the trained model
# with the luck of which test queries succeed (reproduction notes, claims section).

# %%
learning_path = root / "tables" / "learning.csv"
if learning_path.is_file():
    from thadcr.claims import pooled_seed_sd
    from thadcr.reproduce import plan

    rsum = pd.read_csv(learning_path).set_index("run")["rsum"].to_dict()
    pooled, per_setting = pooled_seed_sd(rsum, plan(profile))
    names = [setting.split("-")[1:3] for setting in per_setting]
    spreads = ", ".join(f"{variant} ({encoder}) {sd:.1f}"
                        for (variant, encoder), sd in zip(names, per_setting.values()))
    display(Markdown(f"Pooled seed SD of Table 1's R-sum: **{pooled:.1f}** points "
                     f"(per row: {spreads})."))

# %% [markdown]
# ## Does every run learn?
#
# Each run's test R@10 divided by the R@10 of a random ranking on the same split
# (`thadcr.metrics.chance_recall`: 10 / clips text-to-audio; at least one of a clip's captions
# in the top 10 audio-to-text), weakest runs first.

# %%
learning_path = root / "tables" / "learning.csv"
if not learning_path.is_file():
    missing(learning_path)
else:
    learning = pd.read_csv(learning_path)
    ratios = learning[["t2a_x_chance", "a2t_x_chance"]]
    order = ratios.min(axis=1).sort_values().index
    display(learning.loc[order].round(2).reset_index(drop=True))
    both = (ratios >= 3).all(axis=1).sum()
    t2a, a2t = learning["t2a_x_chance"], learning["a2t_x_chance"]
    display(Markdown(
        f"Text-to-audio {t2a.min():.1f}-{t2a.max():.1f} times chance, audio-to-text "
        f"{a2t.min():.1f}-{a2t.max():.1f} times; **{both} of {len(learning)}** runs at "
        "least 3 times chance in both directions."
    ))
