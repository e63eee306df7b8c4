"""The power analysis: variance parts read back from simulated pilots, predicted half-widths."""

import math

import numpy as np
import pytest

from thadcr.experiments.claims import bootstrap_weights, t_quantile
from thadcr.experiments.power import VarianceParts, half_width, variance_parts


def simulate(rng, seeds, clips, sigma_a, sigma_u, sigma_v, delta=3.0, resamples=400):
    """Paired differences d_s = delta + mean_c x_c + u_s + mean_c v_sc, and the same on bootstrap
    resamples of the clips (x_c: the test-sampling part, v_sc: the seed x query part)."""
    x = rng.normal(0, sigma_a, clips)  # (C,)
    u = rng.normal(0, sigma_u, seeds)  # (S,)
    v = rng.normal(0, sigma_v, (seeds, clips))  # (S, C)
    per_clip = delta + x[None, :] + v  # (S, C)
    d = per_clip.mean(axis=1) + u
    w = bootstrap_weights(clips, resamples, rng)  # (B, C)
    d_boot = (per_clip @ w.T) / w.sum(axis=1)[None, :] + u[:, None]  # (S, B)
    return d, d_boot


def test_the_parts_are_read_back_from_a_large_simulated_pilot():
    rng = np.random.default_rng(0)
    sigma_a, sigma_u, sigma_v = 40.0, 3.0, 30.0
    d, d_boot = simulate(rng, seeds=200, clips=400, sigma_a=sigma_a, sigma_u=sigma_u, sigma_v=sigma_v)
    parts = variance_parts(d, d_boot, clips=400)
    assert parts.test == pytest.approx(sigma_a**2, rel=0.25)
    assert parts.interaction == pytest.approx(sigma_v**2, rel=0.25)
    assert parts.seed == pytest.approx(sigma_u**2, rel=0.3)
    assert parts.effect == pytest.approx(d.mean()) and (parts.seeds, parts.clips) == (200, 400)


def test_the_predicted_half_width_is_the_interval_rule_of_the_claims():
    parts = VarianceParts(test=1600.0, seed=9.0, interaction=900.0, effect=0.0, seeds=4, clips=400)
    clips, seeds = 2000, 8
    seed_part = (9.0 + 900.0 / clips) / seeds
    total = 1600.0 / clips + seed_part
    df = total**2 / (seed_part**2 / (seeds - 1))
    assert half_width(parts, seeds, clips) == pytest.approx(t_quantile(0.975, df) * math.sqrt(total))
    assert half_width(parts, 1, clips) == pytest.approx(1.959964 * math.sqrt(1600.0 / clips + 9.0 + 900.0 / clips),
                                                        rel=1e-5)
    widths = [half_width(parts, s, clips) for s in (2, 4, 8, 16)]
    assert widths == sorted(widths, reverse=True)  # more seeds, narrower
    assert half_width(parts, 8, 20000) < half_width(parts, 8, 2000)  # more clips, narrower


def test_a_pilot_needs_two_seeds_and_replicates():
    with pytest.raises(ValueError, match="S >= 2"):
        variance_parts(np.array([1.0]), np.ones((1, 10)), clips=10)
    with pytest.raises(ValueError, match="seeds and clips must be positive"):
        half_width(VarianceParts(1.0, 1.0, 1.0, 0.0, 2, 10), 0, 10)
