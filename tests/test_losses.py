"""NT-Xent loss of Eq. 5, with and without same-clip positives."""

import math

import pytest
import torch

from thadcr.model.losses import nt_xent

D64 = torch.float64


def rand_sim(b, seed=0):
    return torch.randn(b, b, generator=torch.Generator().manual_seed(seed), dtype=D64)


def literal_eq5(sim, tau):
    """-(1/B)(sum_i log exp(S_ii/tau)/sum_j exp(S_ij/tau) + sum_i log exp(S_ii/tau)/sum_j exp(S_ji/tau))."""
    b = sim.shape[0]
    s = [[float(sim[i, j]) for j in range(b)] for i in range(b)]
    total = 0.0
    for i in range(b):
        total += math.log(math.exp(s[i][i] / tau) / sum(math.exp(s[i][j] / tau) for j in range(b)))
        total += math.log(math.exp(s[i][i] / tau) / sum(math.exp(s[j][i] / tau) for j in range(b)))
    return -total / b


def literal_soft(sim, tau, ids):
    """Cross-entropy of each row and column against a uniform target over same-clip positives."""
    b = sim.shape[0]
    s = [[float(sim[i, j]) for j in range(b)] for i in range(b)]
    total = 0.0
    for i in range(b):
        pos = [j for j in range(b) if ids[j] == ids[i]]
        row_norm = sum(math.exp(s[i][j] / tau) for j in range(b))
        col_norm = sum(math.exp(s[j][i] / tau) for j in range(b))
        for j in pos:
            total -= math.log(math.exp(s[i][j] / tau) / row_norm) / len(pos)
            total -= math.log(math.exp(s[j][i] / tau) / col_norm) / len(pos)
    return total / b


@pytest.mark.parametrize("tau", [0.07, 1.0])
def test_matches_literal_eq5(tau):
    sim = rand_sim(5, seed=1).tanh()
    assert nt_xent(sim, tau).item() == pytest.approx(literal_eq5(sim, tau), rel=1e-6)


def test_distinct_clip_ids_reduce_to_eq5():
    sim = rand_sim(6, seed=2)
    ids = torch.tensor([4, 0, 9, 2, 7, 1])
    torch.testing.assert_close(nt_xent(sim, 0.5, ids), nt_xent(sim, 0.5))


def test_same_clip_positives_match_literal_soft_targets():
    sim = rand_sim(6, seed=3)
    ids = torch.tensor([0, 1, 0, 2, 1, 0])
    loss = nt_xent(sim, 0.3, ids)
    assert loss.item() == pytest.approx(literal_soft(sim, 0.3, ids.tolist()), rel=1e-6)
    assert loss.item() != pytest.approx(nt_xent(sim, 0.3).item(), rel=1e-3)


def test_symmetric_matrix_rows_equal_columns():
    a = rand_sim(5, seed=4)
    sym = a + a.T
    b = 5
    row_only = -sum(torch.log_softmax(sym[i] / 0.2, dim=0)[i].item() for i in range(b)) / b
    assert nt_xent(sym, 0.2).item() == pytest.approx(2 * row_only, rel=1e-10)
    # in general, exchanging the roles of audio and text leaves Eq. 5 unchanged
    torch.testing.assert_close(nt_xent(a, 0.2), nt_xent(a.T, 0.2))


def test_perfect_separation_gives_near_zero_and_uniform_gives_2_log_b():
    assert nt_xent(10 * torch.eye(4, dtype=D64), 0.07).item() < 1e-10
    assert nt_xent(torch.zeros(4, 4, dtype=D64), 0.07).item() == pytest.approx(2 * math.log(4))


def test_gradient():
    sim = rand_sim(4, seed=5).requires_grad_()
    ids = torch.tensor([0, 1, 0, 2])
    assert torch.autograd.gradcheck(lambda s: nt_xent(s, 0.5), (sim,))
    assert torch.autograd.gradcheck(lambda s: nt_xent(s, 0.5, ids), (sim,))
    # closed form of Eq. 5's gradient: (softmax_rows + softmax_cols - 2 I) / (B tau)
    nt_xent(sim, 0.5).backward()
    logits = sim.detach() / 0.5
    expected = (logits.softmax(1) + logits.softmax(0) - 2 * torch.eye(4, dtype=D64)) / (4 * 0.5)
    torch.testing.assert_close(sim.grad, expected)


def test_input_errors():
    with pytest.raises(ValueError, match="square"):
        nt_xent(torch.zeros(3, 4), 0.07)
    with pytest.raises(ValueError, match="tau must be positive"):
        nt_xent(torch.zeros(3, 3), 0.0)
    with pytest.raises(ValueError, match=r"clip_ids must have shape \(3,\)"):
        nt_xent(torch.zeros(3, 3), 0.07, torch.tensor([0, 1]))
