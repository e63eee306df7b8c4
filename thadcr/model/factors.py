"""Disentangled Cross-modal Representation (DCR), paper sections 2.3-2.4, Eq. 2-4.

The global text feature t-bar ([CLS]) and audio feature a-bar (pooled) are each projected into K
latent factors of D/K dimensions (``FactorProjection``). On matching pairs, the cross-modal
factor correlation matrix C (``factor_correlation``) gives the inter-factor decoupling loss L_D
(off-diagonal) and the intra-factor alignment loss L_A (diagonal). The confidence-aware module
(``ConfidenceAware``) weights the per-factor cosines into S_DCR (Eq. 4, ``dcr_similarity``).

Audio and text factors have the same shape, so a swap would pass unnoticed: every function here
takes them as keyword-only arguments ``e_audio=`` and ``e_text=``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thadcr import portable

# Elements of the (rows, Nt, K, hidden) activation ConfidenceAware.all_pairs holds at once.
CA_BLOCK_ELEMENTS = 2**25


def _check_factors(name: str, e: torch.Tensor) -> None:
    if e.dim() != 3:
        raise ValueError(f"{name} must be (N, K, D/K) factors, got shape {tuple(e.shape)}")


class FactorProjection(nn.Module):
    """K latent factors e_k = W_k x, W_k in R^{D/K x in_dim} (section 2.3).

    The K matrices W_k are stored stacked as the rows of one bias-free Linear(in_dim, K * D/K):
    row block k of its weight is W_k, so reshaping its output to (B, K, D/K) gives exactly the K
    separate projections. D/K is ``joint_dim // n_factors`` (e.g. 768 with K = 10 gives 76-d
    factors).
    """

    def __init__(self, in_dim: int, joint_dim: int, n_factors: int) -> None:
        super().__init__()
        if not 1 <= n_factors <= joint_dim:
            raise ValueError(f"n_factors={n_factors} must be between 1 and joint_dim={joint_dim}")
        self.n_factors = n_factors
        self.factor_dim = joint_dim // n_factors
        self.proj = nn.Linear(in_dim, n_factors * self.factor_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in_dim) -> factors (B, K, D/K)."""
        if x.dim() != 2 or x.shape[1] != self.proj.in_features:
            raise ValueError(f"expected (B, {self.proj.in_features}) input, got {tuple(x.shape)}")
        return self.proj(x).view(x.shape[0], self.n_factors, self.factor_dim)


def factor_correlation(*, e_audio: torch.Tensor, e_text: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Cross-modal factor correlation C (K, K) of B matching pairs (section 2.3).

    Each factor dimension is standardised over the batch, z = (e - E[e]) / sqrt(Var[e] + eps)
    (mean and population variance over the B pairs), and
    C_ij = 1/(B * D/K) sum_b sum_d z^t_{b,i,d} z^a_{b,j,d}, i.e. E_{t,a}[(z_i^t)^T z_j^a] averaged
    over the D/K dimensions, a correlation in [-1, 1]: rows are text factors, columns audio factors.
    e_audio, e_text: (B, K, D/K), row b of both is the same clip-caption pair.
    """
    _check_factors("e_text", e_text)
    if e_audio.shape != e_text.shape:
        raise ValueError(f"e_text {tuple(e_text.shape)} and e_audio {tuple(e_audio.shape)} must match")
    b, _, w = e_text.shape
    if b < 2:
        raise ValueError("factor_correlation needs at least 2 pairs to standardise over the batch")

    def standardise(e: torch.Tensor) -> torch.Tensor:
        mean = e.mean(dim=0, keepdim=True)
        var = e.var(dim=0, unbiased=False, keepdim=True)
        return (e - mean) / portable.sqrt(var + eps)

    z_t, z_a = standardise(e_text), standardise(e_audio)  # (B, K, w)
    return torch.einsum("bid,bjd->ij", z_t, z_a) / (b * w)  # (K, K)


def _check_square(c: torch.Tensor) -> None:
    if c.dim() != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"C must be a square (K, K) matrix, got {tuple(c.shape)}")


def decoupling_loss(c: torch.Tensor) -> torch.Tensor:
    """Inter-factor decoupling loss L_D = sum_i sum_{j != i} C_ij^2 (section 2.3)."""
    _check_square(c)
    return (c**2).sum() - (torch.diagonal(c) ** 2).sum()


def alignment_loss(c: torch.Tensor) -> torch.Tensor:
    """Intra-factor alignment loss L_A = sum_i (1 - C_ii)^2 (section 2.3)."""
    _check_square(c)
    return ((1 - torch.diagonal(c)) ** 2).sum()


class ConfidenceAware(nn.Module):
    """Confidence-aware (CA) module, section 2.4: g_i = MLP([e_i^t, e_i^a]).

    The paper: an MLP of "two linear layers and a ReLU". Ours: Linear(2w -> hidden) -> ReLU ->
    Linear(hidden -> 1), one MLP shared by all K subspaces (w = D/K; hidden defaults to 4w, as in
    DiCoSA's code; the paper gives neither). The paper names no output activation, so none is
    applied: g_i is an unconstrained real weight (our reading).
    """

    def __init__(self, factor_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        self.factor_dim = factor_dim
        self.hidden = hidden if hidden is not None else 4 * factor_dim
        self.fc1 = nn.Linear(2 * factor_dim, self.hidden)
        self.fc2 = nn.Linear(self.hidden, 1)

    def _check(self, e_audio: torch.Tensor, e_text: torch.Tensor) -> None:
        _check_factors("e_audio", e_audio)
        _check_factors("e_text", e_text)
        if e_audio.shape[1:] != e_text.shape[1:] or e_text.shape[2] != self.factor_dim:
            raise ValueError(
                f"factors must be (N, K, {self.factor_dim}) with one K, got e_audio "
                f"{tuple(e_audio.shape)} and e_text {tuple(e_text.shape)}"
            )

    def forward(self, *, e_audio: torch.Tensor, e_text: torch.Tensor) -> torch.Tensor:
        """Confidences g_i = MLP([e_i^t, e_i^a]) of B matching pairs: e_audio, e_text (B, K, w) -> g (B, K)."""
        self._check(e_audio, e_text)
        if e_audio.shape[0] != e_text.shape[0]:
            raise ValueError(f"forward takes matching pairs; got {e_text.shape[0]} texts, {e_audio.shape[0]} audios")
        e_hat = torch.cat([e_text, e_audio], dim=-1)  # (B, K, 2w)
        return self.fc2(F.relu(self.fc1(e_hat))).squeeze(-1)

    def all_pairs(self, *, e_audio: torch.Tensor, e_text: torch.Tensor) -> torch.Tensor:
        """Confidences of every clip-caption pair: (Na, K, w), (Nt, K, w) -> g (Na, Nt, K).

        Splitting fc1's weight W1 = [W1_t, W1_a] gives W1 [t; a] + b1 = W1_t t + (W1_a a + b1),
        so each side is projected once and the (Na * Nt * K, 2w) concatenation is never built;
        the (rows, Nt, K, hidden) activation is formed for blocks of audio rows at a time.
        """
        self._check(e_audio, e_text)
        w = self.factor_dim
        h_text = F.linear(e_text, self.fc1.weight[:, :w])  # (Nt, K, H)
        h_audio = F.linear(e_audio, self.fc1.weight[:, w:], self.fc1.bias)  # (Na, K, H)
        n_text, k, _ = e_text.shape
        rows = max(1, CA_BLOCK_ELEMENTS // (n_text * k * self.hidden))
        out = []
        for start in range(0, e_audio.shape[0], rows):
            act = F.relu(h_audio[start : start + rows, None] + h_text[None])  # (rows, Nt, K, H)
            out.append(self.fc2(act).squeeze(-1))  # (rows, Nt, K)
        return torch.cat(out, dim=0)


def _factor_cosines(*, e_audio: torch.Tensor, e_text: torch.Tensor) -> torch.Tensor:
    """cos(e_i^t, e_i^a) for every clip, caption and factor: (Na, Nt, K)."""
    _check_factors("e_audio", e_audio)
    _check_factors("e_text", e_text)
    if e_audio.shape[1:] != e_text.shape[1:]:
        raise ValueError(f"e_audio {tuple(e_audio.shape)} and e_text {tuple(e_text.shape)} differ in (K, D/K)")
    return torch.einsum("akd,tkd->atk", F.normalize(e_audio, dim=-1), F.normalize(e_text, dim=-1))


def dcr_similarity(*, e_audio: torch.Tensor, e_text: torch.Tensor, ca: ConfidenceAware) -> torch.Tensor:
    """S_DCR = sum_i g_i cos(e_i^t, e_i^a) (Eq. 4) for all pairs: e_audio (Na, K, w), e_text (Nt, K, w)
    -> (Na, Nt)."""
    weights = ca.all_pairs(e_audio=e_audio, e_text=e_text)  # (Na, Nt, K)
    sim = (weights * _factor_cosines(e_audio=e_audio, e_text=e_text)).sum(dim=-1)
    assert sim.shape == (e_audio.shape[0], e_text.shape[0])
    return sim


def uniform_factor_similarity(*, e_audio: torch.Tensor, e_text: torch.Tensor) -> torch.Tensor:
    """sum_i cos(e_i^t, e_i^a) without CA weights (Table 3 rows "+L_D", "+L_D+L_A"): (Na, Nt)."""
    return _factor_cosines(e_audio=e_audio, e_text=e_text).sum(dim=-1)
