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
# # Tables 1-5: ours beside the paper's
#
# Each table is laid out as in the paper (rows: methods; columns: text-to-audio and
# audio-to-text R@1/5/10, in %). Per method, "ours" is the mean ± sample standard deviation
# over the seeds we ran (no ± for a single seed), "paper" the published value and "diff" ours
# minus the paper's, in percentage points. The numbers come from `thadcr reproduce`
# (`results/<profile>/tables/*.csv` and `summary.json`); this page only reads them.

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
summary_path = root / "summary.json"
summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None


def hours(seconds):
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


if summary is None:
    display(Markdown(f"**No results yet**: `{summary_path}` is missing. Run `thadcr reproduce --profile {profile}`."))
else:
    runs, wall, host = summary["runs"], summary["wall_time_s"], summary["machine"]
    datasets = ", ".join(f"{name} (`{info['data_root']}`)" for name, info in summary["datasets"].items()) or "none"
    lines = [
        f"- **Profile**: `{summary['profile']}`; **data sets**: {datasets}",
        f"- **Runs**: {runs['complete']} of {runs['planned']} complete",
        f"- **Wall time**: {hours(wall['sum_of_runs'])} summed over runs; "
        f"{hours(wall['execute_elapsed'])} measured over {len(wall['execute_calls'])} execute call(s)",
        f"- **Machine**: {host['platform']}, {host['cpu_count']} CPUs; "
        f"run devices: {', '.join(host['run_devices']) or '-'}",
    ]
    if runs["missing"]:
        lines.append(f"- **Missing runs** ({len(runs['missing'])}): " + ", ".join(f"`{r}`" for r in runs["missing"]))
    display(Markdown("\n".join(lines)))

# %%
for table in TABLES:
    path = root / "tables" / f"table{table}.csv"
    display(Markdown(f"### Table {table}: {TABLE_TITLES[table]}"))
    if not path.is_file():
        display(Markdown(f"`{path}` is missing: run `thadcr reproduce --profile {profile}` first."))
        continue
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    display(paper_layout(frame))
    missing = sorted({r for cell in frame["missing"].dropna() for r in cell.split(";")})
    if missing:
        display(Markdown("Not yet run (shown as *missing*): " + ", ".join(f"`{r}`" for r in missing)))

# %% [markdown]
# ## Which of the paper's orderings hold here
#
# The paper's text draws orderings from its tables: HTS-AT beats ResNet38, THA beats DP and
# THA+DP beats THA, THA+DCR is best, each DCR part helps, K = 8, alpha = 0.01 and beta = 0.005 are
# best. Each is checked below on R-sum (the six recalls added up, mean over the finished seeds),
# in the paper's numbers and in ours. `smallest_gap` is the smallest difference the claim rests
# on and `spread` the largest seed-to-seed standard deviation of R-sum among the rows involved:
# an ordering whose gap is below the spread is not resolved by these runs. Empty cells mean
# runs are missing.

# %%
orderings_path = root / "tables" / "orderings.csv"
if orderings_path.is_file():
    claims = pd.read_csv(orderings_path)
    display(claims[["table", "claim", "holds_in_paper", "holds_in_ours", "smallest_gap", "spread", "ours_rsum"]])
    decided = claims.dropna(subset=["holds_in_ours"])
    held = decided[decided.holds_in_ours.astype(str) == "True"]
    resolved = held[held.smallest_gap > held.spread.fillna(0)]
    display(Markdown(
        f"**{len(held)} of {len(decided)}** checked claims hold in our runs; "
        f"{len(resolved)} of those by more than the seed spread."
    ))
else:
    display(Markdown(f"`{orderings_path}` is missing: run `thadcr reproduce --profile {profile}` first."))

# %% [markdown]
# ## Does every run learn?
#
# Each run's test R@10 divided by the R@10 of a random ranking on the same split
# (`thadcr.metrics.chance_recall`: 10 / clips text-to-audio; at least one of a clip's captions in
# the top 10 audio-to-text), weakest runs first.

# %%
learning_path = root / "tables" / "learning.csv"
if learning_path.is_file():
    learning = pd.read_csv(learning_path)
    learning["weaker"] = learning[["t2a_x_chance", "a2t_x_chance"]].min(axis=1)
    display(learning.sort_values("weaker").drop(columns="weaker").round(2).reset_index(drop=True))
    both = learning[(learning.t2a_x_chance >= 3) & (learning.a2t_x_chance >= 3)]
    display(Markdown(
        f"Text-to-audio {learning.t2a_x_chance.min():.1f}-{learning.t2a_x_chance.max():.1f} times chance, "
        f"audio-to-text {learning.a2t_x_chance.min():.1f}-{learning.a2t_x_chance.max():.1f} times; "
        f"**{len(both)} of {len(learning)}** runs at least 3 times chance in both directions."
    ))
else:
    display(Markdown(f"`{learning_path}` is missing: run `thadcr reproduce --profile {profile}` first."))
