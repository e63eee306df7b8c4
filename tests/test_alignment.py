"""THA (paper 2.2, Eq. 1): the reference written as the equation, and the fast kernel against it."""

import itertools
import math

import pytest
import torch

from thadcr.model.alignment import (
    LIVE_TENSORS,
    THA,
    audio_enhanced_similarity,
    block_shape,
    caption_blocks,
    eq1_reference,
    reference_similarity,
    tha_similarity_level,
    text_enhanced_similarity,
)

LAM = 9.0
D64 = torch.float64


# ----------------------------------------------------------------------------- the reference, by hand
def test_reference_with_one_word_is_the_cosine_with_that_word():
    q = torch.tensor([[3.0, 4.0], [-1.0, 0.0]], dtype=D64)  # (M=2, d=2), one query points away from the word
    c = torch.tensor([[1.0, 0.0]], dtype=D64)  # (N=1, d=2): alpha = 1, q̂_m = c_1 whatever the hinge gives
    assert eq1_reference(q, c, LAM, "sum").item() == pytest.approx(0.6 - 1.0, abs=1e-15)
    assert eq1_reference(q, c, LAM).item() == pytest.approx((0.6 - 1.0) / 2, abs=1e-15)


def test_reference_normalises_over_the_queries_and_softmaxes_over_the_context():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    context = torch.tensor([e1, e2], dtype=D64)
    # Two identical queries along e1: the hinge column of word 1 is (1, 1), so s̄ = 1/sqrt(2) there
    # (normalised over the queries m; over the context n it would be 1), and alpha_m = softmax(lam [1/sqrt 2, 0]).
    x = math.exp(LAM / math.sqrt(2))
    want = x / math.sqrt(x * x + 1)  # cos(e1, x e1 + e2)
    got = eq1_reference(torch.tensor([e1, e1], dtype=D64), context, LAM)
    assert got.item() == pytest.approx(want, rel=1e-12)
    # Queries e1 and -e1: the hinge zeroes -e1's cosines, so e1's column is (1, 0) and s̄ = 1 there, and
    # -e1 attends uniformly (q̂ = (e1 + e2) / 2, cosine -1/sqrt(2)).
    x = math.exp(LAM)
    want = (x / math.sqrt(x * x + 1) - 1 / math.sqrt(2)) / 2
    assert eq1_reference(torch.tensor([e1, [-1.0, 0.0]], dtype=D64), context, LAM).item() == pytest.approx(want)
    # lam = 0: uniform attention, q̂ = the mean of the context whatever the similarities
    q = torch.tensor([[2.0, -1.0]], dtype=D64)
    mean = torch.tensor([0.5, 0.5], dtype=D64)
    assert eq1_reference(q, context, 0.0).item() == pytest.approx(float(q[0] @ mean / (q[0].norm() * mean.norm())))


def test_reference_clamps_norms_with_eps_like_the_kernel():
    q = torch.tensor([[1.0, 0.0]], dtype=D64)
    zero_word = torch.zeros(1, 2, dtype=D64)  # norm 0 -> max(0, eps): s = 0, no 0/0
    assert eq1_reference(q, zero_word, LAM).item() == 0.0
    audio, text, mask = q[None], torch.cat([zero_word, q])[None], torch.tensor([[True, True]])
    torch.testing.assert_close(tha_similarity_level(audio, text, mask, LAM),
                               reference_similarity(audio, text, mask, LAM), rtol=1e-12, atol=1e-12)  # fmt: skip


# ----------------------------------------------------------------------------- data
def make(na=3, nt=4, m=6, n=5, d=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(na, m, d, generator=g, dtype=dtype)
    text = torch.randn(nt, n, d, generator=g, dtype=dtype)
    lengths = [1 + (2 * j + 1) % n for j in range(nt)]  # ragged, not sorted
    mask = torch.zeros(nt, n, dtype=torch.bool)
    for j, length in enumerate(lengths):
        mask[j, :length] = True
    mask[0, 0] = False  # a leading non-word ([CLS]-like) position
    text[~mask] = 100.0 * torch.randn(int((~mask).sum()), d, generator=g, dtype=dtype)  # garbage padding
    return audio, text, mask


FUNCS = {"text": text_enhanced_similarity, "audio": audio_enhanced_similarity}


# M > d materialises the audio-enhanced attended vectors, M <= d uses the clip's Gram matrix.
@pytest.mark.parametrize("m,d", [(6, 4), (3, 8)])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("direction", ["text", "audio"])
def test_direction_matches_the_reference(direction, reduce, m, d):
    audio, text, mask = make(m=m, d=d)
    got = FUNCS[direction](audio, text, mask, LAM, reduce=reduce)
    assert got.shape == (3, 4) and got.dtype == torch.float64
    want = reference_similarity(audio, text, mask, LAM, reduce, direction)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_level_is_sum_of_directions_and_the_reference():
    audio, text, mask = make(seed=1)
    want = reference_similarity(audio, text, mask, 4.0, "mean", "text") + reference_similarity(
        audio, text, mask, 4.0, "mean", "audio")
    torch.testing.assert_close(reference_similarity(audio, text, mask, 4.0), want, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(tha_similarity_level(audio, text, mask, 4.0), want, rtol=1e-10, atol=1e-10)


def test_padding_never_changes_a_score():
    audio, text, mask = make(seed=2)
    other = text.clone()
    other[~mask] = torch.randn(int((~mask).sum()), text.shape[-1], dtype=text.dtype) * 1e3
    ref = tha_similarity_level(audio, text, mask, LAM)
    assert torch.equal(ref, tha_similarity_level(audio, other, mask, LAM))
    # extra padded columns of any value
    wide = torch.cat([text, torch.randn(text.shape[0], 3, text.shape[-1], dtype=text.dtype)], dim=1)
    wide_mask = torch.cat([mask, torch.zeros(mask.shape[0], 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(tha_similarity_level(audio, wide, wide_mask, LAM), ref, rtol=1e-12, atol=1e-12)


def test_sum_is_mean_times_query_count():
    audio, text, mask = make(seed=3)
    m = audio.shape[1]
    torch.testing.assert_close(
        text_enhanced_similarity(audio, text, mask, LAM, "sum"), m * text_enhanced_similarity(audio, text, mask, LAM)
    )
    words = mask.sum(1).to(torch.float64)
    torch.testing.assert_close(
        audio_enhanced_similarity(audio, text, mask, LAM, "sum"),
        words * audio_enhanced_similarity(audio, text, mask, LAM),
    )


@pytest.mark.parametrize("budget", [1, 3, 7])  # in pairs' worth of memory: 1x1, ragged blocks
def test_blocked_equals_unblocked(budget):
    audio, text, mask = make(na=5, nt=7, seed=4)
    m, n, d = audio.shape[1], text.shape[1], audio.shape[2]
    per_pair, per_clip, per_caption = 8 * (LIVE_TENSORS * m * n + 2 * n * d), 8 * 2 * m * d, 8 * 2 * n * d
    one_pair = per_pair + per_clip + per_caption
    clips, captions = block_shape(5, 7, m, n, d, 8, budget * one_pair)
    assert clips * captions * per_pair + clips * per_clip + captions * per_caption <= budget * one_pair
    assert clips * captions < 5 * 7
    full = tha_similarity_level(audio, text, mask, LAM, max_block_bytes=2**30)
    blocked = tha_similarity_level(audio, text, mask, LAM, max_block_bytes=budget * one_pair)
    torch.testing.assert_close(blocked, full, rtol=1e-12, atol=1e-12)


def test_block_shape_respects_budget_and_refuses_too_small():
    clips, captions = block_shape(957, 4785, 1024, 20, 768, 4, 256 * 2**20)
    per_pair = 4 * (LIVE_TENSORS * 1024 * 20 + 2 * 20 * 768)
    assert clips * captions * per_pair + 4 * 2 * 768 * (1024 * clips + 20 * captions) <= 256 * 2**20
    assert clips * captions > 100
    with pytest.raises(ValueError, match="max_block_bytes"):
        block_shape(2, 2, 1024, 20, 768, 4, 1000)


LEVEL_FUNCS = {"text": text_enhanced_similarity, "audio": audio_enhanced_similarity, "both": tha_similarity_level}


# The forward is checked against the reference above; this checks the hand-written backward (_Eq1).
@pytest.mark.parametrize("m,d", [(6, 4), (3, 8)])
@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("direction", ["text", "audio", "both"])
@pytest.mark.parametrize("budget", [None, 3000])  # one block, and many small blocks
def test_backward_matches_autograd_through_the_reference(direction, reduce, m, d, budget):
    audio, text, mask = make(m=m, d=d, seed=11)
    weights = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = []
    for score in (
        lambda a, t: LEVEL_FUNCS[direction](a, t, mask, LAM, reduce=reduce, max_block_bytes=budget),
        lambda a, t: reference_similarity(a, t, mask, LAM, reduce, direction),
    ):
        a, t = audio.clone().requires_grad_(True), text.clone().requires_grad_(True)
        (score(a, t) * weights).sum().backward()
        grads.append((a.grad, t.grad))
    (got_a, got_t), (want_a, want_t) = grads
    torch.testing.assert_close(got_a, want_a, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(got_t, want_t, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("direction", ["text", "audio"])
@pytest.mark.parametrize("m,d", [(4, 3), (2, 5)])
def test_each_direction_passes_gradcheck(direction, m, d):
    audio, text, mask = make(na=2, nt=3, m=m, n=4, d=d, seed=12)
    assert torch.autograd.gradcheck(
        lambda a, t: LEVEL_FUNCS[direction](a, t, mask, LAM, reduce="sum"),
        (audio.requires_grad_(True), text.requires_grad_(True)),
    )


def test_backward_can_run_twice_on_a_retained_graph():
    audio, text, mask = make(seed=13)
    audio.requires_grad_(True)
    sim = tha_similarity_level(audio, text, mask, LAM)
    first = torch.autograd.grad(sim.sum(), audio, retain_graph=True)[0]
    second = torch.autograd.grad(sim.sum(), audio)[0]
    assert torch.equal(first, second) and first.abs().sum() > 0


def test_half_precision_inputs_get_gradients_of_their_dtype():
    audio, text, mask = make(seed=14, dtype=torch.float32)
    a, t = audio.bfloat16().requires_grad_(True), text.bfloat16().requires_grad_(True)
    tha_similarity_level(a, t, mask, LAM).sum().backward()
    assert a.grad.dtype == torch.bfloat16 and t.grad.dtype == torch.bfloat16
    ref_a = audio.clone().requires_grad_(True)
    tha_similarity_level(ref_a, t.detach().float(), mask, LAM).sum().backward()
    torch.testing.assert_close(a.grad.float(), ref_a.grad, rtol=0.05, atol=0.05)


def _partitions(n: int):
    """Every way to cut range(n) into contiguous non-empty blocks."""
    for cuts in itertools.product([False, True], repeat=n - 1):
        blocks, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                blocks.append((start, i))
                start = i
        yield blocks + [(start, n)]


@pytest.mark.parametrize("overhead", [0, 3, 10, 1000])
@pytest.mark.parametrize("max_captions", [2, 3, 8])
def test_caption_blocks_is_the_cheapest_cut(overhead, max_captions):
    ends = [2, 2, 3, 5, 5, 5, 9, 12]
    blocks = caption_blocks(ends, max_captions, overhead)
    assert [i for a, b in blocks for i in range(a, b)] == list(range(len(ends)))  # every caption once, in order
    assert all(0 < b - a <= max_captions for a, b in blocks)

    def cost(cut):
        return sum((b - a) * ends[b - 1] + overhead for a, b in cut)

    allowed = [cut for cut in _partitions(len(ends)) if all(b - a <= max_captions for a, b in cut)]
    assert cost(blocks) == min(cost(cut) for cut in allowed)
    if overhead == 1000:
        assert len(blocks) == math.ceil(len(ends) / max_captions)
    with pytest.raises(ValueError, match="ascending"):
        caption_blocks([3, 2], 4)
    assert caption_blocks([], 4) == []


def test_gradients_are_those_of_the_equation():
    audio, text, mask = make(na=2, nt=2, m=3, n=3, d=4, seed=5)
    audio.requires_grad_(True)
    text.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, t: tha_similarity_level(a, t, mask, LAM, max_block_bytes=2000), (audio, text)
    )
    tha_similarity_level(audio, text, mask, LAM).sum().backward()
    assert audio.grad.abs().sum() > 0 and text.grad[mask].abs().sum() > 0
    assert torch.all(text.grad[~mask] == 0)  # padding gets no gradient


def _layer_norm_linear(x, state, prefix):
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    y = (x - mu) / torch.sqrt(var + 1e-5) * state[f"{prefix}.0.weight"] + state[f"{prefix}.0.bias"]
    return y @ state[f"{prefix}.1.weight"].T + state[f"{prefix}.1.bias"]


def test_tha_module_sums_levels_and_directions():
    torch.manual_seed(6)
    audio_dims, text_dim, joint = [6, 5, 7], 4, 3
    tha = THA(audio_dims, text_dim, joint, lam=LAM).double()
    g = torch.Generator().manual_seed(6)
    for p in tha.parameters():  # non-trivial LayerNorm parameters too
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
    audio_levels = [torch.randn(2, m, c, generator=g, dtype=torch.float64) for m, c in zip([5, 3, 2], audio_dims)]
    _, text, mask = make(na=1, nt=3, n=4, d=text_dim, seed=7)
    text_levels = [text + i for i in range(3)]
    got = tha(audio_levels, text_levels, mask)
    assert got.shape == (2, 3)
    state = tha.state_dict()
    assert {"audio_proj.0.0.weight", "audio_proj.2.1.bias", "text_proj.1.1.weight"} <= set(state)
    want = torch.zeros(2, 3, dtype=torch.float64)
    for level in range(3):
        a = _layer_norm_linear(audio_levels[level], state, f"audio_proj.{level}").detach()
        t = _layer_norm_linear(text_levels[level], state, f"text_proj.{level}").detach()
        want += reference_similarity(a, t, mask, LAM)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # score() on separately projected features is the same thing
    torch.testing.assert_close(tha.score(tha.project_audio(audio_levels), tha.project_text(text_levels), mask), got)


def test_tha_gradients_reach_every_parameter():
    tha = THA([6, 5, 7], [4, 4, 4], 3)
    audio_levels = [torch.randn(3, m, c, requires_grad=True) for m, c in zip([5, 3, 2], [6, 5, 7])]
    text_levels = [torch.randn(3, 4, 4, requires_grad=True) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    sim = tha(audio_levels, text_levels, mask)
    torch.diagonal(sim).sum().backward()
    for name, p in tha.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(x.grad.abs().sum() > 0 for x in audio_levels + text_levels)


def test_half_storage_is_scored_in_float32():
    audio, text, mask = make(seed=8)
    ref = tha_similarity_level(audio, text, mask, LAM)
    got = tha_similarity_level(audio.bfloat16(), text.bfloat16(), mask, LAM)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=0.05)


def test_autocast_does_not_lower_the_scoring_precision():
    audio, text, mask = make(seed=10, dtype=torch.float32)
    ref = tha_similarity_level(audio, text, mask, LAM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = tha_similarity_level(audio, text, mask, LAM)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_bad_inputs_name_the_problem():
    audio, text, mask = make()
    with pytest.raises(ValueError, match="joint dimension"):
        tha_similarity_level(audio, text[..., :3], mask, LAM)
    with pytest.raises(ValueError, match=r"\(Nt, N\)"):
        tha_similarity_level(audio, text, mask[:, :2], LAM)
    empty = mask.clone()
    empty[2] = False
    with pytest.raises(ValueError, match=r"row\(s\) \[2\]"):
        tha_similarity_level(audio, text, empty, LAM)
    with pytest.raises(ValueError, match="reduce"):
        tha_similarity_level(audio, text, mask, LAM, reduce="max")
    with pytest.raises(ValueError, match="levels"):
        THA([4, 4, 4], 4, 3)([audio], [text], mask)
    with pytest.raises(ValueError, match="direction"):
        reference_similarity(audio, text, mask, LAM, direction="both ways")
    with pytest.raises(ValueError, match=r"\(Nt, N\)"):
        reference_similarity(audio, text, mask[:, :2], LAM)


def test_float32_at_the_largest_lam_with_a_token_that_matches_no_word():
    audio, text, mask = make(seed=9)
    text[..., 0] += 3.0  # every word points along +e1 ...
    audio[:, 0] = 0.0
    audio[:, 0, 0] = -1.0  # ... and token 0 of every clip away from all of them: its s̄ are all 0
    lam = 30.0
    want = reference_similarity(audio, text, mask, lam)
    got = tha_similarity_level(audio.float(), text.float(), mask, lam)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="lam"):
        tha_similarity_level(audio, text, mask, 31.0)


def test_pool_audio_tokens_averages_2x2_patches_of_the_grid():
    from thadcr.model.alignment import pool_audio_tokens

    b, side, c = 2, 8, 3
    tokens = torch.randn(b, side * side, c, dtype=torch.float64)
    pooled = pool_audio_tokens(tokens, 16)  # 64 -> 16 tokens: one 2x2 pooling
    assert pooled.shape == (b, 16, c)
    grid = tokens.view(b, side, side, c)
    for i in range(4):
        for j in range(4):
            patch = grid[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(b, 4, c).mean(1)
            torch.testing.assert_close(pooled[:, 4 * i + j], patch)
    assert pool_audio_tokens(tokens, 4).shape == (b, 4, c)  # pooled twice
    assert pool_audio_tokens(tokens, 0) is tokens and pool_audio_tokens(tokens, 64) is tokens
    with pytest.raises(ValueError, match="square"):
        pool_audio_tokens(torch.randn(1, 12, c), 4)
    with pytest.raises(ValueError, match="positive"):
        pool_audio_tokens(tokens, -1)


def test_tha_pools_audio_levels_before_projecting():
    from thadcr.model.alignment import pool_audio_tokens

    torch.manual_seed(0)
    pooled = THA([8, 8], 6, 4, max_audio_tokens=4)
    plain = THA([8, 8], 6, 4)
    plain.load_state_dict(pooled.state_dict())
    levels = [torch.randn(2, 16, 8), torch.randn(2, 4, 8)]
    got = pooled.project_audio(levels)
    assert [x.shape for x in got] == [(2, 4, 4), (2, 4, 4)]
    for g, want in zip(got, plain.project_audio([pool_audio_tokens(x, 4) for x in levels])):
        torch.testing.assert_close(g, want)
    with pytest.raises(ValueError, match="max_audio_tokens"):
        THA([8], 6, 4, max_audio_tokens=-2)
