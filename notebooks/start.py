# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
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
# Audio-text retrieval ranks the clips of a collection for a caption (text-to-audio) and the
# captions for a clip (audio-to-text). Xin et al. (Interspeech 2024) claim two gains over the
# usual "one vector per side, dot product" (DP) recipe:
#
# > "our THA effectively boosts ATR performance, with the DCR approach further contributing to
# > consistent performance gains."
#
# - **THA** (hierarchical alignment): compare the *token sets* of an audio Transformer (HTS-AT)
#   and a text Transformer (BERT) at three depths, with stacked cross attention in both
#   directions ([method page](tha.py)).
# - **DCR + CA** (disentangled factors with confidence-aware aggregation): cut the global
#   vectors into $K = 8$ factors, decorrelate them ($\mathcal{L}_D$), align them across
#   modalities ($\mathcal{L}_A$), and weight the factor cosines with a learnt confidence
#   ([DCR](dcr.py), [CA](ca.py)).
# - On AudioCaps, THA+DCR reaches text-to-audio R@1 41.1 against 38.3 for DP with the same
#   encoders (their Table 1); Tables 2-5 repeat the comparison on Clotho and ablate DCR, $K$,
#   $\alpha$ and $\beta$.
#
# **What this book reproduces.** Every equation of section 2, in the `thadcr` package, checked
# against literal loops on the [encoder](encoders.py), [THA](tha.py), [DCR](dcr.py) and [CA](ca.py)
# pages; every row of Tables 1-5 trained on a small real-audio data set on the CPU, shown beside
# the paper's numbers on the [Tables](tables.py) and [Figures](figures.py) pages. The CPU runs
# reproduce the pipeline, protocol and comparisons, not the paper's absolute numbers (a tiny
# HTS-AT from scratch, a frozen MiniLM, minutes of audio); the
# [reproduction notes](../book/reproduction-notes.md) list every choice and deviation.

# %% [markdown]
# ## Running it
#
# The two commands of the README, from the repository root:
#
# ```bash
# bash scripts/main.sh   # set up, build the embedded data set, run Tables 1-5 (tiny profile), build this book
# bash scripts/test.sh   # set up, build the embedded data set, run the whole test suite
# ```
#
# One run (one variant and seed) is the notebook `notebooks/train.py` executed by papermill:
#
# ```bash
# .venv/bin/jupytext --to ipynb notebooks/train.py -o /tmp/train.ipynb
# .venv/bin/papermill /tmp/train.ipynb out.ipynb -p variant THA -p seed 1
# ```
#
# All runs of Tables 1-5 on the embedded data set, then the tables and figures (finished runs are
# skipped, interrupted ones resumed):
#
# ```bash
# .venv/bin/thadcr reproduce --profile tiny
# ```
#
# **On a GPU with the real data sets.** The profile `paper-audiocaps` (and `paper-clotho`) sets
# the paper's model: HTS-AT with the AudioSet architecture, initialised from the official
# checkpoint `HTSAT_AudioSet_Saved_1.ckpt`, bert-base-uncased blocks 4, 10, 12, $D = 768$, $K = 8$,
# $\alpha = 0.01$, $\beta = 0.005$, 50 epochs. Point it at the data (AudioCaps CSVs and audio in
# the published layout) and the weights:
#
# ```bash
# .venv/bin/thadcr data check /data/audiocaps --layout audiocaps
# .venv/bin/thadcr train --profile paper-audiocaps --out results/paper/audiocaps-THA+DCR-s0 \
#     data_root=/data/audiocaps audio_checkpoint=/ckpt/HTSAT_AudioSet_Saved_1.ckpt text_model=/models/bert-base-uncased
# .venv/bin/thadcr reproduce --profile paper --shard 0/8   # or every run of Tables 1-5, one shard per GPU job
# ```

# %% [markdown]
# ## Try it: search the embedded test set with a caption
#
# `thadcr.search.search(query, checkpoint)` encodes the test clips once and ranks them for the
# caption. It uses the small trained demo model `results/tiny/demo/best.pt` (tiny profile,
# trained on the embedded data set on a CPU). Change the caption and run the cells again.

# %%

from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Audio, display

from thadcr.notebook import setup

setup(jpeg=True)  # offline, seeded; the repository root becomes the working folder

caption = "a dog barks while rain falls"
CHECKPOINT = Path("results/tiny/demo/best.pt")
TOP, RATE, SECONDS = 3, 32000, 5.0

# %%
from thadcr.audio import LogMel
from thadcr.audio_io import fit_length, load_audio
from thadcr.search import search

data_root = Path("data/embedded/audiocaps")
hits = []
if not CHECKPOINT.is_file():
    print(
        f"The demo checkpoint {CHECKPOINT} is not here, so the demo is skipped. Make one (a few minutes on a CPU):\n"
        f"  .venv/bin/thadcr data build\n"
        f"  .venv/bin/thadcr train --profile tiny --out {CHECKPOINT.parent} variant=THA+DCR\n"
        "then run this page again."
    )
elif not (data_root / "clotho_captions_evaluation.csv").is_file():
    print(f"{data_root} holds no embedded data set, so the demo is skipped: run `.venv/bin/thadcr data build` first.")
else:
    hits = search(caption, CHECKPOINT, split="test", top=TOP, device="cpu")
    assert 0 < len(hits) <= TOP and all(hits[i]["score"] >= hits[i + 1]["score"] for i in range(len(hits) - 1))
    print(f"query: {caption!r}")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank}. {Path(hit['file']).name}  score {hit['score']:.3f}  (one of its captions: {hit['caption']!r})")

# %%
logmel = LogMel(sample_rate=RATE)
for rank, hit in enumerate(hits, 1):
    wave = fit_length(load_audio(hit["file"], RATE), int(SECONDS * RATE), "start")  # first 5 s
    fig, ax = plt.subplots(figsize=(8, 1.8))
    ax.imshow(logmel(wave[None])[0].T.numpy(), origin="lower", aspect="auto", extent=(0, SECONDS, 0, 64), cmap="magma")
    ax.set(title=f"{rank}. {hit['caption']}", xlabel="time (s)", ylabel="mel bin")
    plt.show()
    display(Audio(wave.numpy(), rate=RATE))

# %% [markdown]
# ## Where to go next
#
# - [Dual-stream encoders](encoders.py): from a waveform to HTS-AT stage tokens and MiniLM words.
# - [THA](tha.py), [DCR](dcr.py), [CA and NT-Xent](ca.py): the equations of section 2, one page each.
# - [Tables](tables.py) and [Figures](figures.py): this project's runs beside the paper's.
