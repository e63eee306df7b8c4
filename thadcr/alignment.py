"""Transformer-based hierarchical alignment (THA), paper section 2.2, Eq. 1, for all pairs at once.

For one level, with audio tokens a_m (m = 1..M) and words t_n (n = 1..N, padding excluded):

* s_mn = cos(a_m, t_n), one cosine matrix shared by both directions;
* text-enhanced (the audio tokens are the queries): s̄_mn = [s_mn]+ / max(sqrt(sum_m [s_mn]+^2), eps),
  alpha_mn = softmax over the valid words n of lam * s̄_mn, â_m = sum_n alpha_mn t_n (Eq. 1),
  score = mean (or sum) over m of cos(a_m, â_m);
* audio-enhanced (the words are the queries): normalise [s_mn]+ over the valid words n,
  beta_nm = softmax over the M audio tokens, t̂_n = sum_m beta_nm a_m,
  score = mean (or sum) over the valid words n of cos(t_n, t̂_n).

S_THA sums both directions over the three levels (HTS-AT stage 2/3/4 with BERT block 4/10/12).

How it is computed: the pairs are processed in blocks of clips x captions whose working memory
stays under ``max_block_bytes``. Per block one matmul gives every cosine; the attended vectors
are never materialised where a Gram matrix is cheaper: a_m . â_m = ‖a_m‖ sum_n alpha_mn ‖t_n‖ s_mn
and ‖â_m‖^2 = w^T G w with w_n = alpha_mn ‖t_n‖ and G the caption's (N x N) Gram matrix of unit
words; the audio-enhanced side uses the clip's (M x M) Gram matrix when M <= d and materialises
t̂ (one batched matmul per block) when M > d, whichever costs fewer FLOPs. Scoring runs in float32
(float64 when given float64), also for half-precision inputs and under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8  # lower clamp of vector norms and of the normalisers of s̄
MAX_LAM = 30.0  # exp(-2 * lam) must stay a normal float32 (see _text_enhanced)
# Working memory of one block of pairs (see block_shape), by device type; others use the CPU value.
DEFAULT_BLOCK_BYTES = {"cpu": 32 * 2**20, "cuda": 2 * 2**30}
LIVE_TENSORS = 6  # (clips, M, captions, N) tensors alive at once inside one block, forward
REDUCES = ("mean", "sum")
LEVELS = ((2, 4), (3, 10), (4, 12))  # (HTS-AT stage, BERT block) paired per THA level (section 2.1)


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


def _unit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., d) -> (x / max(|x|, eps), max(|x|, eps)), so that x = unit * norm exactly."""
    norm = torch.linalg.vector_norm(x, dim=-1).clamp_min(EPS)
    return x / norm[..., None], norm


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Half-precision storage is scored in float32; float32/float64 are kept."""
    return torch.promote_types(x.dtype, torch.float32)


def _block_scores(
    audio: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, lam: float, want_text: bool, want_audio: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One block of pairs, Eq. 1 in both directions from one shared cosine matrix.

    audio (A, M, d), text (T, N, d), mask (T, N) -> per direction the sum over the query tokens of
    the per-token cosines, (A, T) each (None for a direction not asked for).
    """
    A, M, d = audio.shape
    T, N, _ = text.shape
    dtype = _compute_dtype(audio)
    with torch.autocast(audio.device.type, enabled=False):  # exp and Gram sums want float32
        au, an = _unit(audio.to(dtype))  # (A, M, d), (A, M)
        tu, tn = _unit(torch.where(mask[..., None], text.to(dtype), 0))  # padded words become 0 vectors
        s = (au.reshape(A * M, d) @ tu.reshape(T * N, d).T).view(A, M, T, N)  # s_mn = cos(a_m, t_n)
        p = s.clamp_min(0)  # [s_mn]+ ; exactly 0 for padded words
        text_sum = _text_enhanced(s, p, tu, tn, mask, lam) if want_text else None
        audio_sum = _audio_enhanced(s, p, au, an, lam) if want_audio else None
    return text_sum, audio_sum


def _text_enhanced(
    s: torch.Tensor, p: torch.Tensor, tu: torch.Tensor, tn: torch.Tensor, mask: torch.Tensor, lam: float
) -> torch.Tensor:
    """Eq. 1, audio tokens as queries: sum over m of cos(a_m, â_m); s, p (A, M, T, N) -> (A, T).

    cos(a_m, â_m) does not change when alpha_m is scaled, so the softmax is left unnormalised:
    w_mn = |t_n| exp(lam (s̄_mn - 1)) weighs the unit words, a_m . â_m ∝ |a_m| sum_n w_mn s_mn
    and |â_m|^2 ∝ w^T G w with G the caption's (N x N) Gram matrix of unit words.
    """
    A, M, T, N = s.shape
    scale = lam / (p * p).sum(1, keepdim=True).clamp_min(EPS**2).sqrt()  # (A, 1, T, N): over m
    bias = torch.where(mask, tn.log() - lam, -math.inf)  # (T, N): padded words get weight 0
    w = torch.addcmul(bias, p, scale).exp_()  # (A, M, T, N)
    dot = torch.einsum("amtn,amtn->amt", w, s)  # (A, M, T); faster than (w * s).sum(-1)
    wt = w.view(A * M, T, N).transpose(0, 1)  # (T, A*M, N)
    sq = ((wt @ (tu @ tu.transpose(1, 2))) * wt).sum(-1)  # (T, A*M)
    return (dot / sq.T.reshape(A, M, T).clamp_min(torch.finfo(sq.dtype).tiny).sqrt()).sum(1)


def _audio_enhanced(s: torch.Tensor, p: torch.Tensor, au: torch.Tensor, an: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 1 mirrored, words as queries: sum over valid n of cos(t_n, t̂_n); (A, M, T, N) -> (A, T).

    As in `_text_enhanced`, beta_n is left unnormalised: w_mn = |a_m| exp(lam (s̄_nm - 1)) weighs
    the unit audio tokens. |t̂_n|^2 comes from materialising t̂ (N*d per word) when M > d, else
    from the clip's (M x M) Gram matrix (N*M per word).
    """
    A, M, T, N = s.shape
    d = au.shape[-1]
    scale = lam / (p * p).sum(3, keepdim=True).clamp_min(EPS**2).sqrt()  # (A, M, T, 1): over n
    w = torch.addcmul((an.log() - lam)[:, :, None, None], p, scale).exp_()  # (A, M, T, N)
    dot = (w * s).sum(1)  # (A, T, N); exactly 0 for padded words (s = 0)
    wf = w.view(A, M, T * N)
    if M > d:
        sq = torch.bmm(wf.transpose(1, 2), au).square().sum(-1)  # (A, T*N)
    else:
        sq = (torch.bmm(au @ au.transpose(1, 2), wf) * wf).sum(1)  # (A, T*N)
    return (dot / sq.view(A, T, N).clamp_min(torch.finfo(sq.dtype).tiny).sqrt()).sum(-1)


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
    columns = []
    for t0 in range(0, Nt, captions):
        idx = order[t0 : t0 + captions]
        n_used = int(ends[idx].max())
        t_blk, m_blk = text[idx, :n_used], text_mask[idx, :n_used]
        rows = []
        for a0 in range(0, Na, clips):
            text_sum, audio_sum = _block_scores(audio[a0 : a0 + clips], t_blk, m_blk, lam, want_text, want_audio)
            score = 0
            if want_text:
                score = score + (text_sum / M if reduce == "mean" else text_sum)
            if want_audio:
                score = score + (audio_sum / m_blk.sum(1) if reduce == "mean" else audio_sum)
            rows.append(score)
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
