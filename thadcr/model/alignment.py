"""Transformer-based hierarchical alignment (THA), paper section 2.2, Eq. 1, for all pairs at once.

For one level, with audio tokens a_m (m = 1..M) and words t_n (n = 1..N, padding excluded):

* s_mn = cos(a_m, t_n), one cosine matrix shared by both directions;
* text-enhanced (the audio tokens are the queries): s̄_mn = [s_mn]+ / max(sqrt(sum_m [s_mn]+^2), eps),
  alpha_mn = softmax over the valid words n of lam * s̄_mn, â_m = sum_n alpha_mn t_n (Eq. 1),
  score = mean (or sum) over m of cos(a_m, â_m);
* audio-enhanced (the words are the queries): normalise [s_mn]+ over the valid words n,
  alpha'_nm = softmax over the M audio tokens, t̂_n = sum_m alpha'_nm a_m,
  score = mean (or sum) over the valid words n of cos(t_n, t̂_n).

S_THA sums both directions over the three levels (HTS-AT stage 2/3/4 with BERT block 4/10/12).

How it is computed: the pairs are processed in blocks of clips x captions whose working memory
stays under ``max_block_bytes``; captions are sorted by length and cut into blocks that pad little
(``caption_blocks``). Per block one matmul gives every cosine; the attended vectors
are never materialised where a Gram matrix is cheaper: a_m . â_m = ‖a_m‖ sum_n alpha_mn ‖t_n‖ s_mn
and ‖â_m‖^2 = w^T G w with w_n = alpha_mn ‖t_n‖ and G the caption's (N x N) Gram matrix of unit
words; the audio-enhanced side uses the clip's (M x M) Gram matrix when M <= d and materialises
t̂ (one batched matmul per block) when M > d, whichever costs fewer FLOPs. The backward pass is
written by hand (`_Eq1`). Scoring runs in float32 (float64 when given float64), also for
half-precision inputs and under autocast.

`eq1_reference` is Eq. 1 for one pair written as the equation reads (every intermediate
materialised, autograd for the gradient) and `reference_similarity` applies it pair by pair:
the slow reference that the fast kernel's values and gradients are tested against;
`eq1_attention` gives its weights alpha (what `thadcr.run.attention` measures).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from thadcr import portable

EPS = 1e-8  # lower clamp of vector norms and of the normalisers of s̄
# The softmax weights are exp2 of logits pre-scaled by log2(e): one pass over the (A, M, T, N)
# tensors, in ATen's own kernel on every CPU (torch.exp can go to MKL's vendor-dispatched vector
# math, `thadcr.portable`); the relative error this adds to a weight, about |logit| 2^-24, leaves
# Eq. 1's value unchanged to float32 precision (tests/test_alignment.py compares with the loops).
LOG2_E = 1.4426950408889634
MAX_LAM = 30.0  # exp(-2 * lam) must stay a normal float32 (see _text_enhanced)
# Working memory of one block of pairs (see block_shape), by device type; others use the CPU value.
DEFAULT_BLOCK_BYTES = {"cpu": 32 * 2**20, "cuda": 2 * 2**30}
LIVE_TENSORS = 6  # (clips, M, captions, N) tensors alive at once inside one block, forward
REDUCES = ("mean", "sum")
DIRECTIONS = ("text", "audio", "both")  # reference_similarity: text-enhanced, audio-enhanced, their sum
LEVELS = ((2, 4), (3, 10), (4, 12))  # (HTS-AT stage, BERT block) paired per THA level (section 2.1)
# Fixed cost of one more caption block, in padded word slots (see caption_blocks): a judgement of
# what one more block's small operations cost, not tuned by a benchmark.
CAPTION_BLOCK_OVERHEAD = 48


def _check_level(
    audio: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, lam: float, reduce: str
) -> None:
    if reduce not in REDUCES:
        raise ValueError(f"reduce={reduce!r} is not one of {REDUCES}")
    if not 0 <= lam <= MAX_LAM:
        raise ValueError(f"lam={lam} is outside [0, {MAX_LAM}]; it is a softmax temperature (SCAN uses 4-9)")
    if audio.dim() != 3 or text.dim() != 3:
        raise ValueError(
            f"expected audio (Na, M, d) and text (Nt, N, d), got {tuple(audio.shape)} and {tuple(text.shape)}"
        )
    if audio.shape[-1] != text.shape[-1]:
        raise ValueError(
            f"audio and text must share the joint dimension d, got {audio.shape[-1]} and {text.shape[-1]}: "
            "project both to the same size first (THA.project_audio / project_text)"
        )
    if text_mask.shape != text.shape[:2] or text_mask.dtype != torch.bool:
        raise ValueError(
            f"text_mask must be a bool tensor of shape (Nt, N) = {tuple(text.shape[:2])}, "
            f"got {text_mask.dtype} {tuple(text_mask.shape)}"
        )
    empty = (~text_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"caption row(s) {empty[:10]} have no valid word in text_mask; drop them or mark their words valid"
        )


# ----------------------------------------------------------------------------- Eq. 1 as written
def eq1_reference(
    queries: torch.Tensor, context: torch.Tensor, lam: float, reduce: str = "mean"
) -> torch.Tensor:
    """Eq. 1 for one pair, as written: queries q_m (M, d) attend over context c_n (N, d); score ().

    Text-enhanced: the queries are the clip's audio tokens a_m and the context the caption's
    valid words t_n (q̂_m = â_m); audio-enhanced: the roles swap (t̂_n). The score is the mean
    (or, reduce="sum", the sum) over the queries of cos(q_m, q̂_m). eps as in the fast kernel:
    the norms of q_m and c_n and the normaliser of s̄ are max(norm, EPS); a zero attended
    vector gives cosine 0. Computed in the inputs' dtype (the tests use float64).
    """
    if reduce not in REDUCES:
        raise ValueError(f"reduce={reduce!r} is not one of {REDUCES}")
    norm = torch.linalg.vector_norm
    q_norm = norm(queries, dim=-1).clamp_min(EPS)  # (M,) max(‖q_m‖, eps)
    alpha = eq1_attention(queries, context, lam)  # (M, N) softmax over the context n
    attended = alpha @ context  # (M, d) q̂_m = sum_n alpha_mn c_n
    tiny = torch.finfo(attended.dtype).tiny  # a zero q̂_m gives cosine 0
    cos = (queries * attended).sum(-1) / (q_norm * norm(attended, dim=-1).clamp_min(tiny))  # (M,)
    return cos.mean() if reduce == "mean" else cos.sum()


def eq1_attention(queries: torch.Tensor, context: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 1's weights for one pair, as written: queries q_m (M, d) over context c_n (N, d) ->
    alpha (M, N), each row a softmax over the context. Audio-enhanced (words as queries, audio
    tokens as context), row n is α'_n: where word n looks in the clip. eps as in `eq1_reference`."""
    norm = torch.linalg.vector_norm
    q_norm = norm(queries, dim=-1).clamp_min(EPS)  # (M,) max(‖q_m‖, eps)
    c_norm = norm(context, dim=-1).clamp_min(EPS)  # (N,) max(‖c_n‖, eps)
    s = (queries @ context.T) / (q_norm[:, None] * c_norm)  # (M, N) s_mn = cos(q_m, c_n)
    hinge = s.clamp_min(0)  # (M, N) [s_mn]+
    s_bar = hinge / hinge.square().sum(dim=0).sqrt().clamp_min(EPS)  # (M, N) normalised over m
    return torch.softmax(lam * s_bar, dim=1)  # (M, N) softmax over the context n


def reference_similarity(
    audio: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, lam: float, reduce: str = "mean",
    direction: str = "both",
) -> torch.Tensor:
    """`eq1_reference` for every (clip, caption) pair, one pair at a time: (Na, Nt).

    Same inputs as `tha_similarity_level`; padded words are left out. direction "text"
    (text-enhanced), "audio" (audio-enhanced) or "both" (their sum, one THA level). Slow: for
    tests and for reading, not for training.
    """
    _check_level(audio, text, text_mask, lam, reduce)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not one of {DIRECTIONS}")
    rows = []
    for tokens in audio:  # (M, d): the audio tokens a_m of one clip
        row = []
        for words, valid in zip(text, text_mask):  # (N, d), (N,): one caption
            words = words[valid]  # (n, d): its valid words t_n
            score = tokens.new_zeros(())
            if direction in ("text", "both"):  # text-enhanced: each audio token attends over the words
                score = score + eq1_reference(tokens, words, lam, reduce)
            if direction in ("audio", "both"):  # audio-enhanced: each word attends over the audio tokens
                score = score + eq1_reference(words, tokens, lam, reduce)
            row.append(score)
        rows.append(torch.stack(row))
    return torch.stack(rows)  # (Na, Nt)


# ----------------------------------------------------------------------------- the fast kernel
def _unit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., d) -> (x / max(|x|, eps), max(|x|, eps)), so that x = unit * norm exactly."""
    norm = torch.linalg.vector_norm(x, dim=-1).clamp_min(EPS)
    return x / norm[..., None], norm


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Half-precision storage is scored in float32; float32/float64 are kept."""
    return torch.promote_types(x.dtype, torch.float32)


def _block_scores(
    audio: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor,
    lam: float,
    text_weight: float | None,
    audio_weight: torch.Tensor | None,
) -> torch.Tensor:
    """One block of pairs: text_weight * (text-enhanced sum) + audio_weight * (audio-enhanced sum).

    audio (A, M, d), text (T, N, d), mask (T, N); text_weight a number, audio_weight (T,) (1 / words
    for the mean, 1 for the sum); None leaves a direction out. Returns (A, T) in the compute dtype.
    """
    dtype = _compute_dtype(audio)
    with torch.autocast(audio.device.type, enabled=False):  # exp and Gram sums want float32
        au, an = _unit(audio.to(dtype))  # (A, M, d), (A, M)
        tu, tn = _unit(torch.where(mask[..., None], text.to(dtype), 0))  # padded words become 0 vectors
        weight = None if audio_weight is None else audio_weight.to(dtype)
        return _Eq1.apply(au, an, tu, tn, mask, lam, text_weight, weight)


class _Eq1(torch.autograd.Function):
    """Eq. 1 in both directions for one block, from one shared cosine matrix, with a hand-written backward.

    Autograd through these formulas kept a dozen (A, M, T, N) intermediates and its backward cost
    more than twice the forward. The backward here is derived by hand (each step's derivative is
    written next to it), saves five (A, M, T, N) tensors (and t̂ when M > d), leaves them intact (a retained graph can
    be differentiated again), and is checked against autograd through `reference_similarity` and
    against finite differences (tests/test_alignment.py).
    Inputs: unit audio tokens au (A, M, d) with their norms an (A, M), unit words tu (T, N, d;
    padded words 0) with their norms tn (T, N); text_weight and audio_weight as in `_block_scores`.
    """

    @staticmethod
    def forward(ctx, au, an, tu, tn, mask, lam, text_weight, audio_weight):
        A, M, d = au.shape
        T, N, _ = tu.shape
        s = (au.reshape(A * M, d) @ tu.reshape(T * N, d).T).view(A, M, T, N)  # s_mn = cos(a_m, t_n)
        p = s.clamp_min(0)  # [s_mn]+ ; exactly 0 for padded words
        score = s.new_zeros(A, T)
        keep = any(ctx.needs_input_grad[:4])  # without autograd (evaluation) nothing is kept
        ctx.lam, ctx.text_weight = lam, text_weight
        ctx.text = ctx.audio = None
        if text_weight is not None:
            total, state = _text_enhanced(s, p, tu, tn, mask, lam)
            score += text_weight * total
            ctx.text = state if keep else None
        if audio_weight is not None:
            total, state = _audio_enhanced(s, p, au, an, lam)
            score += total * audio_weight
            ctx.audio = state if keep else None
        if keep:
            ctx.save_for_backward(au, an, tu, tn, s, p, audio_weight)
        return score

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        with torch.autocast(grad.device.type, enabled=False):
            au, an, tu, tn, s, p, audio_weight = ctx.saved_tensors
            A, M, d = au.shape
            T, N, _ = tu.shape
            g_s = torch.zeros_like(s)  # dL/ds, both directions
            g_au, g_tu = torch.zeros_like(au), torch.zeros_like(tu)
            positive = p.sign()  # d[s]+/ds: 1 where s > 0, else 0 (a float mask: bool masks are slow on CPU)
            g_an = g_tn = None
            if ctx.text is not None:
                g_tn = _text_enhanced_backward(grad * ctx.text_weight, s, p, positive, tu, tn, ctx.text, g_s, g_tu)
            if ctx.audio is not None:
                g_an = _audio_enhanced_backward(grad * audio_weight, s, p, positive, au, an, ctx.audio, g_s, g_au)
            g_flat = g_s.view(A * M, T * N)
            g_au += (g_flat @ tu.reshape(T * N, d)).view(A, M, d)  # s = au . tu
            g_tu += (g_flat.T @ au.reshape(A * M, d)).view(T, N, d)
        return g_au, g_an, g_tu, g_tn, None, None, None, None  # None: no gradient (direction not asked)


def _softmax_scale(p: torch.Tensor, dim: int, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """lam * s̄ = p * scale, scale = lam / q, q = max(sqrt(sum over `dim` of p^2), eps); also 1/q^2 (0 where clamped)."""
    sq = (p * p).sum(dim, keepdim=True)
    q = portable.sqrt(sq.clamp_min(EPS**2))
    inv_q2 = torch.where(sq >= EPS**2, q.reciprocal().square(), 0)
    return lam / q, inv_q2


def _cosine(dot: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
    """cos = dot / sqrt(sq) per query (sq = squared norm of the unnormalised attended vector)."""
    return dot / portable.sqrt(sq.clamp_min(torch.finfo(sq.dtype).tiny))


def _cosine_backward(grad: torch.Tensor, dot: torch.Tensor, sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/d dot and dL/d sq of dot / sqrt(max(sq, tiny)), given dL/dcos = grad."""
    tiny = torch.finfo(sq.dtype).tiny
    g_dot = grad / portable.sqrt(sq.clamp_min(tiny))
    g_sq = torch.where(sq >= tiny, -0.5 * g_dot * dot / sq.clamp_min(tiny), 0)
    return g_dot, g_sq


def _logits_backward(g_e, p, positive, scale, inv_q2, dim, g_s) -> None:
    """Adds to g_s the dL/ds through e = [s]+ * lam / q, q = sqrt(sum over `dim` of [s]+^2), given dL/de = g_e.

    dL/dp = scale * (g_e - p * sum_dim(g_e p) / q^2); the second term is already 0 where p = 0.
    Overwrites g_e.
    """
    g_s.addcmul_(p, -scale * inv_q2 * (g_e * p).sum(dim, keepdim=True))
    g_s.addcmul_(g_e.mul_(positive), scale)


def _text_enhanced(s, p, tu, tn, mask, lam):
    """Eq. 1, audio tokens as queries: sum over m of cos(a_m, â_m); s, p (A, M, T, N) -> (A, T).

    cos(a_m, â_m) does not change when alpha_m is scaled, so the softmax is left unnormalised:
    w_mn = |t_n| exp(lam (s̄_mn - 1)) weighs the unit words, a_m . â_m ∝ |a_m| sum_n w_mn s_mn
    and |â_m|^2 ∝ w^T G w with G the caption's (N x N) Gram matrix of unit words.
    Also returns what the backward needs.
    """
    A, M, T, N = s.shape
    scale, inv_q2 = _softmax_scale(p, 1, lam)  # (A, 1, T, N): over the audio tokens m
    bias = torch.where(mask, portable.log(tn) - lam, -math.inf)  # (T, N): padded words get weight 0
    w = torch.exp2(torch.addcmul(bias * LOG2_E, p, scale * LOG2_E))  # (A, M, T, N): exp(bias + p * scale)
    dot = torch.einsum("amtn,amtn->amt", w, s)  # (A, M, T)
    wt = w.view(A * M, T, N).transpose(0, 1)  # (T, A*M, N)
    gram_w = torch.bmm(wt, tu @ tu.transpose(1, 2))  # (T, A*M, N): G w per query
    sq = (gram_w * wt).sum(-1).T.contiguous().view(A, M, T)  # w^T G w
    return _cosine(dot, sq).sum(1), (scale, inv_q2, w, gram_w, dot, sq)


def _text_enhanced_backward(grad, s, p, positive, tu, tn, state, g_s, g_tu):
    """Backward of `_text_enhanced` for dL/d(A, T) = grad: adds into g_s and g_tu, returns dL/dtn."""
    scale, inv_q2, w, gram_w, dot, sq = state
    A, M, T, N = s.shape
    g_dot, g_sq = _cosine_backward(grad[:, None, :], dot, sq)  # (A, M, T) each
    g_s.addcmul_(g_dot[..., None], w)  # dot = sum_n w s
    wt = w.view(A * M, T, N).transpose(0, 1)  # (T, A*M, N)
    g_sq_t = g_sq.view(A * M, T).T[..., None]  # (T, A*M, 1)
    # sq = w^T G w with G = tu tu^T: dsq/dw = 2 G w; dL/dG = sum g_sq w w^T, and dL/dtu = 2 dL/dG tu
    g_tu += 2 * torch.bmm(torch.bmm((wt * g_sq_t).transpose(1, 2), wt), tu)
    g_w = g_dot[..., None] * s  # d dot/dw = s ...
    g_w.view(A * M, T, N).transpose(0, 1).addcmul_(gram_w, g_sq_t, value=2)  # ... + g_sq * 2 G w
    g_e = g_w.mul_(w)  # w = exp(e), e = log|t_n| - lam + p * scale
    g_tn = g_e.sum((0, 1)) / tn
    _logits_backward(g_e, p, positive, scale, inv_q2, 1, g_s)
    return g_tn


def _audio_enhanced(s, p, au, an, lam):
    """Eq. 1 mirrored, words as queries: sum over valid n of cos(t_n, t̂_n); (A, M, T, N) -> (A, T).

    As in `_text_enhanced`, alpha'_n is left unnormalised: w_mn = |a_m| exp(lam (s̄_nm - 1)) weighs
    the unit audio tokens. |t̂_n|^2 comes from materialising t̂ (N*d per word) when M > d, else
    from the clip's (M x M) Gram matrix (N*M per word). Padded words score exactly 0 (s = 0).
    Also returns what the backward needs.
    """
    A, M, T, N = s.shape
    d = au.shape[-1]
    scale, inv_q2 = _softmax_scale(p, 3, lam)  # (A, M, T, 1): over the words n
    bias = (portable.log(an) - lam)[:, :, None, None]  # (A, M, 1, 1)
    w = torch.exp2(torch.addcmul(bias * LOG2_E, p, scale * LOG2_E))  # (A, M, T, N): exp(bias + p * scale)
    dot = (w * s).sum(1)  # (A, T, N)
    wf = w.view(A, M, T * N)
    attended = None
    if M > d:
        attended = torch.bmm(wf.transpose(1, 2), au)  # (A, T*N, d): t̂ up to scale
        sq = attended.square().sum(-1)  # (A, T*N)
    else:
        sq = (torch.bmm(au @ au.transpose(1, 2), wf) * wf).sum(1)  # (A, T*N)
    sq = sq.view(A, T, N)
    return _cosine(dot, sq).sum(-1), (scale, inv_q2, w, dot, sq, attended)


def _audio_enhanced_backward(grad, s, p, positive, au, an, state, g_s, g_au):
    """Backward of `_audio_enhanced` for dL/d(A, T) = grad: adds into g_s and g_au, returns dL/dan."""
    scale, inv_q2, w, dot, sq, attended = state
    A, M, T, N = s.shape
    g_dot, g_sq = _cosine_backward(grad[:, :, None], dot, sq)  # (A, T, N) each
    g_s.addcmul_(g_dot[:, None], w)  # dot = sum_m w s
    wf = w.view(A, M, T * N)
    if attended is None:  # the forward used the Gram matrix (M <= d)
        attended = torch.bmm(wf.transpose(1, 2), au)  # (A, T*N, d): t̂ up to scale, sq = |t̂|^2
    g_sq_f = g_sq.view(A, 1, T * N)
    # dsq/dw_m = 2 au_m . t̂ and dsq/dau_m = 2 w_m t̂
    g_au += 2 * torch.bmm(wf * g_sq_f, attended)
    g_w = torch.bmm(au, attended.transpose(1, 2)).mul_(2 * g_sq_f).view(A, M, T, N).addcmul_(g_dot[:, None], s)
    g_e = g_w.mul_(w)  # w = exp(e), e = log|a_m| - lam + p * scale
    g_an = g_e.sum((2, 3)) / an
    _logits_backward(g_e, p, positive, scale, inv_q2, 3, g_s)
    return g_an


def default_block_bytes(device: torch.device | str) -> int:
    """The block budget used when none is given: 32 MiB on CPU (cache-sized blocks were fastest), 2 GiB on CUDA."""
    return DEFAULT_BLOCK_BYTES.get(torch.device(device).type, DEFAULT_BLOCK_BYTES["cpu"])


def block_shape(
    n_audio: int, n_text: int, M: int, N: int, d: int, elem_bytes: int, max_block_bytes: int
) -> tuple[int, int]:
    """(clips, captions) per block so that the block's estimated working memory fits the budget.

    Estimate: per pair LIVE_TENSORS * M * N elements (+ 2 * N * d when t̂ is materialised, M > d:
    t̂ and its square), per clip 2 * M * d and per caption 2 * N * d (the block's converted and
    unit-norm copies).
    """
    per_pair = elem_bytes * (LIVE_TENSORS * M * N + (2 * N * d if M > d else 0))
    per_clip, per_caption = elem_bytes * 2 * M * d, elem_bytes * 2 * N * d
    need_one = per_pair + per_clip + per_caption
    if need_one > max_block_bytes:
        raise ValueError(
            f"max_block_bytes={max_block_bytes} cannot hold one pair (M={M}, N={N}, d={d} needs {need_one} bytes); "
            "raise max_block_bytes"
        )
    captions = min(n_text, max(1, math.isqrt(max_block_bytes // per_pair)))
    clips = min(n_audio, max(1, (max_block_bytes - captions * per_caption) // (captions * per_pair + per_clip)))
    if clips == n_audio:  # every clip fits: spend the rest of the budget on captions
        captions = min(n_text, max(1, (max_block_bytes - clips * per_clip) // (clips * per_pair + per_caption)))
    return clips, captions


def caption_blocks(sorted_ends: list[int], max_captions: int, overhead: int = CAPTION_BLOCK_OVERHEAD) -> list[tuple[int, int]]:
    """Cut captions sorted by length into blocks [start, stop) of at most ``max_captions``.

    Each block is padded to its longest caption, so one block for a batch of mixed lengths scores
    many padding words. The cut minimises sum over blocks of (captions x words used + overhead):
    padded word slots plus a fixed per-block cost in word slots. Cuts are only considered where
    the length changes (dynamic programming over the distinct lengths, then equal-length runs are
    split to respect ``max_captions``, which adds no padding).
    """
    if not sorted_ends:
        return []
    if any(b < a for a, b in zip(sorted_ends, sorted_ends[1:])):
        raise ValueError("caption_blocks needs the caption lengths in ascending order")
    stops = [i + 1 for i in range(len(sorted_ends)) if i + 1 == len(sorted_ends) or sorted_ends[i + 1] != sorted_ends[i]]
    starts = [0] + stops[:-1]  # run r of equal lengths is [starts[r], stops[r])
    best = [0.0] + [math.inf] * len(stops)  # best[r]: cost of cutting the first r runs
    cut = [0] * (len(stops) + 1)
    for j in range(1, len(stops) + 1):  # the last block ends with run j - 1 ...
        for i in range(j):  # ... and starts with run i
            n = stops[j - 1] - starts[i]
            cost = best[i] + n * sorted_ends[stops[j - 1] - 1] + overhead * math.ceil(n / max_captions)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    blocks, j = [], len(stops)
    while j > 0:
        i = cut[j]
        start, stop = starts[i], stops[j - 1]
        blocks[:0] = [(a, min(a + max_captions, stop)) for a in range(start, stop, max_captions)]
        j = i
    return blocks


def _all_pairs(
    audio: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    lam: float,
    reduce: str,
    want_text: bool,
    want_audio: bool,
    max_block_bytes: int | None,
) -> torch.Tensor:
    """Blocked driver: (Na, Nt) = the asked directions summed, for all pairs."""
    _check_level(audio, text, text_mask, lam, reduce)
    if max_block_bytes is None:
        max_block_bytes = default_block_bytes(audio.device)
    (Na, M, d), (Nt, N) = audio.shape, text_mask.shape
    elem = torch.empty((), dtype=_compute_dtype(audio)).element_size()
    clips, captions = block_shape(Na, Nt, M, N, d, elem, max_block_bytes)
    # Captions sorted by their last valid word, so that each block is cut to the words it uses.
    ends = torch.where(text_mask, torch.arange(1, N + 1, device=text_mask.device), 0).amax(dim=1)  # (Nt,)
    order = torch.argsort(ends, stable=True)
    text_weight = None if not want_text else (1.0 / M if reduce == "mean" else 1.0)
    columns = []
    for t0, t1 in caption_blocks(ends[order].tolist(), captions):
        idx = order[t0:t1]
        n_used = int(ends[idx].max())
        t_blk, m_blk = text[idx, :n_used], text_mask[idx, :n_used]
        words = m_blk.sum(1).to(_compute_dtype(audio))  # (captions,)
        audio_weight = None if not want_audio else (words.reciprocal() if reduce == "mean" else torch.ones_like(words))
        rows = []
        for a0 in range(0, Na, clips):
            rows.append(_block_scores(audio[a0 : a0 + clips], t_blk, m_blk, lam, text_weight, audio_weight))
        columns.append(torch.cat(rows, dim=0))
    sim = torch.cat(columns, dim=1)[:, torch.argsort(order)]  # back to the callers' caption order
    assert sim.shape == (Na, Nt)
    return sim


def text_enhanced_similarity(
    audio: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    lam: float,
    reduce: str = "mean",
    max_block_bytes: int | None = None,
) -> torch.Tensor:
    """Eq. 1, text-enhanced: audio tokens attend over the valid words; (Na, Nt) for all pairs.

    audio (Na, M, d), text (Nt, N, d), text_mask (Nt, N) bool (True = valid word).
    reduce="mean" averages cos(a_m, â_m) over the M tokens; "sum" is the paper's literal sum.
    Pairs are scored in blocks whose working memory stays under max_block_bytes
    (None: `default_block_bytes` of the device).
    """
    return _all_pairs(audio, text, text_mask, lam, reduce, True, False, max_block_bytes)


def audio_enhanced_similarity(
    audio: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    lam: float,
    reduce: str = "mean",
    max_block_bytes: int | None = None,
) -> torch.Tensor:
    """Eq. 1 mirrored, audio-enhanced: each valid word attends over the audio tokens; (Na, Nt).

    reduce="mean" averages cos(t_n, t̂_n) over the valid words; "sum" sums them.
    """
    return _all_pairs(audio, text, text_mask, lam, reduce, False, True, max_block_bytes)


def tha_similarity_level(
    audio: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    lam: float,
    reduce: str = "mean",
    max_block_bytes: int | None = None,
) -> torch.Tensor:
    """One THA level: text-enhanced + audio-enhanced similarity from one shared cosine matrix; (Na, Nt)."""
    return _all_pairs(audio, text, text_mask, lam, reduce, True, True, max_block_bytes)


def pool_audio_tokens(tokens: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """Average-pool a square token grid 2x2 at a time until it has at most ``max_tokens`` tokens.

    tokens (B, M, C) with M = g * g laid out row by row (HTS-AT's stage outputs) -> (B, M', C);
    max_tokens = 0 keeps every token. A pooled token is the mean of a 2x2 patch of the grid, i.e.
    the patch that HTS-AT's next patch merging would join.
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be 0 (keep all) or positive, got {max_tokens}")
    b, m, c = tokens.shape
    side = math.isqrt(m)
    if max_tokens == 0 or m <= max_tokens:
        return tokens
    if side * side != m:
        raise ValueError(f"cannot pool {m} audio tokens: not a square grid")
    grid = tokens.transpose(1, 2).reshape(b, c, side, side)
    while grid.shape[2] * grid.shape[3] > max_tokens:
        if grid.shape[2] % 2:
            raise ValueError(f"cannot halve a {grid.shape[2]}x{grid.shape[3]} token grid to {max_tokens} tokens")
        grid = F.avg_pool2d(grid, 2)
    return grid.flatten(2).transpose(1, 2)


class THA(nn.Module):
    """Hierarchical alignment module (section 2.2): S_THA = sum over levels and both directions.

    Each level has its own LayerNorm + Linear to ``joint_dim`` for audio (``audio_proj.<l>``) and
    text (``text_proj.<l>``). Levels pair HTS-AT stages 2/3/4 with BERT blocks 4/10/12; the caller
    passes the levels in that order. With ``max_audio_tokens`` > 0 each audio level is first
    pooled to at most that many tokens (``pool_audio_tokens``).
    """

    def __init__(
        self,
        audio_dims: list[int],
        text_dims: list[int] | int,
        joint_dim: int,
        lam: float = 9.0,
        reduce: str = "mean",
        max_block_bytes: int | None = None,
        max_audio_tokens: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(text_dims, int):
            text_dims = [text_dims] * len(audio_dims)
        if len(text_dims) != len(audio_dims) or not audio_dims:
            raise ValueError(f"need one text dim per audio level, got audio {audio_dims} and text {text_dims}")
        if reduce not in REDUCES:
            raise ValueError(f"reduce={reduce!r} is not one of {REDUCES}")
        if max_audio_tokens < 0:
            raise ValueError(f"max_audio_tokens must be 0 (keep all) or positive, got {max_audio_tokens}")
        self.lam, self.reduce, self.max_block_bytes = lam, reduce, max_block_bytes
        self.max_audio_tokens = max_audio_tokens
        self.audio_proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(c), nn.Linear(c, joint_dim)) for c in audio_dims)
        self.text_proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(c), nn.Linear(c, joint_dim)) for c in text_dims)

    def _project(self, levels: list[torch.Tensor], proj: nn.ModuleList, side: str, max_tokens: int = 0) -> list[torch.Tensor]:
        if len(levels) != len(proj):
            raise ValueError(f"THA expects {len(proj)} {side} levels, got {len(levels)}")
        out = []
        for level, layer in zip(levels, proj):
            if level.dim() != 3 or level.shape[-1] != layer[0].normalized_shape[0]:
                raise ValueError(
                    f"{side} level must be (B, tokens, {layer[0].normalized_shape[0]}), got {tuple(level.shape)}"
                )
            out.append(layer(pool_audio_tokens(level, max_tokens)))
        return out

    def project_audio(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Audio levels (Na, M_l, C_l) -> (Na, M'_l, joint_dim) each (M'_l: after pooling, if any)."""
        return self._project(levels, self.audio_proj, "audio", self.max_audio_tokens)

    def project_text(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Text levels (Nt, N, C_l) -> (Nt, N, joint_dim) each."""
        return self._project(levels, self.text_proj, "text")

    def score(
        self, audio_levels: list[torch.Tensor], text_levels: list[torch.Tensor], text_mask: torch.Tensor
    ) -> torch.Tensor:
        """Projected levels -> S_THA (Na, Nt), blocked so that memory stays under max_block_bytes."""
        if len(audio_levels) != len(text_levels):
            raise ValueError(f"got {len(audio_levels)} audio levels and {len(text_levels)} text levels")
        sim = None
        for audio, text in zip(audio_levels, text_levels):
            level = tha_similarity_level(audio, text, text_mask, self.lam, self.reduce, self.max_block_bytes)
            sim = level if sim is None else sim + level
        return sim

    def forward(
        self, audio_levels: list[torch.Tensor], text_levels: list[torch.Tensor], text_mask: torch.Tensor
    ) -> torch.Tensor:
        """Encoder levels -> S_THA (Na, Nt) = sum over levels of both directions of Eq. 1."""
        return self.score(self.project_audio(audio_levels), self.project_text(text_levels), text_mask)
