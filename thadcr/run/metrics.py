"""Retrieval metrics: R@1/5/10, mAP@10, median and mean rank in both directions.

Protocol of the public audio-text retrieval code (see docs/decisions/factors.md):

- text->audio: each caption ranks all clips; R@k is the share of captions whose clip is in the top
  k; mAP@10 is the mean of 1/rank when rank <= 10, else 0.
- audio->text: each clip ranks all captions; its rank is the best rank of its correct captions;
  mAP@10 = sum over its correct captions ranked within the top 10 of i / rank_i (ranks ascending,
  i = 1, 2, ...) divided by the clip's number of correct captions.

Ties are broken against the correct items: every wrong item whose score equals a correct item's
score is ranked above it, and tied correct items take consecutive ranks. The result depends only
on the scores, never on the order of rows or columns.
"""

from __future__ import annotations

import math

import numpy as np
import torch

KS = (1, 5, 10)
MAP_AT = 10


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.double() if x.is_floating_point() else x
        return x.numpy()
    return np.asarray(x)


def _worst_case_ranks(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Correct-item flags in ranking order: (Q, N) bool, column r True when rank r + 1 is correct.

    Each row is sorted by descending score; within equal scores the wrong items come first.
    """
    order = np.lexsort((correct, -scores), axis=-1)  # last key is the primary one
    return np.take_along_axis(correct, order, axis=-1)


def _direction(ranked: np.ndarray, prefix: str) -> dict[str, float]:
    """Metrics of one direction from its (Q, N) ranked correct-flags."""
    n_correct = ranked.sum(axis=1)  # (Q,)
    best = ranked.argmax(axis=1) + 1  # (Q,) best rank of a correct item
    top = ranked[:, :MAP_AT]  # (Q, <=10)
    positions = np.arange(1, top.shape[1] + 1)
    hits = np.cumsum(top, axis=1)  # i: number of correct items up to this rank
    ap = np.where(top, hits / positions, 0.0).sum(axis=1) / n_correct  # (Q,)
    out = {f"{prefix}_R{k}": 100.0 * float(np.mean(best <= k)) for k in KS}
    out[f"{prefix}_mAP10"] = 100.0 * float(ap.mean())
    out[f"{prefix}_medr"] = float(np.median(best))
    out[f"{prefix}_meanr"] = float(best.mean())
    return out


def retrieval_metrics(sim, caption_audio) -> dict[str, float]:
    """Retrieval metrics of a similarity matrix, in percent (R@k, mAP@10) and ranks (medr, meanr).

    sim: (Na, Nt) numpy array or tensor, rows audio clips, columns captions; -inf marks a pair
    that is never compared (a clip outside a caption's gallery, `thadcr.run.evaluation.score_split`).
    caption_audio: (Nt,) integer clip index (row of sim) of every caption; every clip needs at
    least one caption, and any number per clip is allowed.
    Returns t2a_R1, t2a_R5, t2a_R10, t2a_mAP10, t2a_medr, t2a_meanr and the same for a2t.
    """
    s = _to_numpy(sim).astype(np.float64)
    owner = _to_numpy(caption_audio)
    if s.ndim != 2:
        raise ValueError(f"sim must be a 2-D (Na, Nt) matrix, got shape {s.shape}")
    n_audio, n_text = s.shape
    if owner.shape != (n_text,):
        raise ValueError(
            f"caption_audio must have shape ({n_text},), one clip index per column of sim, got {owner.shape}"
        )
    if not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(f"caption_audio must hold integer clip indices, got dtype {owner.dtype}")
    bad = np.flatnonzero((owner < 0) | (owner >= n_audio))
    if bad.size:
        raise ValueError(
            f"caption_audio[{bad[0]}] = {owner[bad[0]]} is not a row of sim (0..{n_audio - 1}); "
            f"{bad.size} caption(s) point outside the clips"
        )
    counts = np.bincount(owner, minlength=n_audio)
    lonely = np.flatnonzero(counts == 0)
    if lonely.size:
        raise ValueError(
            f"clip(s) {lonely[:10].tolist()} ({lonely.size} in all) have no caption in caption_audio: "
            f"drop those rows of sim or add their captions"
        )
    if np.isnan(s).any() or np.isposinf(s).any():
        raise ValueError("sim contains NaN or +inf values (-inf marks a pair outside a query's gallery)")
    outside = np.flatnonzero(np.isneginf(s[owner, np.arange(n_text)]))
    if outside.size:
        raise ValueError(f"caption {outside[0]}'s own clip scores -inf: a caption's clip must be in its gallery")

    correct = owner[None, :] == np.arange(n_audio)[:, None]  # (Na, Nt)
    t2a = _direction(_worst_case_ranks(s.T, correct.T), "t2a")  # captions rank clips
    a2t = _direction(_worst_case_ranks(s, correct), "a2t")  # clips rank captions
    return {**t2a, **a2t}


def chance_recall(n_items: int, n_relevant: int, k: int) -> float:
    """R@k (in %) of a random ranking: the chance that at least one of the `n_relevant` correct
    items among `n_items` is in the top k, 100 (1 - binom(n - r, k) / binom(n, k)). Text-to-audio on
    N_a clips: chance_recall(N_a, 1, k) = 100 k / N_a; audio-to-text on N_t captions, 5 per clip:
    chance_recall(N_t, 5, k)."""
    if not 1 <= n_relevant <= n_items or k < 1:
        raise ValueError(f"need 1 <= n_relevant <= n_items and k >= 1, got {n_relevant}, {n_items}, {k}")
    return 100.0 * (1.0 - math.comb(n_items - n_relevant, k) / math.comb(n_items, k))


def query_ranks(sim, caption_audio) -> dict[str, np.ndarray]:
    """Each query's rank under the worst-case tie rule of :func:`retrieval_metrics` (which checks
    the inputs, with its messages): ``t2a`` (Nt,) int64, the 1-based rank of each caption's clip
    among all clips; ``a2t`` (Na,) int64, each clip's best rank among its correct captions.
    ``recalls_from_ranks(**query_ranks(sim, ca))`` gives retrieval_metrics' six recalls."""
    retrieval_metrics(sim, caption_audio)  # the input checks
    s = _to_numpy(sim).astype(np.float64)  # (Na, Nt)
    owner = _to_numpy(caption_audio)  # (Nt,)
    correct = owner[None, :] == np.arange(s.shape[0])[:, None]  # (Na, Nt)
    t2a = _worst_case_ranks(s.T, correct.T).argmax(axis=1) + 1  # (Nt,) captions rank clips
    a2t = _worst_case_ranks(s, correct).argmax(axis=1) + 1  # (Na,) clips rank captions
    return {"t2a": t2a.astype(np.int64), "a2t": a2t.astype(np.int64)}


def recalls_from_ranks(t2a, a2t, weights=None, caption_audio=None) -> dict[str, float | np.ndarray]:
    """The six recalls R@1/5/10 of both directions (percent) from :func:`query_ranks`' ranks.

    t2a: (Nt,) caption ranks; a2t: (Na,) clip ranks. Without weights, t2a_Rk = 100 mean(t2a <= k)
    and a2t_Rk = 100 mean(a2t <= k), exactly as retrieval_metrics. weights: (Na,) or (B, Na)
    non-negative clip weights (e.g. bootstrap counts); a clip's weight also weighs its captions,
    found through caption_audio (Nt,): t2a_Rk = 100 sum_q w_q hits_q / sum_q w_q n_q, with hits_q
    the clip's captions ranked <= k and n_q its number of captions. Floats, or (B,) arrays for
    (B, Na) weights.
    """
    t2a, a2t = np.asarray(t2a), np.asarray(a2t)
    if t2a.ndim != 1 or a2t.ndim != 1:
        raise ValueError(f"t2a and a2t must be 1-D rank arrays, got shapes {t2a.shape} and {a2t.shape}")
    if weights is None:
        out = {f"t2a_R{k}": 100.0 * float(np.mean(t2a <= k)) for k in KS}
        return out | {f"a2t_R{k}": 100.0 * float(np.mean(a2t <= k)) for k in KS}
    w = np.asarray(weights, dtype=np.float64)  # (Na,) or (B, Na)
    owner = None if caption_audio is None else np.asarray(caption_audio)
    if owner is None or owner.shape != t2a.shape:
        raise ValueError(f"weights need caption_audio with one clip index per caption, shape {t2a.shape}")
    if w.ndim not in (1, 2) or w.shape[-1] != a2t.shape[0] or (w < 0).any():
        raise ValueError(f"weights must be non-negative, shape ({a2t.shape[0]},) or (B, {a2t.shape[0]}), got {w.shape}")
    n_audio = a2t.shape[0]
    t2a_hits = np.stack([np.bincount(owner, weights=t2a <= k, minlength=n_audio) for k in KS], axis=1)  # (Na, 3)
    a2t_hits = np.stack([a2t <= k for k in KS], axis=1).astype(np.float64)  # (Na, 3)
    captions = np.bincount(owner, minlength=n_audio).astype(np.float64)  # (Na,)
    t2a_r = 100.0 * (w @ t2a_hits) / (w @ captions)[..., None]  # (..., 3)
    a2t_r = 100.0 * (w @ a2t_hits) / w.sum(axis=-1)[..., None]  # (..., 3)
    recalls = np.concatenate([t2a_r, a2t_r], axis=-1)  # (..., 6)
    names = [f"{d}_R{k}" for d in ("t2a", "a2t") for k in KS]
    return {name: float(recalls[i]) if w.ndim == 1 else recalls[:, i] for i, name in enumerate(names)}
