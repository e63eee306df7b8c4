# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tables
#
# *Stand-in page: the real notebook (Tables 1-5 from `results/tiny/`) replaces this file.*
# Here: the paper's own Table 1 (AudioCaps), read from `data/paper_results.csv`.

# %%
import pandas as pd

paper = pd.read_csv("../data/paper_results.csv")
table1 = paper[paper["table"] == 1].pivot(index="method", columns="metric", values="mean")
table1.loc[paper[paper["table"] == 1]["method"].unique()]
