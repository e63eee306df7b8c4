"""Power analysis of the tiny plan: from pilot runs on the validation folds, the parts of a claim's
variance and the interval half-width that a plan of S seeds and n test clips predicts.

The model is `thadcr.experiments.claims`'s: the paired difference of two settings at seed s, measured on n
clips, is d_s = delta + a + u_s + v_s, with test sampling a (variance sigma_a^2 / n), training noise
u_s (sigma_u^2) and the seed x query interaction v_s (how much one seed's model does better or
worse on particular queries than their difficulty predicts; sigma_v^2 / n), so that

    Var(mean of d over S seeds) = sigma_a^2 / n + (sigma_u^2 + sigma_v^2 / n) / S.

Pilot runs give S_p seeds of both settings, tested on the n_p validation clips. With B resamples
of those clips (the same for both settings and every seed), `variance_parts` reads the three
parts off three figures:

* b1, the bootstrap variance of one seed's d_s, averaged over the seeds: (sigma_a^2 + sigma_v^2) / n_p;
* bm, the bootstrap variance of the seed mean of d: (sigma_a^2 + sigma_v^2 / S_p) / n_p;
* w, the variance of d_s between the seeds: sigma_u^2 + sigma_v^2 / n_p;

so sigma_v^2 = n_p (b1 - bm) / (1 - 1 / S_p), sigma_a^2 = n_p b1 - sigma_v^2 and sigma_u^2 =
w - sigma_v^2 / n_p, each clipped at 0. `half_width` then predicts the 95 % half-width of a plan
with the interval rule of `thadcr.experiments.claims` (Welch-Satterthwaite df, the test-sampling part known).
The validation clips stand in for the test clips: both are scenes made from held-out recordings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from thadcr.experiments.claims import LEVEL, t_quantile


@dataclass(frozen=True)
class VarianceParts:
    """sigma_a^2, sigma_u^2, sigma_v^2 of one paired difference (R-sum points squared, per clip
    for the two test-sampling parts), the pilot's mean difference and its seeds and clips."""

    test: float  # sigma_a^2
    seed: float  # sigma_u^2
    interaction: float  # sigma_v^2
    effect: float
    seeds: int
    clips: int


def variance_parts(d: np.ndarray, d_boot: np.ndarray, clips: int) -> VarianceParts:
    """The parts from a pilot: d (S_p,) paired differences of R-sum, one per seed; d_boot (S_p, B)
    the same on B bootstrap resamples of the `clips` validation clips (S_p >= 2)."""
    d, d_boot = np.asarray(d, np.float64), np.asarray(d_boot, np.float64)
    seeds = d.shape[0]
    if d.ndim != 1 or seeds < 2 or d_boot.ndim != 2 or d_boot.shape[0] != seeds or d_boot.shape[1] < 2:
        raise ValueError(f"need d (S,) with S >= 2 and d_boot (S, B) with B >= 2, got {d.shape} and {d_boot.shape}")
    one_seed = float(d_boot.var(axis=1, ddof=1).mean())  # b1
    seed_mean = float(d_boot.mean(axis=0).var(ddof=1))  # bm
    between = float(d.var(ddof=1))  # w
    interaction = max(clips * (one_seed - seed_mean) / (1 - 1 / seeds), 0.0)
    test = max(clips * one_seed - interaction, 0.0)
    seed = max(between - interaction / clips, 0.0)
    return VarianceParts(test, seed, interaction, float(d.mean()), seeds, clips)


def half_width(parts: VarianceParts, seeds: int, clips: int, level: float = LEVEL) -> float:
    """The predicted half-width of a claim's interval with `seeds` paired seeds on `clips` test
    clips: t(df) sqrt(V), V = sigma_a^2 / n + (sigma_u^2 + sigma_v^2 / n) / S, df by
    Welch-Satterthwaite with the seed part's S - 1 degrees of freedom (normal for S = 1)."""
    if seeds < 1 or clips < 1:
        raise ValueError(f"seeds and clips must be positive, got {seeds} and {clips}")
    seed_part = (parts.seed + parts.interaction / clips) / seeds
    total = parts.test / clips + seed_part
    if total == 0:
        return 0.0
    df = math.inf if seeds == 1 or seed_part == 0 else max(total**2 / (seed_part**2 / (seeds - 1)), 1.0)
    return t_quantile(0.5 + level / 2, df) * math.sqrt(total)
