"""Retrieval metrics: known answers, pessimistic ties, literal per-query loops, input errors."""

import numpy as np
import pytest
import torch

from thadcr.run.metrics import retrieval_metrics

KEYS = {
    f"{d}_{m}" for d in ("t2a", "a2t") for m in ("R1", "R5", "R10", "mAP10", "medr", "meanr")
}


def literal_metrics(sim, owner):
    """Per-query loops. Rank of a correct item with score s, under the pessimistic tie rule:
    t2a: 1 + number of other clips scoring >= s.
    a2t: the clip's correct captions sorted by descending score; the i-th gets rank
    i + number of wrong captions scoring >= its score."""
    n_audio, n_text = sim.shape
    out = {}
    ranks, aps = [], []
    for t in range(n_text):
        s = sim[owner[t], t]
        rank = 1 + sum(1 for a in range(n_audio) if a != owner[t] and sim[a, t] >= s)
        ranks.append(rank)
        aps.append(1.0 / rank if rank <= 10 else 0.0)
    out["t2a"] = (ranks, aps)
    ranks, aps = [], []
    for a in range(n_audio):
        mine = [t for t in range(n_text) if owner[t] == a]
        others = [t for t in range(n_text) if owner[t] != a]
        scores = sorted((sim[a, t] for t in mine), reverse=True)
        r = [i + sum(1 for t in others if sim[a, t] >= s) for i, s in enumerate(scores, start=1)]
        ranks.append(min(r))
        aps.append(sum(i / rank for i, rank in enumerate(sorted(r), start=1) if rank <= 10) / len(mine))
    out["a2t"] = (ranks, aps)
    result = {}
    for d, (ranks, aps) in out.items():
        for k in (1, 5, 10):
            result[f"{d}_R{k}"] = 100.0 * sum(r <= k for r in ranks) / len(ranks)
        result[f"{d}_mAP10"] = 100.0 * sum(aps) / len(aps)
        result[f"{d}_medr"] = float(np.median(ranks))
        result[f"{d}_meanr"] = sum(ranks) / len(ranks)
    return result


def check_close(got, expected):
    assert set(got) == KEYS
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def test_perfect_retrieval_is_100():
    owner = np.repeat(np.arange(12), 5)
    sim = (owner[None, :] == np.arange(12)[:, None]).astype(np.float32) + 0.01 * np.arange(60)[None] / 60
    m = retrieval_metrics(sim, owner)
    for key in KEYS:
        assert m[key] == (1.0 if key.endswith(("medr", "meanr")) else 100.0), key


def test_reversed_retrieval_ranks_correct_items_last():
    n = 12
    owner = np.arange(n)
    m = retrieval_metrics(-np.eye(n), owner)
    for d in ("t2a", "a2t"):
        assert m[f"{d}_R1"] == m[f"{d}_R10"] == m[f"{d}_mAP10"] == 0.0
        assert m[f"{d}_medr"] == m[f"{d}_meanr"] == n


def test_known_small_answer():
    # 3 clips, 4 captions: captions 0, 1 -> clip 0; caption 2 -> clip 1; caption 3 -> clip 2
    owner = np.array([0, 0, 1, 2])
    sim = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],
            [0.2, 0.8, 0.7, 0.1],
            [0.1, 0.0, 0.6, 0.2],
        ]
    )
    m = retrieval_metrics(sim, owner)
    # t2a ranks: caption0 -> 1, caption1 -> 2 (clip 1 scores 0.8), caption2 -> 1, caption3 -> 2
    assert m["t2a_R1"] == 50.0 and m["t2a_R5"] == 100.0
    assert m["t2a_mAP10"] == pytest.approx(100 * (1 + 0.5 + 1 + 0.5) / 4)
    assert m["t2a_medr"] == 1.5 and m["t2a_meanr"] == 1.5
    # a2t: clip0 ranks captions [0.9, 0.5, 0.3, 0.1] -> correct at 1 and 4: AP = (1/1 + 2/4) / 2
    # clip1 ranks [0.8, 0.7, ...] -> its caption 2 at rank 2: AP = 1/2
    # clip2 ranks [0.6, 0.2, 0.1, 0.0] -> its caption 3 at rank 2: AP = 1/2
    assert m["a2t_R1"] == pytest.approx(100 / 3)
    assert m["a2t_mAP10"] == pytest.approx(100 * (0.75 + 0.5 + 0.5) / 3)
    assert m["a2t_medr"] == 2.0 and m["a2t_meanr"] == pytest.approx(5 / 3)


def test_ties_count_against_the_correct_item():
    owner = np.repeat(np.arange(4), 2)
    m = retrieval_metrics(np.zeros((4, 8)), owner)
    assert m["t2a_R1"] == 0.0 and m["t2a_medr"] == 4.0  # every other clip ties: rank 4 of 4
    # a2t: 6 wrong captions tie with the 2 correct ones, which take ranks 7 and 8
    assert m["a2t_medr"] == 7.0 and m["a2t_R5"] == 0.0
    assert m["a2t_mAP10"] == pytest.approx(100 * (1 / 7 + 2 / 8) / 2)
    # one tie at the top: the correct clip shares the best score with one wrong clip -> rank 2
    sim = np.eye(3)
    sim[1, 0] = 1.0
    m = retrieval_metrics(sim, np.arange(3))
    assert m["t2a_R1"] == pytest.approx(200 / 3)
    assert m["t2a_meanr"] == pytest.approx(4 / 3)


def test_tied_correct_captions_take_consecutive_ranks():
    # clip 0's two captions tie at the top: ranks 1 and 2, not both 2
    owner = np.array([0, 0, 1])
    sim = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    m = retrieval_metrics(sim, owner)
    assert m["a2t_R1"] == 100.0 and m["a2t_mAP10"] == 100.0


def test_independent_of_input_order():
    rng = np.random.default_rng(0)
    owner = rng.integers(0, 7, 30)
    owner[:7] = np.arange(7)
    sim = rng.integers(0, 4, (7, 30)).astype(float)  # many ties
    base = retrieval_metrics(sim, owner)
    rows, cols = rng.permutation(7), rng.permutation(30)
    inverse = np.argsort(rows)
    shuffled = retrieval_metrics(sim[rows][:, cols], inverse[owner[cols]])
    check_close(shuffled, base)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_literal_loops_with_varying_captions_per_clip(seed):
    rng = np.random.default_rng(seed)
    n_audio = 15
    owner = np.concatenate([np.arange(n_audio), rng.integers(0, n_audio, 35)])  # 1 to ~6 per clip
    rng.shuffle(owner)
    # integer scores force ties; continuous scores in the last run
    sim = rng.integers(0, 6, (n_audio, owner.size)).astype(float) if seed < 2 else rng.normal(size=(n_audio, owner.size))
    check_close(retrieval_metrics(sim, owner), literal_metrics(sim, owner))


def test_a2t_map_never_exceeds_100():
    rng = np.random.default_rng(3)
    owner = np.repeat(np.arange(20), 5)
    for _ in range(5):
        sim = rng.normal(size=(20, 100)) + 3 * (owner[None] == np.arange(20)[:, None])
        m = retrieval_metrics(sim, owner)
        assert 0.0 <= m["a2t_mAP10"] <= 100.0 and m["a2t_mAP10"] <= m["a2t_R10"]


def test_accepts_torch_tensors():
    owner = np.repeat(np.arange(6), 3)
    sim = np.random.default_rng(4).normal(size=(6, 18)).astype(np.float32)
    expected = retrieval_metrics(sim, owner)
    check_close(retrieval_metrics(torch.from_numpy(sim), torch.from_numpy(owner)), expected)
    check_close(retrieval_metrics(torch.from_numpy(sim).to(torch.bfloat16).float(), owner),
                retrieval_metrics(torch.from_numpy(sim).to(torch.bfloat16), owner))


def test_input_errors():
    owner = np.array([0, 0, 1])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        retrieval_metrics(np.zeros((2, 3)), owner[:2])
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.zeros(3), owner)
    with pytest.raises(ValueError, match=r"caption_audio\[2\] = 5 is not a row"):
        retrieval_metrics(np.zeros((2, 3)), np.array([0, 1, 5]))
    with pytest.raises(ValueError, match=r"clip\(s\) \[1\]"):
        retrieval_metrics(np.zeros((3, 3)), np.array([0, 0, 2]))
    with pytest.raises(ValueError, match="integer"):
        retrieval_metrics(np.zeros((2, 3)), np.array([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((2, 3), np.nan), owner)
