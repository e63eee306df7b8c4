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
# # Hierarchical alignment, THA (section 2.2)
#
# **Why** ({cite}`xin2024thadcr`, section 1). Most retrieval systems align the two streams
# once, at a single level, "neglecting multi-level correspondences": refs [8, 9] compare the
# clip's pooled vector with the caption's [CLS] vector. Such a global vector mixes every sound
# of the clip, and every word of the caption, into one; the abstract says global
# representations miss "audio occurrences that correspond to textual semantics" (its reason for
# DCR, the next pages). And studies of BERT's layers (refs [10] and [11],
# {cite}`devries2020bertlayers`, {cite}`vanaken2019bertqa`) find that shallow Transformer
# blocks "tend to capture more static and local semantics while deeper blocks encompass more
# contextual information". Hence THA: align the two streams token by token (each word with the
# audio tokens, each audio token with the words), at a shallow, a middle and a deep level, and
# add the levels. Whether HTS-AT's stages divide the work as BERT's blocks do is the paper's
# assumption; refs [10] and [11] study BERT only. The last section measures whether the trained
# model's words look where their sounds are.
#
# > "our Transformer-based hierarchical alignment (THA) integrates the three-level semantics to
# > learn correlations between audio and text. [...] we calculate the cosine similarities for
# > each level and combine the hierarchical similarities by addition."
#
# THA compares the token sets of the two encoders ([previous page](encoders.py)) instead of two
# global vectors. At each level $l$ every audio token attends over the words (text-enhanced
# stacked cross attention, Eq. 1, after SCAN {cite}`lee2018scan`), and the paper adds an
# audio-enhanced direction that "follows similar patterns": every word attends over the audio
# tokens. The cosines of each token with what it attended to are combined over tokens and
# levels into $S_{THA}$. This page computes Eq. 1 step by step, by hand, first on a toy example
# and then on a real clip, checks it against `thadcr.model.alignment`, and draws the attention maps
# over the spectrogram.
#
# :::{admonition} The paper says / we chose
# :class: note
#
# | value or decision | source |
# |---|---|
# | Eq. 1: cosine $s_{mn}$, hinge $[x]_+$, normalisation over the audio tokens $m$, softmax with temperature $\lambda$ over the words $n$, attended vector $\hat a_m$ | paper, Eq. 1 |
# | $S_{THA}(A, T) = \sum_l \sum_m \cos(a_m^l, \hat a_m^l)$, the text-enhanced direction | paper, 2.2 |
# | three levels combined by addition | paper, 2.2 |
# | an audio-enhanced direction "follows similar patterns" | paper, 2.2 (no formula) |
# | the audio-enhanced direction as the exact mirror of Eq. 1 (words are the queries, normalised over the words, softmax over the tokens; its weights are $\alpha'_{nm}$ here) | ours, as SCAN mirrors its two directions |
# | $S_{THA}$ adds the text-enhanced and the audio-enhanced terms | ours: the paper writes the text-enhanced term and does not say how the two combine |
# | $\lambda = 9$ | SCAN's value for its text-to-image direction; the paper names $\lambda$ "the temperature hyper-parameter" and gives no value |
# | one $\lambda$ for both directions | ours |
# | the mean over the query tokens, not the sum (`tha_reduce: mean`; `sum` is the option that follows the paper's $S_{THA}$) | ours: with a sum, the 1024-token level would outweigh the 64-token one 16 to 1 |
# | each level's features pass a LayerNorm and a Linear to $D$ (768 in the paper profiles) before Eq. 1 | ours, as HAT {cite}`bin2023hat` does |
# | norms clamped below at $\epsilon = 10^{-8}$, $\max(\lVert x \rVert, \epsilon)$ | ours (a word no token matches would give 0/0) |
# | tiny profile: each level's token grid pooled 2 x 2 to at most 64 tokens | ours, for the CPU |
#
# The reasons are in the [reproduction notes](../book/reproduction-notes.md) (hierarchical
# alignment, model).
# :::

# %%

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from thadcr.interfaces.notebook.method import setup, show

setup(jpeg=True)  # offline, seeded; the repository root becomes the working folder


# %% [markdown]
# ## Eq. 1
#
# For level $l$, audio tokens $a_m$ ($m = 1..M$) and words $t_n$ ($n = 1..N$; the level index
# is dropped below):
#
# $$s_{mn} = \frac{a_m^\top t_n}{\lVert a_m \rVert \lVert t_n \rVert}, \qquad
# \bar s_{mn} = \frac{[s_{mn}]_+}{\sqrt{\sum_{m=1}^{M} [s_{mn}]_+^2}}, \qquad
# [x]_+ = \max(x, 0),$$
#
# $$\hat a_m = \sum_{n=1}^{N} \alpha_{mn} t_n, \qquad
# \alpha_{mn} = \frac{\exp(\lambda \bar s_{mn})}{\sum_{n=1}^{N} \exp(\lambda \bar s_{mn})}.$$
#
# The hinge keeps positive similarities, the normalisation runs over the **query** axis $m$,
# the softmax over the **context** axis $n$. The paper scores a pair by summing
# $\cos(a_m, \hat a_m)$ over the tokens; the profiles average instead (our choice,
# `tha_reduce: mean`; `sum` is the other option), so that the 1024-token level of the paper's
# model does not outweigh the 64-token one 16 to 1:
#
# $$S^{t}(A, T) = \frac{1}{M} \sum_{m=1}^{M}
# \frac{a_m^\top \hat a_m}{\lVert a_m \rVert \lVert \hat a_m \rVert}.$$
#
# The audio-enhanced direction swaps the roles (our reading of "follows similar patterns"):
# each word $t_n$ is a query, normalised over $n$, attending over the tokens $a_m$ with weights
# $\alpha'_{nm}$ (a softmax over $m$), giving $\hat t_n = \sum_m \alpha'_{nm} a_m$ and
# $S^{a}(A, T)$, the mean over words of $\cos(t_n, \hat t_n)$. The paper writes no symbol for
# these weights; we do not call them $\beta$, which is the weight of $\mathcal{L}_A$. The page
# uses $\lambda = 9$, SCAN's value; the paper gives none.
#
# Below, Eq. 1 written literally with loops in float64, one function for both directions.


# %%
def stacked_cross_attention(queries: np.ndarray, context: np.ndarray, lam: float):
    """Eq. 1 literally: queries q_m (M, d) attend over context c_n (N, d); all steps."""
    M, N = len(queries), len(context)
    norm = np.linalg.norm
    s = np.zeros((M, N))
    for m in range(M):
        for n in range(N):
            s[m, n] = queries[m] @ context[n] / (norm(queries[m]) * norm(context[n]))
    hinge = np.maximum(s, 0.0)
    s_bar = np.zeros((M, N))
    for n in range(N):
        # normalised over the query axis m
        column = math.sqrt(sum(hinge[m, n] ** 2 for m in range(M)))
        for m in range(M):
            s_bar[m, n] = hinge[m, n] / column if column > 0 else 0.0
    alpha = np.zeros((M, N))
    for m in range(M):
        # softmax over the context axis n
        weights = [math.exp(lam * s_bar[m, n]) for n in range(N)]
        for n in range(N):
            alpha[m, n] = weights[n] / sum(weights)
    attended = np.array(
        [sum(alpha[m, n] * context[n] for n in range(N)) for m in range(M)]
    )  # (M, d)
    cosines = np.array(
        [queries[m] @ attended[m] / (norm(queries[m]) * norm(attended[m]))
         for m in range(M)]
    )  # (M,)
    return {"s": s, "hinge": hinge, "s_bar": s_bar, "alpha": alpha,
            "attended": attended, "cosines": cosines, "score": cosines.mean()}


# %% [markdown]
# ## A toy example: 3 audio tokens, 2 words, 2 dimensions
#
# Token 1 points at word 1, token 2 sits between the words, token 3 points away from word 1
# (a negative cosine that the hinge removes).

# %%
a = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.3]])  # (M=3, d=2) audio tokens
t = np.array([[1.0, 0.2], [0.0, 1.0]])  # (N=2, d=2) words
text_enhanced = stacked_cross_attention(a, t, lam=9.0)
for step in ("s", "hinge", "s_bar", "alpha", "attended", "cosines"):
    print(f"{step}:\n{text_enhanced[step]}")
print(f"S^t = mean of the cosines = {text_enhanced['score']:.4f}")
# a distribution over the words for each token; unit columns over m
assert np.allclose(text_enhanced["alpha"].sum(axis=1), 1.0)
assert np.allclose(np.linalg.norm(text_enhanced["s_bar"], axis=0), 1.0)

# %% [markdown]
# The package keeps Eq. 1 in this readable form, `eq1_reference`: one pair, one direction,
# each step a line of torch with its shape. It does not add $\epsilon = 10^{-8}$ to the norms
# it divides by: it clamps them, $\max(\lVert x \rVert, \epsilon)$, as the fast kernel does,
# which is exactly Eq. 1 whenever a norm is not tiny (and a word no token matches would
# otherwise give 0/0).

# %% tags=["nbval-ignore-output"]
from thadcr.model.alignment import (
    LEVELS,
    audio_enhanced_similarity,
    eq1_reference,
    reference_similarity,
    tha_similarity_level,
    text_enhanced_similarity,
)

show(eq1_reference)

# %% [markdown]
# Training does not use it: `text_enhanced_similarity`, `audio_enhanced_similarity` and
# `tha_similarity_level` score every pair of a batch at once, from one cosine matrix for both
# directions, without materialising $\hat a_m$ (see the module's docstring), and the tests
# check their values and gradients against `reference_similarity`, which applies
# `eq1_reference` pair by pair. The loops, the reference and the fast kernel must agree:

# %%
audio_enhanced = stacked_cross_attention(t, a, lam=9.0)  # words are the queries
a_t, t_t = torch.tensor(a)[None], torch.tensor(t)[None]  # (1, 3, 2), (1, 2, 2)
mask = torch.ones(1, 2, dtype=torch.bool)
reference_t = eq1_reference(a_t[0], t_t[0], lam=9.0)  # () tokens attend over words
reference_a = eq1_reference(t_t[0], a_t[0], lam=9.0)  # () words attend over tokens
package_t = text_enhanced_similarity(a_t, t_t, mask, lam=9.0)  # (Na=1, Nt=1)
package_a = audio_enhanced_similarity(a_t, t_t, mask, lam=9.0)
assert package_t.shape == package_a.shape == (1, 1)
checks = (("text-enhanced  S^t", text_enhanced, reference_t, package_t),
          ("audio-enhanced S^a", audio_enhanced, reference_a, package_a))
for name, loops, reference, package in checks:
    assert abs(reference.item() - loops["score"]) < 1e-12
    assert abs(package.item() - loops["score"]) < 1e-6
    print(f"{name}: loops {loops['score']:.6f}  reference {reference.item():.6f}  "
          f"package {package.item():.6f}")
print(f"audio-enhanced attention alpha' (words x tokens):\n{audio_enhanced['alpha']}")

# %% [markdown]
# Padding words must not take part: appending a padded word (any values, mask False) must
# leave both scores unchanged.

# %%
junk = torch.tensor([[[5.0, -3.0]]])  # a third "word" that is padding
t_padded = torch.cat([t_t, junk], dim=1)  # (1, 3, 2)
mask_padded = torch.tensor([[True, True, False]])
padded_t = text_enhanced_similarity(a_t, t_padded, mask_padded, lam=9.0)
padded_a = audio_enhanced_similarity(a_t, t_padded, mask_padded, lam=9.0)
assert torch.allclose(padded_t, package_t, atol=1e-12)
assert torch.allclose(padded_a, package_a, atol=1e-12)
print("padded word ignored in both directions")

# %% [markdown]
# ## One real clip and its caption
#
# The model is the tiny profile (tiny HTS-AT, MiniLM blocks 2, 5, 6, joint dimension 64). Its
# HTS-AT gives 256, 64 and 16 tokens at stages 2, 3 and 4; the tiny profile pools each level's
# token grid 2x2 until at most 64 tokens remain (`tha_max_audio_tokens: 64`; ours, for the CPU;
# the paper profiles keep every token), so THA sees 64, 64 and 16. The alignment notes time it
# on one THA training run with and without pooling, started together, on the fine-tuned
# schedules of their time: with today's hand-written backward the run took 79 s with pooling
# against 108 s without, about a quarter less (with the earlier autograd backward, 104 s against
# 224 s); what it does to recall is not known from one seed. If the
# trained demo checkpoint `results/tiny/demo/best.pt` is present and uses THA, it is loaded;
# otherwise the model is **untrained** (seed 0), so the attention maps below show
# the mechanics, not learnt alignments.

# %%
from thadcr.model.audio import LogMel
from thadcr.run.checkpoint import load_trained
from thadcr.config import make_config
from thadcr.model.retrieval import build_model
from thadcr.interfaces.notebook.method import clip_start, embedded_test_split

RATE, SECONDS = 32000, 5.0
test = embedded_test_split()
logmel_layer = LogMel(sample_rate=RATE)


def clip_logmel(index: int) -> torch.Tensor:
    """Log-mel (501, 64) of the first 5 s of test clip `index`."""
    return logmel_layer(clip_start(test, index, SECONDS, RATE)[0][None])[0]


clip = 0
caption = clip_start(test, clip, SECONDS, RATE)[1]
logmel = clip_logmel(clip)[None]  # (1, 501, 64)
assert logmel.shape == (1, 501, 64)

# %% tags=["nbval-ignore-output"]
print(f"clip {test.audio_paths[clip].name}, caption {caption!r}")
CHECKPOINT = Path("results/tiny/demo/best.pt")
model, trained = None, False
if CHECKPOINT.is_file():
    model, config = load_trained(CHECKPOINT, device="cpu")
    trained = model.uses_tha
    if trained:
        print(f"trained model: {CHECKPOINT} ({config.variant})")
    else:
        print(f"{CHECKPOINT} holds a {config.variant} model without THA: "
              "using an untrained one instead")
        model = None
if model is None:
    torch.manual_seed(0)
    config = make_config("tiny", {"variant": "THA+DP", "device": "cpu"})
    model = build_model(config).eval()
    print(f"untrained {config.variant} model (seed 0); "
          "train one with notebooks/train.py for learnt alignments")

# %%
htsat_cfg = model.audio_encoder.config
with torch.no_grad():
    stages = model.audio_encoder(logmel).stages  # [(1, M_l, C_l)]
    text_out = model.text_encoder([caption])
    # [(1, M_l, D)], pooled to <= tha_max_audio_tokens; [(1, N, D)]
    audio_levels = model.tha.project_audio(stages)
    text_levels = model.tha.project_text(text_out.levels)
word_mask = text_out.mask  # (1, N)
ids = model.text_encoder.tokenize([caption])["input_ids"][0]
tokens = model.text_encoder.tokenizer.convert_ids_to_tokens(ids)
words = [w for w, m in zip(tokens, word_mask[0]) if m]  # no [CLS], [SEP]
D = config.joint_dim
M_levels = [a.shape[1] for a in audio_levels]
assert [x.shape[1] for x in stages] == [256, 64, 16]  # tiny HTS-AT stages 2, 3, 4
assert M_levels == [min(m, config.tha_max_audio_tokens or m) for m in (256, 64, 16)]
assert all(a.shape[2] == D for a in audio_levels)
assert all(tl.shape == (1, word_mask.shape[1], D) for tl in text_levels)
assert len(words) == int(word_mask.sum())
print(f"audio tokens per level M_l = {M_levels}, joint dimension D = {D}")

# %% [markdown]
# ### Eq. 1 by hand on level 3 (HTS-AT stage 4, MiniLM block 6)
#
# Level 3 has the fewest tokens ($M = 16$), small enough to print. The loops above, fed the
# projected features in float64, must give the package's scores in both directions.

# %%
level = 2  # level 3: stage 4 / text block 6
a_real = audio_levels[level][0].double().numpy()  # (16, D)
t_real = text_levels[level][0][word_mask[0]].double().numpy()  # (N words, D)
steps_t = stacked_cross_attention(a_real, t_real, config.lam)
steps_a = stacked_cross_attention(t_real, a_real, config.lam)
a_level, t_level = audio_levels[level], text_levels[level]
got_t = text_enhanced_similarity(a_level, t_level, word_mask, config.lam)
got_a = audio_enhanced_similarity(a_level, t_level, word_mask, config.lam)
assert abs(got_t.item() - steps_t["score"]) < 1e-5
assert abs(got_a.item() - steps_a["score"]) < 1e-5
assert steps_t["alpha"].shape == (16, len(words))
assert steps_a["alpha"].shape == (len(words), 16)
print("level 3: loops and package agree in both directions (|difference| < 1e-5)")

# %% tags=["nbval-ignore-output"]
print(f"N = {len(words)} words: {words}")
print(f"S^t: loops {steps_t['score']:.5f}, package {got_t.item():.5f}")
print(f"S^a: loops {steps_a['score']:.5f}, package {got_a.item():.5f}")
panels = (("s", "cosine $s_{mn}$"), ("hinge", "hinge $[s_{mn}]_+$"),
          ("s_bar", r"normalised $\bar s_{mn}$ (over m)"),
          ("alpha", r"attention $\alpha_{mn}$ (softmax over n)"))
fig, axes = plt.subplots(2, 2, figsize=(10, 9), sharey=True)
for ax, (key, title) in zip(axes.flat, panels):
    im = ax.imshow(steps_t[key], aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(words)), words, rotation=60, fontsize=10)
    ax.set_title(title, fontsize=12)
    fig.colorbar(im, ax=ax, fraction=0.05)
for ax in axes[:, 0]:
    ax.set_ylabel("audio token m (stage 4)", fontsize=11)
fig.suptitle("text-enhanced Eq. 1 on level 3, step by step", fontsize=13)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The gradient of Eq. 1
#
# Training differentiates $S_{THA}$ through Eq. 1 for every pair of the batch. Autograd through
# the scoring code kept a dozen intermediate tensors of size clips x tokens x captions x words
# and spent more than twice the forward's time on the backward, so `thadcr.model.alignment` writes
# the backward by hand (`_Eq1`). Below it is checked against autograd through the reference
# (`reference_similarity`: `eq1_reference` in both directions, softmax and attended vectors
# materialised) for this one pair, on the real level-3 features in float64.

# %%
a64 = audio_levels[level][:1].detach().double().requires_grad_(True)  # (1, 16, D)
t64 = text_levels[level][:1].detach().double().requires_grad_(True)  # (1, N, D), padded
package = tha_similarity_level(a64, t64, word_mask[:1], config.lam).sum()
by_hand = torch.autograd.grad(package, (a64, t64))
# both directions, through the reference
reference = reference_similarity(a64, t64, word_mask[:1], config.lam).sum()
by_autograd = torch.autograd.grad(reference, (a64, t64))
assert abs(package.item() - reference.item()) < 1e-10
for mine, theirs in zip(by_hand, by_autograd):
    assert mine.shape == theirs.shape
    assert torch.allclose(mine, theirs, rtol=1e-8, atol=1e-12)
assert torch.all(by_hand[1][0][~word_mask[0]] == 0)  # padded positions get no gradient
print("hand-written backward = autograd through Eq. 1 (float64, rtol 1e-8); "
      "padding gets no gradient")

# %% tags=["nbval-ignore-output"]
err = max(((m - t).abs().max() / t.abs().max()).item()
          for m, t in zip(by_hand, by_autograd))
print(f"largest difference: {err:.1e} of the largest gradient entry")

# %% [markdown]
# ### Attention over time, both directions
#
# Audio tokens live on the Swin grid of the stacked image, not on a time axis. Token $j$ of a
# level with a $G \times G$ grid sits at row $h$, column $w$ with
# $(h, w) = \mathrm{divmod}(j, G)$ (patch embedding, patch merging and the 2x2 pooling keep
# row-major order); rows are grouped by time chunk ($r$ chunks of $G / r$ rows), so the token
# belongs to time bin $\lfloor h / (G/r) \rfloor \cdot G + w$ of $r G$ uniform bins over the
# clip. Summing attention over the frequency rows of each time column gives a word-by-time
# map; `thadcr.run.attention.time_bins` does it, checked here against a loop over the tokens.

# %% tags=["nbval-ignore-output"]
from thadcr.run.attention import time_bins, word_time_attention

show(time_bins)

# %%
M = M_levels[0]
G, r = math.isqrt(M), htsat_cfg.freq_ratio
probe = np.random.default_rng(0).random((M, 3))
looped = np.zeros((r * G, 3))
for j in range(M):
    h, w = divmod(j, G)
    looped[(h // (G // r)) * G + w] += probe[j]
assert np.allclose(time_bins(probe, r), looped)
bin_ms = SECONDS / (r * G) * 1000
print(f"level 1: {G} x {G} tokens, {r} chunks -> {r * G} time bins of {bin_ms:.0f} ms")

# %% [markdown]
# Below, both directions from the loops of Eq. 1, then binned in time. The package gives the
# audio-enhanced map of a model, a clip and captions in one call, `word_time_attention` (it
# takes the weights from `thadcr.model.alignment.eq1_attention`, Eq. 1 for one pair as
# written); it must match the loops.

# %%
maps = {}
package_map = word_time_attention(model, logmel, [caption])[0]  # audio-enhanced
assert package_map.words == words
for lvl, (stage, _block) in enumerate(LEVELS):
    a_np = audio_levels[lvl][0].double().numpy()
    t_np = text_levels[lvl][0][word_mask[0]].double().numpy()
    rows_per_bin = math.isqrt(a_np.shape[0]) // r
    # (M, N): each token over the words; (N, M): each word over the tokens
    alpha = stacked_cross_attention(a_np, t_np, config.lam)["alpha"]
    alpha_prime = stacked_cross_attention(t_np, a_np, config.lam)["alpha"]  # audio-enh.
    maps[lvl] = (time_bins(alpha, r).T / rows_per_bin,  # (N, bins) each
                 time_bins(alpha_prime.T, r).T)
    # each word's attention is a distribution over time; the package's map is the loops'
    assert np.allclose(maps[lvl][1].sum(axis=1), 1.0)
    assert np.allclose(package_map.levels[lvl], maps[lvl][1], rtol=0, atol=1e-9)
print("time bins per level:", {lvl + 1: m[0].shape[1] for lvl, m in maps.items()})

# %% tags=["nbval-ignore-output"]
extent = (0, SECONDS, len(words) - 0.5, -0.5)
fig, axes = plt.subplots(3, 1, figsize=(9.5, 8), sharex=True,
                         height_ratios=[1, 1.2, 1.2])
spectrum = axes[0].imshow(logmel[0].T.numpy(), origin="lower", aspect="auto",
                          extent=(0, SECONDS, 0, 64), cmap="magma")
axes[0].set(ylabel="mel bin", title=f"{caption!r}")
fig.colorbar(spectrum, ax=axes[0], pad=0.01, label="dB")
titles = ("text-enhanced: mean attention of the tokens at time t on word n",
          "audio-enhanced: attention of word n over time")
for ax, m, title in zip(axes[1:], maps[0], titles):
    im = ax.imshow(m, aspect="auto", extent=extent, cmap="viridis",
                   interpolation="nearest")
    ax.set_yticks(range(len(words)), words, fontsize=9)
    ax.set_title(title, fontsize=11)
    fig.colorbar(im, ax=ax, pad=0.01, label="attention")
axes[-1].set_xlabel("time (s)")
state = "" if trained else ", untrained model"
fig.suptitle(f"level 1 (stage 2 / text block {config.text_layers[0]}){state}")
fig.tight_layout()
plt.show()

# %% [markdown]
# The same audio-enhanced map at the three levels: features from deeper blocks on coarser
# time grids (16, 16 and 8 bins in the tiny profile, whose pooling gives level 1 the grid of
# level 2; without pooling level 1 has 32). Each word's row sums to 1 over time.

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
for ax, (lvl, (stage, _)) in zip(axes, enumerate(LEVELS)):
    im = ax.imshow(maps[lvl][1], aspect="auto", extent=extent, cmap="viridis",
                   interpolation="nearest")
    ax.set(title=f"level {lvl + 1}: stage {stage} / block {config.text_layers[lvl]}",
           xlabel="time (s)")
    fig.colorbar(im, ax=ax, pad=0.02, label="attention")
axes[0].set_yticks(range(len(words)), words, fontsize=9)
fig.suptitle("audio-enhanced attention of each word over time, per level")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Three levels and $S_{THA}$
#
# The paper adds the levels ("combine the hierarchical similarities by addition") and writes
# $S_{THA}$ with the text-enhanced term; it does not say how the audio-enhanced term enters.
# We add the two directions at every level:
#
# $$S_{THA}(A, T) = \sum_{l=1}^{3} \big(S^{t}_l(A, T) + S^{a}_l(A, T)\big).$$
#
# `tha_similarity_level` gives both directions of one level from one cosine matrix; `THA`
# projects each level (LayerNorm + Linear to $D$) and sums them.

# %% tags=["nbval-ignore-output"]
from thadcr.model.alignment import THA

show(THA.score)

# %%
pairs = list(zip(audio_levels, text_levels))
names = [f"level {i + 1}: stage {stage} / text block {block}"
         for i, ((stage, _), block) in enumerate(zip(LEVELS, config.text_layers))]
with torch.no_grad():
    directions = {
        "text-enhanced": text_enhanced_similarity,
        "audio-enhanced": audio_enhanced_similarity,
    }
    per_level = pd.DataFrame(
        {name: [f(a_, t_, word_mask, config.lam).item() for a_, t_ in pairs]
         for name, f in directions.items()},
        index=names,
    )
    s_tha = model.tha(stages, text_out.levels, word_mask)  # (1, 1)
    both = sum(tha_similarity_level(a_, t_, word_mask, config.lam) for a_, t_ in pairs)
assert s_tha.shape == (1, 1) and torch.allclose(s_tha, both, atol=1e-5)
assert abs(per_level.to_numpy().sum() - s_tha.item()) < 1e-4
print("S_THA = sum of the 6 terms (3 levels x 2 directions): checked")

# %% tags=["nbval-ignore-output"]
print(f"S_THA(clip, caption) = {s_tha.item():.4f}")
per_level.round(4)

# %% [markdown]
# ## $S_{THA}$ and the model's other similarity on a few clips
#
# Six test clips against the first caption of each: the diagonal holds the matching pairs.
# Beside $S_{THA}$ is the rest of the model's similarity: $S_{DP}$ for a THA+DP model (the
# baseline's $S_{DP}(\bar a, \bar t) = \cos(\bar a, \bar t)$, after a linear projection each),
# $S_{DCR}$ for a THA+DCR model; the panel's title says which. Below the maps, how often the
# matching caption scores highest in its row.

# %%
n_show = 6
first = [int(np.flatnonzero(test.caption_audio == c)[0]) for c in range(n_show)]
captions = [test.captions[i] for i in first]
with torch.no_grad():
    clips = torch.stack([clip_logmel(c) for c in range(n_show)])  # (6, 501, 64)
    audio_emb = model.encode_audio(clips)
    text_emb = model.encode_text(captions)
    S_tha = model.tha.score(audio_emb.tha, text_emb.tha, text_emb.mask)  # (6, 6)
    S_rest = model.similarity(audio_emb, text_emb) - S_tha  # S_DP or S_DCR
assert S_tha.shape == S_rest.shape == (n_show, n_show)
rest_name = "S_DP" if model.uses_dp else ("S_DCR" if model.uses_ca else "S - S_THA")
print(f"S_THA and {rest_name}: {tuple(S_tha.shape)} each (clips x captions)")

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, S, name in zip(axes, (S_tha, S_rest), ("S_THA", rest_name)):
    im = ax.imshow(S.numpy(), cmap="viridis")
    ax.set(xlabel="caption of clip", ylabel="clip", title=name)
    fig.colorbar(im, ax=ax, fraction=0.046)
fig.tight_layout()
plt.show()
state = "the trained demo model" if trained else "the untrained model"
hits = [f"{int((S.argmax(dim=1) == torch.arange(n_show)).sum())} of the {n_show} "
        f"clips under {name}" for name, S in (("S_THA", S_tha), (rest_name, S_rest))]
display(Markdown(f"With {state}, the matching caption scores highest in its row for "
                 f"{' and '.join(hits)}; a random score would do so for 1 in {n_show} "
                 "on average."))
pd.DataFrame({"caption": captions, "S_THA (matching)": S_tha.diag().numpy().round(3),
              f"{rest_name} (matching)": S_rest.diag().numpy().round(3)})

# %% [markdown]
# ## Does a word look where its sound is?
#
# The maps above show one clip. In the embedded data set the timeline of every scene is known
# (`scenes_evaluation.csv`: each event's class, onset and duration), and the captions are
# written from it with each class's phrases (`embedded_classes.csv`: "a dog barks", "the bark
# of a dog", ...), so the words that name each event, and when that event sounds, are known.
# That makes THA's attention measurable. For each event a caption names:
#
# - the **words**: the content words of the event's phrase, without "a", "the", "is",
#   prepositions or "someone" (for "a dog barks": *dog*, *barks*, every word piece of them);
# - their **attention over time**: the audio-enhanced weights $\alpha'_{nm}$ of those words,
#   summed per time column as in the maps above and averaged over the words, at each level;
# - the **share inside**: the part of it that falls inside the event's time span (a time bin
#   counts with the part of it inside the span);
# - **chance**: the share that uniform attention would put there, the span's share of the clip;
# - a **control**, in scenes of several events: the same share for the words naming the
#   caption's *other* events. If they also crowd into the span, the attention goes where the
#   clip is loud, not where the words say.
#
# The sample is fixed: 10 scenes from each test fold (evenly spaced in file order), the first
# caption of each and every event it names (a background lasts the whole clip and is left out).
# Scenes are the unit of the 95 % intervals (each scene's events averaged first). The code is
# `thadcr.run.attention`; the choices are in the alignment notes. First the events of the clip
# above and the words that name them:

# %% tags=["nbval-ignore-output"]
from thadcr.interfaces.notebook.method import (
    attention_share_sentence,
    attention_share_table,
)
from thadcr.run.attention import content_word_mask, event_items, event_shares
from thadcr.run.evaluation import fold_ranges

SCENES = Path("data/embedded/audiocaps/scenes_evaluation.csv")
for item in event_items(test, SCENES, [clip], captions=1):
    named = np.array(words)[content_word_mask(package_map, item.caption, [item.span])]
    print(f"{item.cls}: {item.start:.2f}-{item.end:.2f} s, named by "
          f"{item.caption[slice(*item.span)]!r}, words {named.tolist()}")

# %%
PER_FOLD = 10
folds = fold_ranges(test.n_clips, config.eval_fold_clips)
sample = [scene for fold in folds for scene in fold[:: len(fold) // PER_FOLD]]
items = event_items(test, SCENES, sample, captions=1)
shares = event_shares(model, items, lambda scene: clip_logmel(scene)[None])
levels = [f"level {lvl + 1}" for lvl in range(len(LEVELS))]
table = attention_share_table(shares, levels)
assert len(sample) == PER_FOLD * len(folds) and sorted(set(shares.clips)) == sample
assert shares.inside.shape == (len(items), len(LEVELS))
assert shares.chance.shape == (len(items),)
assert np.all((shares.inside > -1e-9) & (shares.inside < 1 + 1e-9))
print(f"{len(sample)} scenes from {len(folds)} test folds")

# %% tags=["nbval-ignore-output"]
x = np.arange(len(levels))
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
inside = table["inside"]
left.bar(x, inside, yerr=[inside - table["inside_low"], table["inside_high"] - inside],
         capsize=4, color="tab:blue", label="the event's words")
left.hlines(table["chance"], x - 0.4, x + 0.4, colors="black", linestyles="--",
            label="chance: uniform attention")
left.set(xticks=x, xticklabels=levels, ylim=(0, 100),
         ylabel="attention inside the event's span (%)", title="share inside the span")
left.legend(loc="upper right", fontsize=9)
differences = (("above_chance", "event's words - chance"),
               ("above_others", "event's words - other events' words"))
for offset, (key, label) in zip((-0.1, 0.1), differences):
    mean = table[key]
    error = [mean - table[f"{key}_low"], table[f"{key}_high"] - mean]
    right.errorbar(x + offset, mean, yerr=error, fmt="o", capsize=4, label=label)
right.axhline(0, color="black", linewidth=0.8)
low = min(0.0, table[["above_chance_low", "above_others_low"]].min().min())
high = max(0.0, table[["above_chance_high", "above_others_high"]].max().max())
right.set(xticks=x, xticklabels=levels, ylabel="percentage points",
          xlim=(-0.5, len(levels) - 0.5),
          ylim=(low - 1, high + 0.6 * (high - low) + 1),  # room for the legend
          title="differences, 95 % intervals over scenes")
right.legend(loc="upper left", fontsize=9)
fig.suptitle("Where the words naming an event look: "
             f"{table['scenes'].iloc[0]} test scenes, {state}")
fig.tight_layout()
plt.show()
display(Markdown(attention_share_sentence(table, state, len(items))))


# %% tags=["nbval-ignore-output"]
def with_interval(key: str) -> list[str]:
    """Each level's mean difference and its 95 % interval, in percentage points."""
    return [f"{row[key]:+.1f} ({row[key + '_low']:+.1f} to {row[key + '_high']:+.1f})"
            for _, row in table.iterrows()]


pd.DataFrame({"event's words (%)": table["inside"].round(1),
              "chance (%)": table["chance"].round(1),
              "minus chance (points)": with_interval("above_chance"),
              "other events' words (%)": table["others"].round(1),
              "own minus other (points)": with_interval("above_others")})

# %% [markdown]
# ## Summary
#
# - Eq. 1: cosine -> hinge -> normalise over the query axis -> softmax with $\lambda$ over the
#   context axis -> attended vector -> cosine with the query -> mean (ours; the paper sums);
#   the audio-enhanced direction swaps queries and context. The package matches the literal
#   loops on a toy and a real example and ignores padded words. `eq1_reference` is the
#   equation in torch, one pair at a time; the fast kernel's values and its hand-written
#   backward match it.
# - Each word gets an attention distribution over the clip's time axis (and each audio token
#   one over the words); the three levels see the clip at 312, 312 and 625 ms resolution in
#   the tiny profile (156 ms at level 1 without its token pooling).
# - $S_{THA}$ sums both directions (our choice) of all three levels; the model adds $S_{DP}$
#   or $S_{DCR}$ for the combined variants.
# - Where the words naming an event look is measured on test scenes whose timelines are known:
#   the share of their attention inside the event's time span, against uniform attention and
#   against the other events' words; the sentence under the last figure says what this model
#   shows. Next: [disentangled factors](dcr.py).
