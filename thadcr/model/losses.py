"""Contrastive objective of the paper: the symmetric NT-Xent loss L_S of Eq. 5."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(sim: torch.Tensor, tau: float, clip_ids: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent loss of Eq. 5 on an in-batch similarity matrix; returns a scalar.

    sim: (B, B), rows audio clips, columns captions, sim[i, i] the matching pair.
    L_S = -(1/B) (sum_i log softmax_j(S_ij / tau)[i] + sum_i log softmax_j(S_ji / tau)[i]),
    the sum of the audio->text (row) and text->audio (column) mean losses.
    clip_ids: optional (B,) clip identity of each pair. Then every caption (column) of the same
    clip is a positive of a row and every audio row of the same clip a positive of a column: the
    target of each row/column is uniform over its positives (soft targets). With distinct ids this
    is exactly Eq. 5.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"sim must be a square (B, B) in-batch matrix, got {tuple(sim.shape)}")
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    b = sim.shape[0]
    logits = sim.to(torch.promote_types(sim.dtype, torch.float32)) / tau  # (B, B), at least fp32
    log_p_rows = F.log_softmax(logits, dim=1)  # row i: audio i over captions j
    log_p_cols = F.log_softmax(logits, dim=0)  # column i: caption i over audios j
    if clip_ids is None:
        diag = torch.arange(b, device=sim.device)
        return -(log_p_rows[diag, diag].sum() + log_p_cols[diag, diag].sum()) / b
    if clip_ids.shape != (b,):
        raise ValueError(f"clip_ids must have shape ({b},) to match sim, got {tuple(clip_ids.shape)}")
    positives = (clip_ids[:, None] == clip_ids[None, :]).to(device=sim.device, dtype=logits.dtype)  # (B, B)
    # positives is symmetric: row i's targets are its row, column i's targets its column.
    target = positives / positives.sum(dim=1, keepdim=True)  # (B, B), rows sum to 1
    loss_rows = -(target * log_p_rows).sum()
    loss_cols = -(target.T * log_p_cols).sum()
    return (loss_rows + loss_cols) / b
