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
# # Confidence-aware aggregation, CA, and $S_{DCR}$ (section 2.4)
#
# > "we first present a confidence-aware (CA) module to estimate the confidence for each
# > audio-text latent factor pair. [...] Leveraging these confidence scores as weights, we
# > adaptively aggregate all factor pairs to compute the text-audio similarity"
#
# **Why.** The paper ({cite}`xin2024thadcr`, sections 1 and 2.4) estimates "the confidence of
# each cross-modal latent factor pair" and uses it as the weight of that pair's cosine: "a
# smaller value of $g_i$ implies that the semantic element is less likely to match the $i$-th
# subspace". As we read the idea: not every factor pair of a caption and a clip matches (a
# caption names a few sound events, and a factor may carry an element that one side lacks or
# carries differently), and an unweighted sum of the $K$ factor cosines would count such a pair
# as much as a matching one; CA down-weights the pairs that do not match. The paper credits the
# gain of Table 3's last row to this "adaptive mechanism in determining the text-audio
# similarity for local cross-modal matching" (section 3.3).
#
# Two remarks of ours: nothing in the paper's loss trains $g_i$ directly to mean "match"; it is
# learnt only through the retrieval loss on $S_{DCR}$. And since our MLP ends without an
# activation, $g_i$ can be negative, so a "weight" can also flip the sign of a cosine. The
# section "What the weights pick up" below shows what a trained run's weights do.
#
# The [previous page](dcr.py) built $K$ latent factors per modality. CA scores each pair of
# same-index factors with a small MLP, and $S_{DCR}$ is the confidence-weighted sum of the $K$
# factor cosines (Eq. 4). The similarity is trained with the NT-Xent loss (Eq. 5,
# {cite}`chen2020simclr`). Each piece is checked against a literal loop below.
#
# :::{admonition} The paper says / we chose
# :class: note
#
# | value or decision | source |
# |---|---|
# | $g_i = \mathrm{MLP}(\hat e_i)$ with $\hat e_i = [e_i^t, e_i^a]$ (text first), "two linear layers and a ReLU activation function" | paper, 2.4 |
# | the MLP as Linear $\to$ ReLU $\to$ Linear, nothing after it ($g_i$ any real number) | our reading, as in DiCoSA's code ({cite}`jin2023dicosa`) |
# | hidden size $4w$ ($w = D/K$): $2w \to 4w \to 1$ | ours, following DiCoSA's code; the paper gives no size |
# | one MLP shared by the $K$ subspaces | ours, as DiCoSA; the paper writes one $\mathrm{MLP}$ for every $i$ |
# | $S_{DCR} = \sum_{i=1}^{K} g_i \cos(e_i^t, e_i^a)$ (Eq. 4) | paper |
# | the sum over $K$ in the paper profiles; divided by $K$ in the tiny profile (`factor_reduce: mean`) | ours, for training from little data on the CPU |
# | all clip-caption pairs scored by splitting the first layer's weight | ours (exactly the same numbers) |
# | $\mathcal{L}_S$: NT-Xent over $S$ in both directions (Eq. 5); $S$ is $S_{DCR}$ alone or a sum such as $S_{THA} + S_{DCR}$ | paper |
# | $\tau = 0.07$, fixed | ref [8]'s code; the paper calls $\tau$ "a temperature hyper-parameter" and gives no value |
# | two captions of the same clip in one batch are both positives (uniform targets) | ours, as WavCaps' code ({cite}`mei2024wavcaps`); ref [8]'s code counts them as negatives |
#
# The reasons are in the [reproduction notes](../book/reproduction-notes.md) (factors and
# losses, model).
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

setup(precision=4)  # offline, seeded; the repository root becomes the working folder


# %% [markdown]
# ## Confidence weights $g_i = \mathrm{MLP}([e_i^t, e_i^a])$
#
# > "for the $i$-th subspace, we concatenate the latent factor $e_i^t \in \mathbb{R}^{D/K}$ with
# > the latent factor $e_i^a \in \mathbb{R}^{D/K}$ to form the input
# > $\hat e_i = [e_i^t, e_i^a] \in \mathbb{R}^{2D/K}$ [...] $g_i = \mathrm{MLP}(\hat e_i)$,
# > where MLP consists of two linear layers and a ReLU activation function"
#
# $$g_i = W_2 \, \mathrm{ReLU}\big(W_1 [e_i^t; e_i^a] + b_1\big) + b_2 .$$
#
# The package reads "two linear layers and a ReLU" as this formula, with no activation after
# the second layer, so $g_i$ is any real number. One MLP ($2w \to 4w \to 1$, $w = D/K$) is
# shared by the $K$ subspaces; the hidden size $4w$ and the sharing are our choices, taken from
# DiCoSA's code (the paper gives neither).

# %% tags=["nbval-ignore-output"]
from thadcr.model.factors import CA_BLOCK_ELEMENTS, ConfidenceAware, dcr_similarity
from thadcr.model.losses import nt_xent

show(ConfidenceAware)

# %%
K, w = 4, 3
ca = ConfidenceAware(w).double()
# the example's own weights and factors, independent of the package's initialisation
gen = torch.Generator().manual_seed(1)
with torch.no_grad():
    for parameter in ca.parameters():
        values = torch.randn(parameter.shape, dtype=torch.float64, generator=gen)
        parameter.copy_(0.5 * values)
sizes = (ca.fc1.in_features, ca.fc1.out_features, ca.fc2.out_features)
assert sizes == (2 * w, 4 * w, 1)
W1, b1 = ca.fc1.weight.detach().numpy(), ca.fc1.bias.detach().numpy()  # (4w, 2w), (4w,)
W2, b2 = ca.fc2.weight.detach().numpy(), ca.fc2.bias.detach().numpy()  # (1, 4w), (1,)


def confidence_literal(e_t_i: np.ndarray, e_a_i: np.ndarray) -> float:
    """g_i of one factor pair with explicit sums: e_t_i, e_a_i (w,) -> scalar."""
    x = list(e_t_i) + list(e_a_i)  # [e_i^t, e_i^a], text first
    hidden = [max(0.0, sum(W1[r, c] * x[c] for c in range(2 * w)) + b1[r])
              for r in range(len(b1))]
    return sum(W2[0, r] * hidden[r] for r in range(len(hidden))) + b2[0]


e_text = torch.randn(5, K, w, dtype=torch.float64, generator=gen)  # 5 matching pairs
e_audio = torch.randn(5, K, w, dtype=torch.float64, generator=gen)
with torch.no_grad():
    g = ca(e_audio=e_audio, e_text=e_text)  # (B, K)
assert g.shape == (5, K)
g_literal = np.array([[confidence_literal(e_text[b, i].numpy(), e_audio[b, i].numpy())
                       for i in range(K)] for b in range(5)])
assert np.allclose(g.numpy(), g_literal)
print(f"g {tuple(g.shape)} (pairs x factors), equal to the literal MLP; "
      f"values span {g.min():.3f} .. {g.max():.3f}")

# %% [markdown]
# ## Eq. 4: $S_{DCR}$
#
# $$S_{DCR} = \sum_{i=1}^{K} g_i \,
# \frac{(e_i^t)^\top e_i^a}{\lVert e_i^t \rVert \lVert e_i^a \rVert}$$
#
# For retrieval every clip is scored against every caption, so $g_i$ depends on the pair:
# `dcr_similarity(e_audio=(Na, K, w), e_text=(Nt, K, w), ca=ca)` returns the $(N_a, N_t)$
# matrix (the factors are keyword-only arguments: both sides have one shape, so a swap would
# go unnoticed). This is Eq. 4 as written, the sum the paper profiles use. The tiny profile
# divides it by $K$ (`factor_reduce: mean`) so that it starts on the scale of one cosine, like
# $S_{DP}$: when the tiny encoders were still trained from scratch for a few epochs, the sum left
# the unweighted "+L_D" ablation far behind (see the reproduction notes).

# %% tags=["nbval-ignore-output"]
show(dcr_similarity)


# %%
def s_dcr_literal(e_a: np.ndarray, e_t: np.ndarray) -> np.ndarray:
    """Eq. 4 with loops: factors (Na, K, w) and (Nt, K, w) -> S_DCR (Na, Nt)."""
    norm = np.linalg.norm
    S = np.zeros((len(e_a), len(e_t)))
    for a in range(len(e_a)):
        for t in range(len(e_t)):
            for i in range(e_a.shape[1]):
                cosine = e_t[t, i] @ e_a[a, i] / (norm(e_t[t, i]) * norm(e_a[a, i]))
                S[a, t] += confidence_literal(e_t[t, i], e_a[a, i]) * cosine
    return S


e_audio = torch.randn(3, K, w, dtype=torch.float64, generator=gen)  # 3 clips
e_text = torch.randn(4, K, w, dtype=torch.float64, generator=gen)  # 4 captions
with torch.no_grad():
    S = dcr_similarity(e_audio=e_audio, e_text=e_text, ca=ca)
assert S.shape == (3, 4)
assert np.allclose(S.numpy(), s_dcr_literal(e_audio.numpy(), e_text.numpy()))
print("S_DCR (clips x captions), equal to the literal Eq. 4:")
print(S.numpy())

# %% [markdown]
# ## The all-pairs trick
#
# Concatenating the factors of every clip-caption pair builds an $(N_a N_t K, 2w)$ input. The
# first layer is linear, so splitting $W_1 = [W_1^t \; W_1^a]$ gives
#
# $$W_1 [e^t; e^a] + b_1 = W_1^t e^t + (W_1^a e^a + b_1):$$
#
# each caption and each clip is projected once, and only the sum, the ReLU and the second
# layer run per pair (`ConfidenceAware.all_pairs`). It must equal the per-pair forward:

# %%
x_t, x_a = e_text[1, 2].numpy(), e_audio[0, 2].numpy()  # one factor pair
joint = W1 @ np.concatenate([x_t, x_a]) + b1
split = W1[:, :w] @ x_t + (W1[:, w:] @ x_a + b1)
assert np.allclose(joint, split)

with torch.no_grad():
    fast = ca.all_pairs(e_audio=e_audio, e_text=e_text)  # (Na, Nt, K)
    # every caption for every clip, then the concatenation pair by pair
    pairs_t = e_text[None].expand(3, 4, K, w).reshape(12, K, w)
    pairs_a = e_audio[:, None].expand(3, 4, K, w).reshape(12, K, w)
    naive = ca(e_audio=pairs_a, e_text=pairs_t).view(3, 4, K)
assert fast.shape == (3, 4, K) and torch.allclose(fast, naive)
print("all_pairs == per-pair concatenation:", tuple(fast.shape),
      "(clips, captions, factors)")

# %% [markdown]
# What it saves on the AudioCaps test set (957 clips x 4785 captions) with the paper profile's
# $D = 768$ and the paper's $K = 8$ ($w = 96$, hidden $4w = 384$), counted in multiply-adds of
# the first layer:

# %%
Na, Nt, K_paper, w_paper = 957, 4785, 8, 96
H = 4 * w_paper
pairs = Na * Nt * K_paper
concat_cost = pairs * 2 * w_paper * H  # (Na Nt K, 2w) input times W1^T
# each side projected once, then one addition per pair
split_cost = (Na + Nt) * K_paper * w_paper * H + pairs * H
assert concat_cost / split_cost > 100
gigabytes = pairs * 2 * w_paper * 4 / 1e9
print(f"{pairs:,} factor pairs")
print(f"  concatenate every pair: {concat_cost:.2e} multiply-adds, "
      f"input tensor {gigabytes:.1f} GB")
print(f"  split W1 (all_pairs):   {split_cost:.2e} operations, "
      f"{concat_cost / split_cost:.0f}x fewer, no concatenated tensor")
print(f"the ReLU activation is built for blocks of clips of at most "
      f"{CA_BLOCK_ELEMENTS:,} elements")

# %% [markdown]
# ## What the weights pick up
#
# A trained run of `DCR` or `THA+DCR` stores in `factors.npz` the weights $g$ of every test
# caption with its own clip (`g_positive`) and with a random other clip (`g_negative`), for
# the initial and the trained model. If CA learns what the paper says ("a smaller value of
# $g_i$ implies that the semantic element is less likely to match"), matching pairs should get
# larger weights after training. This page reads the DCR run of Table 1 with the paper's
# settings ($K = 8$, $\alpha = 0.01$, $\beta = 0.005$, seed 0), by its run id; the sentence
# under the figure is computed from the file.

# %% tags=["nbval-ignore-output"]
from thadcr.interfaces.notebook.method import confidence_sentence, table1_run_id

run_id = table1_run_id("DCR")  # audiocaps-DCR-htsat-K8-a0.01-b0.005-s0
path = Path("results/tiny/runs") / run_id / "factors.npz"
saved = np.load(path) if path.is_file() else None
if saved is None or "g_positive" not in saved.files:
    problem = "is missing" if saved is None else "holds no CA weights (g_positive)"
    display(Markdown(
        f"`{path}` {problem}: make it with `thadcr reproduce --profile tiny "
        "--tables 1`, or train that one run with notebooks/train.py "
        "(`papermill ... -p variant DCR "
        f"-p out_dir results/tiny/runs/{run_id}`)."
    ))
else:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    models = (("_initial", "initial model"), ("", "trained model"))
    for ax, (suffix, title) in zip(axes, models):
        pos = saved["g_positive" + suffix].ravel()
        neg = saved["g_negative" + suffix].ravel()
        bins = np.linspace(min(pos.min(), neg.min()), max(pos.max(), neg.max()), 40)
        ax.hist(neg, bins=bins, alpha=0.6,
                label=f"non-matching (mean {neg.mean():.3f})")
        ax.hist(pos, bins=bins, alpha=0.6, label=f"matching (mean {pos.mean():.3f})")
        ax.set(title=title, xlabel="confidence g_i (all factors)", ylabel="count")
        ax.legend(fontsize=8)
    fig.suptitle(f"{run_id}: CA weights on the test split")
    fig.tight_layout()
    plt.show()
    per_factor = pd.DataFrame({"matching": saved["g_positive"].mean(0),
                               "non-matching": saved["g_negative"].mean(0)})
    per_factor.index.name = "factor i"
    display(per_factor.round(3).T)
    display(Markdown(confidence_sentence(saved["g_positive"], saved["g_negative"])))

# %% [markdown]
# ## NT-Xent, Eq. 5, on a 4 x 4 example
#
# $$\mathcal{L}_S = -\frac{1}{B}\left(
# \sum_{i=1}^{B} \log \frac{\exp(S_{i,i}/\tau)}{\sum_{j=1}^{B} \exp(S_{i,j}/\tau)}
# + \sum_{i=1}^{B} \log \frac{\exp(S_{i,i}/\tau)}{\sum_{j=1}^{B} \exp(S_{j,i}/\tau)}
# \right)$$
#
# Rows are clips, columns captions, the diagonal the matching pairs; the first sum ranks the
# captions of each clip, the second the clips of each caption. The factor $1/B$ in front of
# both sums makes $\mathcal{L}_S$ the *sum* of the two directions' mean cross-entropies, not
# one mean over all $2B$ terms (the "mean" in the title of the figure below is each softmax's
# mean, the two added). $S$ is any of the similarities
# ($S_{DCR}$, $S_{THA} + S_{DCR}$, ...). The page uses $\tau = 0.07$, the fixed temperature of
# ref [8]'s code ({cite}`mei2022metric`), whose pipeline the paper follows; the paper gives no
# value.

# %% tags=["nbval-ignore-output"]
show(nt_xent)


# %%
def nt_xent_literal(S: list[list[float]], tau: float) -> float:
    """Eq. 5 with loops, float64."""
    B = len(S)
    # e[i][j] = exp(S_ij / tau)
    e = [[math.exp(S[i][j] / tau) for j in range(B)] for i in range(B)]
    rows = sum(math.log(e[i][i] / sum(e[i][j] for j in range(B))) for i in range(B))
    cols = sum(math.log(e[i][i] / sum(e[j][i] for j in range(B))) for i in range(B))
    return -(rows + cols) / B


S4 = [[0.9, 0.1, 0.2, 0.0],
      [0.3, 0.8, 0.1, 0.2],
      [0.1, 0.4, 0.7, 0.3],
      [0.2, 0.1, 0.5, 0.6]]
tau = 0.07
literal = nt_xent_literal(S4, tau)
S4_t = torch.tensor(S4, dtype=torch.float64, requires_grad=True)
package = nt_xent(S4_t, tau)
assert package.dim() == 0 and abs(package.item() - literal) < 1e-4
(grad,) = torch.autograd.grad(package, S4_t)
assert (grad.diag() < 0).all() and (grad - torch.diag(grad.diag()) >= 0).all()
print(f"L_S: loops {literal:.4f}, package {package.item():.4f}")
print("dL/dS: negative on the diagonal (raise matching scores), positive off it:\n",
      grad.numpy())

# %% [markdown]
# With two captions of the same clip in a batch, the package (`clip_ids`) counts both as
# positives of that clip, with a uniform target over them (our choice, documented on the
# reproduction-notes page; with distinct clips it is Eq. 5 above):

# %%
clip_ids = torch.tensor([0, 0, 1, 2])  # pairs 0 and 1 share a clip


def nt_xent_soft_literal(S: list[list[float]], tau: float, ids: list[int]) -> float:
    """Eq. 5 with targets uniform over the same-clip positives of each row, column."""
    B = len(S)
    e = [[math.exp(S[i][j] / tau) for j in range(B)] for i in range(B)]
    total = 0.0
    for i in range(B):
        positives = [j for j in range(B) if ids[j] == ids[i]]
        row_norm = sum(e[i][j] for j in range(B))
        col_norm = sum(e[j][i] for j in range(B))
        total -= sum(math.log(e[i][j] / row_norm) for j in positives) / len(positives)
        total -= sum(math.log(e[j][i] / col_norm) for j in positives) / len(positives)
    return total / B


soft = nt_xent(torch.tensor(S4), tau, clip_ids=clip_ids)
soft_literal = nt_xent_soft_literal(S4, tau, clip_ids.tolist())
assert abs(soft.item() - soft_literal) < 1e-4
distinct = nt_xent(torch.tensor(S4), tau, clip_ids=torch.arange(4))
assert torch.allclose(distinct, nt_xent(torch.tensor(S4), tau))
print(f"L_S with clip ids {clip_ids.tolist()}: loops {soft_literal:.4f}, "
      f"package {soft.item():.4f}")
print("(larger than before: S0,1 = 0.1 and S1,0 = 0.3 are now scores of matching\n"
      " pairs, far below S0,0 and S1,1)")

# %% tags=["nbval-ignore-output"]
S4_np = np.array(S4)
row_p = np.exp(S4_np / tau) / np.exp(S4_np / tau).sum(axis=1, keepdims=True)
col_p = np.exp(S4_np / tau) / np.exp(S4_np / tau).sum(axis=0, keepdims=True)
panels = ((S4_np, "S (clips x captions)"), (row_p, "softmax over captions (rows)"),
          (col_p, "softmax over clips (columns)"))
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for ax, (M, title) in zip(axes, panels):
    im = ax.imshow(M, cmap="viridis", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(M):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center",
                color="white" if v < 0.5 else "black", fontsize=9)
    ax.set(title=title, xticks=range(4), yticks=range(4))
fig.suptitle(f"Eq. 5 with tau = {tau}: the loss adds each softmax's mean -log "
             "of its diagonal")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# - CA maps each concatenated factor pair $[e_i^t, e_i^a]$ to a real weight $g_i$ with one
#   shared two-layer MLP; $S_{DCR}$ (Eq. 4) is the $g$-weighted sum of the $K$ factor cosines.
# - For all clip-caption pairs, the first layer is split so each side is projected once: the
#   same numbers, far fewer operations, and no concatenated tensor.
# - The training loss is NT-Xent (Eq. 5) in both directions plus $\alpha \mathcal{L}_D +
#   \beta \mathcal{L}_A$; its gradient raises matching and lowers non-matching similarities.
# - Next: [the training objective](objective.py) assembles $\mathcal{L} = \mathcal{L}_S +
#   \alpha \mathcal{L}_D + \beta \mathcal{L}_A$ from these pieces on a real batch and takes one
#   step.
