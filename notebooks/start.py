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
# # Start: audio-text retrieval in one page
#
# *Stand-in page: the real notebook (start + retrieval demo) replaces this file.*
# It only shows that an embedded audio player survives the book build.

# %%
import numpy as np
from IPython.display import Audio

rate = 16000
t = np.arange(rate) / rate
Audio(np.sin(2 * np.pi * 440.0 * t) * np.exp(-3.0 * t), rate=rate)  # 1 s decaying 440 Hz tone
