"""DCR (paper 2.3-2.4): factor projection, Eq. 2-3 correlation C, L_D, L_A, CA module, Eq. 4."""

import math

import pytest
import torch

from thadcr.model import factors
from thadcr.model.factors import (
    ConfidenceAware,
    FactorProjection,
    alignment_loss,
    dcr_similarity,
    decoupling_loss,
    factor_correlation,
    uniform_factor_similarity,
)

D64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


# ---- literal implementations written from the paper's equations (loops, float64) ----


def literal_correlation(e_t, e_a, eps):
    """C_ij = E_{t,a}[(z_i^t)^T z_j^a] / (D/K), z standardised over the batch per dimension."""
    b, k, w = e_t.shape

    def z(e):
        out = [[[0.0] * w for _ in range(k)] for _ in range(b)]
        for i in range(k):
            for d in range(w):
                vals = [float(e[n, i, d]) for n in range(b)]
                mean = sum(vals) / b
                var = sum((v - mean) ** 2 for v in vals) / b
                for n in range(b):
                    out[n][i][d] = (vals[n] - mean) / math.sqrt(var + eps)
        return out

    zt, za = z(e_t), z(e_a)
    c = torch.zeros(k, k, dtype=D64)
    for i in range(k):
        for j in range(k):
            total = 0.0
            for n in range(b):
                total += sum(zt[n][i][d] * za[n][j][d] for d in range(w))
            c[i, j] = total / (b * w)
    return c


def literal_mlp(ca, e_hat):
    """g = b2 + sum_h w2_h * max(0, b1_h + sum_d W1_hd * e_hat_d)."""
    w1, b1 = ca.fc1.weight.detach().double(), ca.fc1.bias.detach().double()
    w2, b2 = ca.fc2.weight.detach().double()[0], ca.fc2.bias.detach().double()[0]
    g = float(b2)
    for h in range(w1.shape[0]):
        pre = float(b1[h]) + sum(float(w1[h, d]) * float(e_hat[d]) for d in range(len(e_hat)))
        g += float(w2[h]) * max(0.0, pre)
    return g


def literal_cos(u, v):
    dot = sum(float(x) * float(y) for x, y in zip(u, v))
    return dot / (math.sqrt(sum(float(x) ** 2 for x in u)) * math.sqrt(sum(float(y) ** 2 for y in v)))


def literal_dcr(e_audio, e_text, ca):
    """Eq. 4 for every pair: S = sum_i g_i cos(e_i^t, e_i^a), g_i = MLP([e_i^t, e_i^a])."""
    na, k, _ = e_audio.shape
    nt = e_text.shape[0]
    s = torch.zeros(na, nt, dtype=D64)
    for a in range(na):
        for t in range(nt):
            for i in range(k):
                e_hat = torch.cat([e_text[t, i], e_audio[a, i]])  # [e_i^t, e_i^a]
                s[a, t] += literal_mlp(ca, e_hat) * literal_cos(e_text[t, i], e_audio[a, i])
    return s


# ---- FactorProjection ----


def test_projection_shape_and_factor_dim():
    proj = FactorProjection(in_dim=20, joint_dim=768, n_factors=10)
    assert proj.factor_dim == 76
    assert proj(torch.randn(3, 20)).shape == (3, 10, 76)
    with pytest.raises(ValueError, match="n_factors=9"):
        FactorProjection(4, 8, 9)
    with pytest.raises(ValueError, match=r"\(B, 20\)"):
        proj(torch.randn(3, 21))


def test_projection_equals_k_separate_matrices():
    torch.manual_seed(0)
    proj = FactorProjection(in_dim=6, joint_dim=12, n_factors=3).double()
    x = rand(5, 6)
    out = proj(x)
    weight = proj.proj.weight.detach()
    for k in range(3):
        w_k = weight[4 * k : 4 * (k + 1)]  # W_k in R^{D/K x in_dim}
        for b in range(5):
            expected = [sum(float(w_k[r, c]) * float(x[b, c]) for c in range(6)) for r in range(4)]
            torch.testing.assert_close(out[b, k], torch.tensor(expected, dtype=D64))


# ---- correlation C and the two losses ----


@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_correlation_matches_literal(eps):
    e_t, e_a = rand(6, 3, 4, seed=1), rand(6, 3, 4, seed=2) + 0.5 * rand(6, 3, 4, seed=1)
    c = factor_correlation(e_audio=e_a, e_text=e_t, eps=eps)
    assert c.shape == (3, 3)
    torch.testing.assert_close(c, literal_correlation(e_t, e_a, eps))


def test_correlation_is_in_unit_range_and_one_on_identical_factors():
    e_t, e_a = rand(16, 5, 7, seed=3), rand(16, 5, 7, seed=4)
    c = factor_correlation(e_audio=e_a, e_text=e_t)
    assert c.abs().max() <= 1.0
    same = factor_correlation(e_audio=e_t, e_text=e_t, eps=0.0)
    torch.testing.assert_close(torch.diagonal(same), torch.ones(5, dtype=D64))
    near = factor_correlation(e_audio=e_t, e_text=e_t)  # eps shrinks it by var / (var + eps) only
    assert (torch.diagonal(near) < 1).all() and (torch.diagonal(near) > 1 - 1e-4).all()
    # perfectly anti-correlated factors give -1
    torch.testing.assert_close(torch.diagonal(factor_correlation(e_audio=-e_t, e_text=e_t, eps=0.0)), -torch.ones(5, dtype=D64))


def test_correlation_is_invariant_to_per_dimension_affine_maps():
    e_t, e_a = rand(8, 2, 3, seed=5), rand(8, 2, 3, seed=6)
    scale, shift = rand(1, 2, 3, seed=7).abs() + 0.5, rand(1, 2, 3, seed=8)
    torch.testing.assert_close(
        factor_correlation(e_audio=e_a, e_text=e_t * scale + shift, eps=0.0),
        factor_correlation(e_audio=e_a, e_text=e_t, eps=0.0),
    )


def test_correlation_errors():
    with pytest.raises(ValueError, match="must match"):
        factor_correlation(e_audio=rand(4, 3, 2), e_text=rand(4, 2, 3))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        factor_correlation(e_audio=rand(1, 2, 3), e_text=rand(1, 2, 3))
    with pytest.raises(ValueError, match=r"\(N, K, D/K\)"):
        factor_correlation(e_audio=rand(4, 6), e_text=rand(4, 6))


def test_losses_match_literal_sums():
    c = rand(4, 4, seed=9).tanh()
    l_d = sum(float(c[i, j]) ** 2 for i in range(4) for j in range(4) if j != i)
    l_a = sum((1 - float(c[i, i])) ** 2 for i in range(4))
    torch.testing.assert_close(decoupling_loss(c), torch.tensor(l_d, dtype=D64))
    torch.testing.assert_close(alignment_loss(c), torch.tensor(l_a, dtype=D64))
    assert float(decoupling_loss(torch.eye(3))) == 0.0 and float(alignment_loss(torch.eye(3))) == 0.0
    with pytest.raises(ValueError, match="square"):
        decoupling_loss(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="square"):
        alignment_loss(torch.zeros(3))


def test_correlation_and_losses_gradients():
    e_t = rand(5, 3, 2, seed=10).requires_grad_()
    e_a = rand(5, 3, 2, seed=11).requires_grad_()
    assert torch.autograd.gradcheck(lambda t, a: factor_correlation(e_audio=a, e_text=t), (e_t, e_a))
    for loss in (decoupling_loss, alignment_loss):
        assert torch.autograd.gradcheck(lambda t, a: loss(factor_correlation(e_audio=a, e_text=t)), (e_t, e_a))


# ---- confidence-aware module and similarities ----


def make_ca(w, seed=0, hidden=None):
    torch.manual_seed(seed)
    return ConfidenceAware(w, hidden).double()


def test_ca_default_hidden_and_literal_forward():
    ca = make_ca(3)
    assert ca.hidden == 12 and ca.fc1.in_features == 6 and ca.fc2.out_features == 1
    assert make_ca(3, hidden=5).hidden == 5
    e_t, e_a = rand(4, 2, 3, seed=12), rand(4, 2, 3, seed=13)
    g = ca(e_audio=e_a, e_text=e_t)
    assert g.shape == (4, 2)
    for b in range(4):
        for i in range(2):
            expected = literal_mlp(ca, torch.cat([e_t[b, i], e_a[b, i]]))
            assert g[b, i].item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    with torch.no_grad():
        ca.fc2.bias.fill_(-100.0)  # no output activation: g follows the bias below zero
    assert (ca(e_audio=e_a, e_text=e_t) < 0).all()


def test_ca_all_pairs_equals_per_pair_forward(monkeypatch):
    ca = make_ca(3, seed=1)
    e_a, e_t = rand(5, 2, 3, seed=14), rand(4, 2, 3, seed=15)
    expected = torch.stack(
        [torch.stack([ca(e_audio=e_a[a : a + 1], e_text=e_t[t : t + 1])[0] for t in range(4)]) for a in range(5)]
    )  # (Na, Nt, K)
    full = ca.all_pairs(e_audio=e_a, e_text=e_t)
    assert full.shape == (5, 4, 2)
    torch.testing.assert_close(full, expected)
    monkeypatch.setattr(factors, "CA_BLOCK_ELEMENTS", 2 * 4 * 2 * ca.hidden)  # two audio rows per block
    torch.testing.assert_close(ca.all_pairs(e_audio=e_a, e_text=e_t), expected)


def test_ca_all_pairs_gradient_matches_per_pair(monkeypatch):
    monkeypatch.setattr(factors, "CA_BLOCK_ELEMENTS", 1)  # one audio row per block
    ca = make_ca(2, seed=2)
    e_a, e_t = rand(3, 2, 2, seed=16), rand(2, 2, 2, seed=17)
    ca.all_pairs(e_audio=e_a, e_text=e_t).sum().backward()
    fast = [p.grad.clone() for p in ca.parameters()]
    ca.zero_grad()
    sum(ca(e_audio=e_a[a : a + 1], e_text=e_t[t : t + 1]).sum() for a in range(3) for t in range(2)).backward()
    for g_fast, p in zip(fast, ca.parameters()):
        torch.testing.assert_close(g_fast, p.grad)


def test_ca_shape_errors():
    ca = make_ca(3)
    with pytest.raises(ValueError, match=r"\(N, K, 3\)"):
        ca.all_pairs(e_audio=rand(2, 2, 4), e_text=rand(2, 2, 4))
    with pytest.raises(ValueError, match="matching pairs"):
        ca(e_audio=rand(3, 2, 3), e_text=rand(2, 2, 3))


def test_dcr_similarity_matches_literal_eq4():
    ca = make_ca(3, seed=3)
    e_a, e_t = rand(3, 2, 3, seed=18), rand(4, 2, 3, seed=19)
    s = dcr_similarity(e_audio=e_a, e_text=e_t, ca=ca)
    assert s.shape == (3, 4)
    torch.testing.assert_close(s, literal_dcr(e_a, e_t, ca))


def test_uniform_factor_similarity_matches_literal():
    e_a, e_t = rand(3, 4, 2, seed=20), rand(2, 4, 2, seed=21)
    s = uniform_factor_similarity(e_audio=e_a, e_text=e_t)
    expected = torch.tensor(
        [[sum(literal_cos(e_t[t, i], e_a[a, i]) for i in range(4)) for t in range(2)] for a in range(3)], dtype=D64
    )
    torch.testing.assert_close(s, expected)
    assert s.abs().max() <= 4.0
    with pytest.raises(ValueError, match="differ in"):
        uniform_factor_similarity(e_audio=rand(2, 4, 2), e_text=rand(2, 2, 4))


def test_dcr_similarity_gradients():
    ca = make_ca(2, seed=4)
    e_a = rand(3, 2, 2, seed=22).requires_grad_()
    e_t = rand(2, 2, 2, seed=23).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, t: dcr_similarity(e_audio=a, e_text=t, ca=ca), (e_a, e_t))
    assert torch.autograd.gradcheck(lambda a, t: uniform_factor_similarity(e_audio=a, e_text=t), (e_a, e_t))
    dcr_similarity(e_audio=e_a, e_text=e_t, ca=ca).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ca.parameters())


POSITIONAL_CALLS = {
    "factor_correlation": lambda e_a, e_t, ca: factor_correlation(e_t, e_a),
    "ConfidenceAware": lambda e_a, e_t, ca: ca(e_t, e_a),
    "ConfidenceAware.all_pairs": lambda e_a, e_t, ca: ca.all_pairs(e_a, e_t),
    "dcr_similarity": lambda e_a, e_t, ca: dcr_similarity(e_a, e_t, ca),
    "uniform_factor_similarity": lambda e_a, e_t, ca: uniform_factor_similarity(e_a, e_t),
}


@pytest.mark.parametrize("name", POSITIONAL_CALLS)
def test_audio_and_text_factors_cannot_be_passed_positionally(name):
    """Audio and text factors have one shape, so a swapped positional call would go unnoticed: refused."""
    with pytest.raises(TypeError, match="positional"):
        POSITIONAL_CALLS[name](rand(4, 2, 3, seed=24), rand(4, 2, 3, seed=25), make_ca(3))


def test_a_swap_by_keyword_changes_what_asymmetric_functions_return():
    e_a, e_t = rand(4, 2, 3, seed=24), rand(4, 2, 3, seed=25)
    ca = make_ca(3, seed=5)
    assert not torch.allclose(ca(e_audio=e_a, e_text=e_t), ca(e_audio=e_t, e_text=e_a))
    c, swapped = factor_correlation(e_audio=e_a, e_text=e_t), factor_correlation(e_audio=e_t, e_text=e_a)
    torch.testing.assert_close(swapped, c.T)  # rows are text factors, columns audio factors
    assert not torch.allclose(c, c.T)
