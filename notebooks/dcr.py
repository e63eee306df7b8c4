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
# # Disentangled cross-modal representation, DCR (section 2.3)
#
# > "we introduce a disentangled cross-modal representation (DCR) approach for ATR, which
# > disentangles high-dimensional audio and text representations into compact latent factors
# > [...] For the former, we minimize mutual information among different latent factors [...]
# > For the latter, we maximize mutual information for each latent factor pair separately"
#
# **Why.** A pooled audio vector or a [CLS] vector sums up a whole clip or caption in one point.
# In the paper's words ({cite}`xin2024thadcr`, section 2.3), such global representations hold
# the semantics "in an entangled state", so matching them directly "cannot capture fine-grained cross-modal
# correspondences between a set of diverse phrases in textual descriptions and a set of various
# audio events within audio clips". DCR splits each global vector into $K$ small factors meant to
# carry one semantic element each. Different factors should overlap little ("the independence
# of the latent factors ensures little semantic overlap among them"): that is what
# $\mathcal{L}_D$ asks for. The same factor should carry the same element in text and audio:
# that is what $\mathcal{L}_A$ asks for. The [CA page](ca.py) then compares the factors one
# by one.
#
# The global text vector $\bar t$ ([CLS]) and audio vector $\bar a$ (pooled HTS-AT) are each
# projected into $K$ latent factors, $e_k = W_k \bar t$. Two losses act on the cross-modal
# correlation matrix $C$ of the factors of matching pairs: $\mathcal{L}_D$ pushes different
# factors apart (off-diagonal of $C$ to 0), $\mathcal{L}_A$ pulls the same factor of text and
# audio together (diagonal to 1). This page checks each piece against a literal loop and on
# examples whose answer is known. The closest public code is DiCoSA's
# ({cite}`jin2023dicosa`, the paper's ref [24]), for text and video.
#
# :::{admonition} The paper says / we chose
# :class: note
#
# | value or decision | source |
# |---|---|
# | $K$ factors per modality, $e_k^t = W_k^t \bar t$ and $e_k^a = W_k^a \bar a$, $W_k \in \mathbb{R}^{D/K \times D}$, no bias | paper, 2.3 |
# | $K = 8$, $\alpha = 0.01$, $\beta = 0.005$ | paper, 3.1 |
# | the $K$ matrices $W_k$ stored as one bias-free `Linear(in_dim, K * D/K)` whose output is split into $K$ parts (exactly the $K$ projections) | ours (same function, one matrix product) |
# | the factors act on $\bar a$ and $\bar t$ directly, not on DP's projection | paper ($e_k = W_k \bar t$) |
# | mutual information (Eq. 2) measured implicitly through $C$ and Eq. 3 | paper, 2.3 |
# | $z = (e - \mathbb{E}[e]) / \sqrt{\mathrm{Var}[e]}$, $C_{i,j} = \mathbb{E}_{t,a}[(z_i^t)^\top z_j^a]$ | paper, 2.3 |
# | $C$ divided by the $D/K$ dimensions: the mean of per-dimension correlations, in $[-1, 1]$, so that $\mathcal{L}_A$'s target $C_{i,i} = 1$ means fully correlated factors | ours |
# | $\epsilon = 10^{-5}$ added to the variance | ours |
# | $\mathcal{L}_D = \sum_i \sum_{j \ne i} C_{i,j}^2$, $\mathcal{L}_A = \sum_i (1 - C_{i,i})^2$, $\mathcal{L} = \mathcal{L}_S + \alpha \mathcal{L}_D + \beta \mathcal{L}_A$ | paper, 2.3 ($\mathcal{L}$: 2.4) |
# | $C$ over the matching pairs of each training batch | ours (the paper writes an expectation over text-audio pairs) |
# | factor size $\lfloor D/K \rfloor$ when $K$ does not divide $D$ | ours |
#
# The reasons are in the [reproduction notes](../book/reproduction-notes.md) (factors and
# losses).
# :::

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from thadcr.interfaces.notebook.method import setup, show

setup()  # offline, seeded; the repository root becomes the working folder


# %% [markdown]
# ## Latent factors
#
# > "we project the text feature $\bar t$ into K factors separately, and get the $k$-th latent
# > factor $e_k^t$: $e_k^t = W_k^t \bar t$, where $W_k^t \in \mathbb{R}^{\frac{D}{K} \times D}$"
#
# $$E^t = [e_1^t, \ldots, e_K^t], \quad e_k^t = W_k^t \bar t \in \mathbb{R}^{D/K}, \qquad
# E^a = [e_1^a, \ldots, e_K^a], \quad e_k^a = W_k^a \bar a.$$
#
# `FactorProjection` computes the $K$ projections with one bias-free `Linear` from the input
# size to $K \cdot D/K$ outputs, and splits its output into $K$ consecutive parts of $D/K$.
# Stacking the matrices $W_1, \ldots, W_K$ on top of each other gives one
# $(K \cdot D/K) \times D$ matrix $W$, and $W \bar t$ is the $K$ products $W_k \bar t$ one
# after the other: rows $k D/K$ to $(k+1) D/K - 1$ of the weight are $W_k$, so the split output
# is exactly the $K$ separate projections, computed in one matrix product. The loop below
# checks it.

# %% tags=["nbval-ignore-output"]
from thadcr.model.factors import (
    FactorProjection,
    alignment_loss,
    decoupling_loss,
    factor_correlation,
)

show(FactorProjection)

# %%
B, in_dim, D, K = 3, 6, 8, 4
w = D // K  # factor size D/K
projection = FactorProjection(in_dim, D, K).double()
t_bar = torch.randn(B, in_dim, dtype=torch.float64)
factors = projection(t_bar)  # (B, K, D/K)
assert factors.shape == (B, K, w)
weight = projection.proj.weight.detach().numpy()  # (K * D/K, in_dim)
for b in range(B):
    for k in range(K):
        W_k = weight[k * w : (k + 1) * w]  # (D/K, in_dim)
        assert np.allclose(W_k @ t_bar[b].numpy(), factors[b, k].detach().numpy())
print(f"t_bar {tuple(t_bar.shape)} -> factors {tuple(factors.shape)} = (B, K, D/K); "
      "e_k = W_k t_bar checked")

# %% [markdown]
# ## Mutual information (Eq. 2) and the correlation matrix $C$
#
# The paper states both losses in terms of mutual information. For a text factor $e_i^t$ and
# an audio factor $e_j^a$,
#
# $$I\left(e_i^t; e_j^a\right) = \mathbb{E}_{t,a}\left[p\left(e_i^t, e_j^a\right)
# \log \frac{p\left(e_i^t, e_j^a\right)}{p\left(e_i^t\right) p\left(e_j^a\right)}\right]
# \qquad (2)$$
#
# measures how much knowing one factor tells about the other: it is 0 when they are
# independent and large when one nearly determines the other (as printed, Eq. 2 has one
# factor too many: see the box below).
#
# The goal is a large $I$ for the same factor in both modalities ($i = j$: the text factor and
# the audio factor describe the same semantic element) and a small $I$ for different factors
# ($i \ne j$: each factor carries its own element). Mutual information is hard to estimate, so
# the paper measures it "implicitly" through a correlation. Each factor is standardised (here
# over the batch of $B$ matching pairs, our reading of the expectation) and the cross-modal
# covariance is taken:
#
# $$z^t = \frac{e^t - \mathbb{E}[e^t]}{\sqrt{\mathrm{Var}[e^t]}}, \quad
# z^a = \frac{e^a - \mathbb{E}[e^a]}{\sqrt{\mathrm{Var}[e^a]}}, \qquad
# C_{i,j} = \mathbb{E}_{t,a}\big[(z_i^t)^\top z_j^a\big],$$
#
# and reads $C$ as matching probabilities (Eq. 3),
# $p(e_i, e_j) = C_{i,j} / \sum_{k=1}^{K} C_{k,j}$, so that a small $C_{i,j}$ stands for a
# small $I(e_i^t; e_j^a)$. Hence the two losses below act on $C$: its off-diagonal should
# vanish and its diagonal be 1.
#
# :::{admonition} Two things to read with care in Eqs. 2 and 3, and how the package reads them
# :class: warning
#
# - **Eq. 2 weights by $p$ twice.** The joint density $p(e_i^t, e_j^a)$ weights each pair
#   once as the distribution that $\mathbb{E}_{t,a}[\cdot]$ averages over (pairs are drawn
#   with probability $p(e_i^t, e_j^a)$), and a second time as the explicit factor
#   $p(e_i^t, e_j^a)$ in front of the logarithm inside the brackets. Written as an integral
#   over $x = e_i^t$, $y = e_j^a$, Eq. 2 is
#   $\iint p(x, y)^2 \log \frac{p(x, y)}{p(x)\,p(y)}\,dx\,dy$. Mutual information has one
#   weight, not two: it is $\mathbb{E}\big[\log \frac{p(x, y)}{p(x)\,p(y)}\big]$, which is
#   $\iint p(x, y) \log \frac{p(x, y)}{p(x)\,p(y)}\,dx\,dy$.
# - **Eq. 3's "probability" can be negative.** $C_{i,j}$ averages products of standardised
#   values: it is a correlation (for each dimension, the cosine of the two centred variables
#   over the pairs), so it can be negative: it lies in $[-1, 1]$ with our scaling (below). A
#   column of $C$ with negative entries makes $C_{i,j} / \sum_k C_{k,j}$ negative or larger
#   than 1, and a column that sums to 0 leaves it undefined: it is a probability only when
#   every entry of the column is non-negative.
# - **Our reading.** Eq. 2 is the usual mutual information, and Eqs. 2 and 3 say only why a
#   small off-diagonal and a large diagonal of $C$ are wanted; the package computes neither.
#   `thadcr.model.factors.factor_correlation` returns $C$, `decoupling_loss` sums
#   $C_{i,j}^2$ over $i \ne j$ and `alignment_loss` sums $(1 - C_{i,i})^2$, as the paper's
#   $\mathcal{L}_D$ and $\mathcal{L}_A$ do. $\mathcal{L}_D$ does not minimise $C_{i,j}$, which
#   would drive it towards $-1$, but its square, which drives it to 0 from either side: it
#   decorrelates the factors. The [reproduction notes](../book/reproduction-notes.md) (factors
#   and losses) say the same.
# :::
#
# The package divides the inner product by the $D/K$ dimensions, so that $C_{i,j}$ is the *mean*
# of the $D/K$ per-dimension correlations (dimension $d$ of text factor $i$ with dimension $d$ of
# audio factor $j$), in $[-1, 1]$; it also adds $\epsilon = 10^{-5}$ to the variance. Both are
# our choices. With the plain inner product, $C_{i,i}$ would be their *sum*, between $-D/K$ and
# $D/K$, and $\mathcal{L}_A$ would vanish when the per-dimension correlations average $K/D$
# (1/96 with the paper profiles' 96-dimensional factors). It would then ask matching factors to
# be barely correlated, and penalise perfectly aligned ones ($C_{i,i} = D/K$) more than
# unrelated ones. With the mean, $C_{i,i} = 1$ means that every dimension of the text factor
# moves with the same dimension of the audio factor over the batch, which is what "maximize the
# mutual information" of a matching pair asks for. The entries also keep one scale whatever
# $K$ is, so one $\alpha$ and one $\beta$ serve Table 4's three values of $K$. The literal
# version below follows the formula with our division by $D/K$ but without $\epsilon$, loops
# over batch and dimensions, float64:

# %% tags=["nbval-ignore-output"]
show(factor_correlation)


# %%
def correlation_literal(e_t: np.ndarray, e_a: np.ndarray) -> np.ndarray:
    """C with loops: e_t, e_a (B, K, D/K) factors of B matching pairs -> (K, K)."""
    B, K, w = e_t.shape

    def standardise(e: np.ndarray) -> np.ndarray:
        z = np.zeros_like(e)
        for k in range(K):
            for d in range(w):
                mean = sum(e[b, k, d] for b in range(B)) / B
                var = sum((e[b, k, d] - mean) ** 2 for b in range(B)) / B
                for b in range(B):
                    z[b, k, d] = (e[b, k, d] - mean) / math.sqrt(var)
        return z

    z_t, z_a = standardise(e_t), standardise(e_a)
    C = np.zeros((K, K))
    for i in range(K):
        for j in range(K):
            # expectation over the pairs, per dimension
            C[i, j] = sum(z_t[b, i] @ z_a[b, j] for b in range(B)) / B / w
    return C


def losses_literal(C: np.ndarray) -> tuple[float, float]:
    """L_D = sum_i sum_{j != i} C_ij^2 and L_A = sum_i (1 - C_ii)^2, with loops."""
    K = len(C)
    L_D = sum(C[i, j] ** 2 for i in range(K) for j in range(K) if j != i)
    L_A = sum((1 - C[i, i]) ** 2 for i in range(K))
    return L_D, L_A


# the examples' own random numbers, independent of any layer's initialisation
gen = torch.Generator().manual_seed(1)
e_t = torch.randn(16, 4, 3, dtype=torch.float64, generator=gen)
noise = torch.randn(16, 4, 3, dtype=torch.float64, generator=gen)
e_a = 0.5 * e_t + noise  # partly aligned factors
C = factor_correlation(e_audio=e_a, e_text=e_t)  # (K, K): rows text, columns audio
assert C.shape == (4, 4)
C_literal = correlation_literal(e_t.numpy(), e_a.numpy())
# the package's eps = 1e-5 is the only difference
assert np.allclose(C.numpy(), C_literal, atol=1e-4)
package_losses = (decoupling_loss(C).item(), alignment_loss(C).item())
assert np.allclose(losses_literal(C_literal), package_losses, atol=1e-3)
gap = np.abs(C.numpy() - C_literal).max()
print(f"C {tuple(C.shape)}: package and loops agree to {gap:.1e}")
print(C.numpy())

# %% [markdown]
# ## $\mathcal{L}_D$ and $\mathcal{L}_A$ on examples with known answers
#
# $$\mathcal{L}_D = \sum_i \sum_{j \ne i} C_{i,j}^2, \qquad
# \mathcal{L}_A = \sum_i (1 - C_{i,i})^2.$$
#
# Factors built from columns of a Hadamard matrix are standardised ($\pm 1$, mean 0,
# variance 1) and mutually orthogonal over the batch, so $C$ is known exactly: with $K = 4$
# factors of 2 dimensions over $B = 16$ pairs,
#
# - identical text and audio factors: $C = I$, so $\mathcal{L}_D = 0$ and $\mathcal{L}_A = 0$;
# - audio factors a cyclic permutation of the text factors: $C$ is that permutation matrix,
#   $\mathcal{L}_D = K = 4$ (four off-diagonal ones) and $\mathcal{L}_A = K = 4$;
# - negated factors: $C = -I$, $\mathcal{L}_D = 0$, $\mathcal{L}_A = 4 K = 16$;
# - independent random factors: $C \approx 0$ (entries of order $1 / \sqrt{B \cdot D/K}$),
#   $\mathcal{L}_A \approx K = 4$.
#
# **A relative: Barlow Twins.** Together the two losses,
#
# $$\alpha \mathcal{L}_D + \beta \mathcal{L}_A = \beta \Big[\sum_i (1 - C_{i,i})^2
# + \frac{\alpha}{\beta} \sum_i \sum_{j \ne i} C_{i,j}^2\Big],$$
#
# pull a cross-correlation matrix towards the identity. That is the form of the Barlow Twins
# objective ({cite}`zbontar2021barlow`): there $C$ correlates the embedding dimensions of two
# distorted views of one image over the batch, its diagonal is pulled to 1 (the two views agree)
# and its off-diagonal to 0 (the dimensions carry no redundant information), with a small
# weight on the off-diagonal. In DCR the two views are a caption and its clip, an entry
# correlates two factors of $D/K$ dimensions rather than two single dimensions, and the
# off-diagonal term weighs $\alpha / \beta = 2$ times the diagonal one. The paper does not cite
# Barlow Twins (it follows its refs [25-27] in measuring mutual information implicitly); the
# comparison is ours. It says what the losses optimise without the detour through Eqs. 2
# and 3: correlations between factors, not mutual information, and a correlation of 0 does not
# make two factors independent.

# %%
hadamard = np.array([[1.0]])
for _ in range(4):
    # 16 x 16, orthogonal columns
    hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
# (B=16, K=4, D/K=2); column 0 (constant) skipped
base = torch.tensor(hadamard[:, 1:9]).view(16, 4, 2)
random_pair = torch.randn(2, 256, 4, 2, dtype=torch.float64, generator=gen)
examples = {
    "identical": (base, base),
    "permuted": (base, base[:, [1, 2, 3, 0]]),
    "negated": (base, -base),
    "random": (random_pair[0], random_pair[1]),
}
expected = {"identical": np.eye(4), "permuted": np.eye(4)[[1, 2, 3, 0]].T,
            "negated": -np.eye(4)}
rows, matrices = {}, {}
for name, (text_factors, audio_factors) in examples.items():
    C = factor_correlation(e_audio=audio_factors, e_text=text_factors)
    C_lit = correlation_literal(text_factors.numpy(), audio_factors.numpy())
    assert np.allclose(C.numpy(), C_lit, atol=1e-4), name
    if name in expected:
        assert np.allclose(C.numpy(), expected[name], atol=1e-4), name
    L_D, L_A = decoupling_loss(C).item(), alignment_loss(C).item()
    loops = losses_literal(C_lit)
    assert np.allclose((L_D, L_A), loops, atol=1e-3), name
    rows[name] = {"L_D": L_D, "L_A": L_A,
                  "L_D (loops)": loops[0], "L_A (loops)": loops[1]}
    matrices[name] = C.numpy()
table = pd.DataFrame(rows).T
assert np.allclose(table.loc["identical", ["L_D", "L_A"]], [0, 0], atol=1e-6)
assert np.allclose(table.loc["permuted", ["L_D", "L_A"]], [4, 4], atol=1e-3)
assert np.allclose(table.loc["negated", ["L_D", "L_A"]], [0, 16], atol=1e-3)
assert table.loc["random", "L_D"] < 0.2 and 3 < table.loc["random", "L_A"] < 5
print("permuted C:\n", matrices["permuted"])
table.round(3)

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, (name, C) in zip(axes, matrices.items()):
    im = ax.imshow(C, cmap="RdBu_r", vmin=-1, vmax=1)
    losses = f"L_D={rows[name]['L_D']:.2f}, L_A={rows[name]['L_A']:.2f}"
    ax.set(title=f"{name}: {losses}", xlabel="audio factor j", ylabel="text factor i",
           xticks=range(4), yticks=range(4))
    ax.title.set_fontsize(9)
fig.colorbar(im, ax=axes, fraction=0.02)
fig.suptitle("C for the four examples (target: the identity)")
plt.show()

# %% [markdown]
# ## Gradients
#
# Both losses are differentiable functions of the factors; `gradcheck` compares autograd with
# finite differences in float64, and one gradient step on the combined loss
# $\alpha \mathcal{L}_D + \beta \mathcal{L}_A$ (here with a large step) must lower it.

# %%
e_t = torch.randn(6, 3, 2, dtype=torch.float64, generator=gen).requires_grad_()
e_a = torch.randn(6, 3, 2, dtype=torch.float64, generator=gen).requires_grad_()


def weighted(e_t: torch.Tensor, e_a: torch.Tensor, alpha=0.01, beta=0.005):
    C = factor_correlation(e_audio=e_a, e_text=e_t)
    return alpha * decoupling_loss(C) + beta * alignment_loss(C)


assert torch.autograd.gradcheck(weighted, (e_t, e_a))
before = weighted(e_t, e_a)
g_t, g_a = torch.autograd.grad(before, (e_t, e_a))
with torch.no_grad():
    after = weighted(e_t - 10.0 * g_t, e_a - 10.0 * g_a)
assert after < before
print(f"gradcheck passed; one step lowers alpha L_D + beta L_A: "
      f"{before.item():.5f} -> {after.item():.5f}")

# %% [markdown]
# ## $C$ before and after training
#
# A run of a variant with factors (`DCR`, `THA+DCR`, `DP+LD`, `DP+LD+LA`) writes
# `factors.npz`: $C$ on the matching pairs of the test split, with the initial model
# (`C_initial`) and the tested epoch (`C_trained`). This page reads the DCR run of Table 1 with
# the paper's settings ($K = 8$, $\alpha = 0.01$, $\beta = 0.005$, seed 0), by its run id, from
# the runs of `thadcr reproduce --profile tiny` under `results/tiny/runs/`. The sentence under
# the figure is computed from the file.

# %% tags=["nbval-ignore-output"]
from IPython.display import Markdown, display

from thadcr.interfaces.notebook.method import factor_loss_sentence, table1_run_id

run_id = table1_run_id("DCR")  # audiocaps-DCR-htsat-K8-a0.01-b0.005-s0
path = Path("results/tiny/runs") / run_id / "factors.npz"
if not path.is_file():
    display(Markdown(
        f"`{path}` is missing: make it with `thadcr reproduce --profile tiny "
        "--tables 1`, or train that one run with notebooks/train.py "
        "(`papermill ... -p variant DCR "
        f"-p out_dir results/tiny/runs/{run_id}`)."
    ))
else:
    saved = np.load(path)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key in zip(axes, ("C_initial", "C_trained")):
        L_D, L_A = losses_literal(saved[key])
        im = ax.imshow(saved[key], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(title=f"{key}: L_D={L_D:.2f}, L_A={L_A:.2f}", xlabel="audio factor j",
               ylabel="text factor i")
    fig.colorbar(im, ax=axes, fraction=0.03)
    fig.suptitle(f"{run_id} (test split)")
    plt.show()
    display(Markdown(factor_loss_sentence(saved["C_initial"], saved["C_trained"])))

# %% [markdown]
# ## Summary
#
# - $e_k = W_k \bar x$: $K$ linear maps to $D/K$ dimensions, computed as one `Linear` whose
#   output is split into $K$ parts.
# - Eq. 2's mutual information and Eq. 3's ratio are not computed: $C$ stands in for them, and
#   the losses decorrelate factors rather than measure information (a Barlow-Twins-like
#   objective). $C$ standardises each factor dimension over the batch of matching pairs and
#   correlates text factor $i$ with audio factor $j$; the package divides by $D/K$ so that
#   $C \in [-1, 1]$ and its diagonal target 1 means fully correlated factors.
# - $\mathcal{L}_D$ (off-diagonal) and $\mathcal{L}_A$ (diagonal) vanish exactly when $C = I$,
#   i.e. each text factor matches its own audio factor and no other; permuted or negated
#   factors are penalised as computed above.
# - Next: [confidence-aware aggregation](ca.py) turns the factors into the similarity
#   $S_{DCR}$.
