"""The claims table: per-query ranks, the interval's coverage on simulated results with a known
effect, verdicts, pairing, the claims list, reading run folders, the forest plot.

``python tests/test_claims.py`` prints the coverage figures quoted in docs/decisions/claims.md.
"""

import json
import math
import re
from statistics import NormalDist

import numpy as np
import pytest

from thadcr.experiments import claims
from thadcr.experiments.claims import CLAIMS, bootstrap_weights, claim_interval, claims_frame, residual_variance, rsum, t_quantile
from thadcr.run.metrics import query_ranks, recalls_from_ranks, retrieval_metrics
from thadcr.experiments.plan import METRICS, TABLES, ReproduceError, plan
from thadcr.experiments.tables import load_paper_results

# ----------------------------------------------------------------------------- a generative model
# Each query's latent score = setting effect + seed effect shared by the settings (what pairing
# cancels) + the run's own training noise + the clip's difficulty (+ the caption's, text-to-audio)
# + run x query noise. A query is ranked 1, 3, 7 or 50 as its score passes CUT; clips are drawn
# from an infinite population, so every expected recall is a normal CDF and the true R-sum
# difference of two settings is known exactly.
CUT = (1.6, 0.9, 0.5)  # latent thresholds of rank <= 1, 5, 10
SD = {"clip": 0.8, "caption": 0.4, "query": 0.7, "seed": 0.08, "run": 0.08}
CLIPS, CAPTIONS = 200, 5


def true_rsum(theta):
    """E[R-sum] of a setting with effect theta over clips, captions, seeds and runs."""
    total = 0.0
    for direction in ("t2a", "a2t"):
        parts = ["clip", "query", "seed", "run"] + (["caption"] if direction == "t2a" else [])
        tau = math.sqrt(sum(SD[p] ** 2 for p in parts))
        total += sum(100 * NormalDist().cdf((theta - cut) / tau) for cut in CUT)
    return total


def _ranks(latent):
    return np.select([latent > CUT[0], latent > CUT[1], latent > CUT[2]], [1, 3, 7], 50).astype(np.int64)


def simulate(rng, thetas, seeds, seed_sd=SD["seed"], run_sd=SD["run"]):
    """Test ranks of the runs of settings ``thetas`` on one test set of CLIPS clips drawn from the
    population; setting i runs seeds 0..seeds[i]-1 (an int: the same for all). List of lists of dicts."""
    seeds = [seeds] * len(thetas) if isinstance(seeds, int) else seeds
    clip = rng.normal(0, SD["clip"], CLIPS)
    caption = rng.normal(0, SD["caption"], (CLIPS, CAPTIONS))
    owner = np.repeat(np.arange(CLIPS), CAPTIONS)
    seed_effect = rng.normal(0, seed_sd, max(seeds))
    runs = [[] for _ in thetas]
    for i, theta in enumerate(thetas):
        for s in range(seeds[i]):
            skill = theta + seed_effect[s] + rng.normal(0, run_sd)
            noise = rng.normal(0, SD["query"], (CLIPS, CAPTIONS))
            t2a = _ranks((skill + clip[:, None] + caption + noise).ravel())
            a2t = _ranks(skill + clip + rng.normal(0, SD["query"], CLIPS))
            runs[i].append({"t2a": t2a, "a2t": a2t, "caption_audio": owner})
    return runs


def rsums(runs, weights):
    """Observed (I, S) and bootstrap (I, S, B) R-sums of simulated runs."""
    observed = np.array([[rsum(r) for r in row] for row in runs])
    return observed, np.array([[rsum(r, weights) for r in row] for row in runs])


MULTI = (0.0, 0.05)  # two settings, 3 paired seeds: a Table 1 claim
SINGLE = (0.0, 0.05, 0.1, -0.05, 0.02, 0.03, 0.05)  # a 6 x 3 Table 1 block + a setting run once


def one_interval(rng, case, resamples=300):
    """The interval of one simulated claim and the true effect it should cover."""
    weights = bootstrap_weights(CLIPS, resamples, rng)
    if case == "multi":
        observed, reps = rsums(simulate(rng, MULTI, 3), weights)
        return claim_interval(observed[1], observed[0], reps[1], reps[0]), true_rsum(MULTI[1]) - true_rsum(MULTI[0])
    runs = simulate(rng, SINGLE, [3] * 6 + [1])
    observed, reps = rsums(runs[:6], weights)
    mean_square, test_part, df = residual_variance(observed, reps)
    other, other_reps = rsum(runs[6][0]), rsum(runs[6][0], weights)  # paired with seed 0 of setting 1
    result = claim_interval(np.array([other]), observed[1, :1], other_reps[None], reps[1, :1],
                            (2 * mean_square, 2 * test_part, df))  # fmt: skip
    return result, true_rsum(SINGLE[6]) - true_rsum(SINGLE[1])


def coverage(case, simulations, seed=12):
    rng = np.random.default_rng([seed, case == "single"])
    hits = [r["ci_low"] <= truth <= r["ci_high"] for r, truth in (one_interval(rng, case) for _ in range(simulations))]
    return float(np.mean(hits))


@pytest.mark.parametrize("case", ["multi", "single"])
def test_interval_covers_the_true_effect_95_percent_of_the_time(case):
    assert 0.90 <= coverage(case, 300) <= 0.99


def variances_without_training_noise(simulations, seed=4):
    """Without training noise the seeds differ only in which queries they get right, which shows
    in the between-seed variance and in the bootstrap alike. Returns the effect's variance over
    the simulations, the interval's mean variance, and bootstrap + between-seed variance / 3."""
    rng = np.random.default_rng(seed)
    effects, variances, naive = [], [], []
    for _ in range(simulations):
        observed, reps = rsums(simulate(rng, MULTI, 3, seed_sd=0.0, run_sd=0.0), bootstrap_weights(CLIPS, 300, rng))
        result = claim_interval(observed[1], observed[0], reps[1], reps[0])
        effects.append(result["effect"])
        variances.append(result["sd"] ** 2)
        naive.append(result["bootstrap_sd"] ** 2 + np.var(observed[1] - observed[0], ddof=1) / 3)
    return float(np.var(effects)), float(np.mean(variances)), float(np.mean(naive))


def test_test_noise_is_not_counted_twice():
    true, ours, naive = variances_without_training_noise(150)
    assert ours == pytest.approx(true, rel=0.2)
    assert naive > 1.5 * true


# ----------------------------------------------------------------------------- verdicts and pairing
@pytest.mark.parametrize("shift, verdict", [(0.5, "holds"), (-0.5, "contradicted"), (0.0, "undecided")])
def test_verdicts_follow_the_sign_of_a_clear_effect(shift, verdict):
    rng = np.random.default_rng(3)
    observed, reps = rsums(simulate(rng, (0.0, shift), 3), bootstrap_weights(CLIPS, 500, rng))
    result = claim_interval(observed[1], observed[0], reps[1], reps[0])
    assert result["verdict"] == verdict
    assert result["ci_low"] < result["effect"] < result["ci_high"]
    assert result["seed_variance"] == "paired seeds (n=3)" and result["n_seeds"] == 3


def test_constructed_numbers_give_each_verdict():
    flat = np.zeros((3, 4))
    assert claim_interval(np.array([10.0, 11, 12]), np.zeros(3), flat, flat)["verdict"] == "holds"
    assert claim_interval(np.zeros(3), np.array([10.0, 11, 12]), flat, flat)["verdict"] == "contradicted"
    assert claim_interval(np.array([1.0, -1, 0.5]), np.zeros(3), flat, flat)["verdict"] == "undecided"
    # the fourth verdict needs the paper's effect: an interval around 0 wholly below it
    assert claims.verdict(-2.0, 3.0, paper_effect=5.0) == claims.SMALLER == "smaller than the paper's"
    assert claims.verdict(-2.0, 3.0, paper_effect=3.0) == "undecided"  # touching the paper's effect
    assert claims.verdict(-2.0, 3.0) == "undecided"  # no paper effect (NaN)
    assert claims.verdict(0.5, 3.0, paper_effect=5.0) == "holds"  # smaller, but the sign is decided
    assert claims.verdict(-3.0, -0.5, paper_effect=5.0) == "contradicted"
    # no test noise: the interval is the t interval of the paired differences, df 2
    result = claim_interval(np.array([10.0, 11, 12]), np.zeros(3), flat, flat)
    assert result["ci_high"] - 11 == pytest.approx(t_quantile(0.975, 2) * 1 / math.sqrt(3))


def test_pairing_by_seed_and_by_resample_narrows_the_interval():
    rng = np.random.default_rng(5)
    runs = simulate(rng, (0.0, 0.1), 3, seed_sd=0.5)  # seed effects shared by both settings dominate
    weights = bootstrap_weights(CLIPS, 500, rng)
    observed, reps = rsums(runs, weights)
    paired = claim_interval(observed[1], observed[0], reps[1], reps[0])
    rotated = [1, 2, 0]  # the worse setting's seeds matched to the wrong seeds of the better one
    unpaired_seeds = claim_interval(observed[1], observed[0, rotated], reps[1], reps[0, rotated])
    assert unpaired_seeds["sd"] > 2 * paired["sd"]
    _, other_reps = rsums(runs, bootstrap_weights(CLIPS, 500, rng))  # the two sides resampled apart
    unpaired_clips = claim_interval(observed[1], observed[0], reps[1], other_reps[0])
    assert unpaired_clips["bootstrap_sd"] > 1.5 * paired["bootstrap_sd"]


def test_single_runs_use_the_pooled_variance_and_say_so():
    flat = np.zeros((1, 4))
    result = claim_interval(np.array([5.0]), np.zeros(1), flat, flat, (4.0, 0.0, 10))
    assert result["seed_variance"] == "pooled from Table 1 (df=10)" and result["df"] == pytest.approx(10)
    assert result["ci_high"] - 5 == pytest.approx(t_quantile(0.975, 10) * 2)
    missing = claim_interval(np.array([5.0]), np.zeros(1), flat, flat, None)
    assert math.isnan(missing["ci_low"]) and missing["seed_variance"].startswith("unavailable")


def test_residual_variance_separates_training_from_test_noise():
    # residuals of 2 x 3 values: +-1, -+1, 0; replicates whose residuals vary by var 0.25 in each cell
    values = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]) + np.array([[5.0], [7.0]]) + np.array([1.0, 2.0, 3.0])
    noise = np.random.default_rng(0).normal(0, 1, 400)
    noise = (noise - noise.mean()) / noise.std(ddof=1)  # variance exactly 1
    pattern = np.stack([[noise, -noise, 0 * noise], [-noise, noise, 0 * noise]]) / 2  # two-way residuals, var 1/4
    reps = values[..., None] + pattern + noise  # + a shift common to all runs (no residual)
    mean_square, test_part, df = residual_variance(values, reps)
    assert df == 2 and mean_square == pytest.approx(4 / 2)  # residuals +-1 in four cells
    assert test_part == pytest.approx(4 * 0.25 / 2)
    with pytest.raises(ValueError, match="2 settings x 2 seeds"):
        residual_variance(values[:1], reps[:1])


def test_t_quantile_matches_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=2e-4)
    assert t_quantile(0.975, 2) == pytest.approx(4.30265, abs=1e-4)
    assert t_quantile(0.975, 4) == pytest.approx(2.77645, abs=1e-4)
    assert t_quantile(0.975, 10) == pytest.approx(2.22814, abs=1e-4)
    assert t_quantile(0.975, 1e9) == pytest.approx(1.95996, abs=1e-4)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)


def test_unpaired_means_need_an_effect_of_15_points():
    # docs/decisions/claims.md: two 3-seed means with seed SD 6.6, t with 4 df
    assert t_quantile(0.975, 4) * 6.6 * math.sqrt(2 / 3) == pytest.approx(14.96, abs=0.01)


# ----------------------------------------------------------------------------- per-query ranks
def _matrices():
    rng = np.random.default_rng(7)
    owner = np.concatenate([np.arange(9), rng.integers(0, 9, 31)])  # 1 to 8 captions per clip
    yield rng.normal(size=(9, 40)), owner
    yield rng.integers(0, 3, (9, 40)).astype(float), owner  # many ties
    yield np.zeros((9, 40)), owner  # all tied


@pytest.mark.parametrize("index", [0, 1, 2])
def test_recalls_from_query_ranks_equal_retrieval_metrics(index):
    sim, owner = list(_matrices())[index]
    ranks = query_ranks(sim, owner)
    assert ranks["t2a"].dtype == np.int64 and ranks["t2a"].shape == (40,) and ranks["a2t"].shape == (9,)
    expected = retrieval_metrics(sim, owner)
    assert recalls_from_ranks(**ranks) == {m: expected[m] for m in METRICS}
    assert np.median(ranks["t2a"]) == expected["t2a_medr"] and ranks["a2t"].mean() == expected["a2t_meanr"]


def test_clip_weights_count_each_clip_and_its_captions():
    sim, owner = next(_matrices())
    ranks = query_ranks(sim, owner)
    counts = np.random.default_rng(1).integers(0, 4, 9)
    counts[0] = 1
    weighted = recalls_from_ranks(**ranks, weights=counts, caption_audio=owner)
    t2a = np.repeat(ranks["t2a"], counts[owner])  # the resampled queries, ranked in the whole gallery
    a2t = np.repeat(ranks["a2t"], counts)
    assert weighted == pytest.approx(recalls_from_ranks(t2a, a2t))
    ones = recalls_from_ranks(**ranks, weights=np.ones(9), caption_audio=owner)
    assert ones == pytest.approx(recalls_from_ranks(**ranks))
    batched = recalls_from_ranks(**ranks, weights=np.stack([counts, np.ones(9)]), caption_audio=owner)
    assert {m: v[0] for m, v in batched.items()} == pytest.approx(weighted)
    with pytest.raises(ValueError, match="caption_audio"):
        recalls_from_ranks(**ranks, weights=counts)


def test_query_ranks_checks_its_inputs_like_retrieval_metrics():
    with pytest.raises(ValueError, match="no caption"):
        query_ranks(np.zeros((3, 2)), np.array([0, 1]))


# ----------------------------------------------------------------------------- the claims list
def test_claims_cover_every_table_and_name_planned_settings():
    settings = {run.setting_id for run in plan("tiny")}
    assert {claim.table for claim in CLAIMS} == set(TABLES)
    assert len({(c.table, c.better, c.worse) for c in CLAIMS}) == len(CLAIMS) == 25
    paper = load_paper_results()
    for claim in CLAIMS:
        assert claim.setting(claim.better) in settings and claim.setting(claim.worse) in settings, claim
        assert claims.paper_effect(claim, paper) > 0, claim  # the paper's own numbers support each claim
    best = [c.worse for c in CLAIMS if c.table == 1 and c.better == "THA+DCR"]
    assert sorted(best) == sorted(["DP (ResNet38)", "DP (HTSAT)", "THA", "THA+DP", "DCR"])


def test_paper_effect_is_the_r_sum_difference():
    paper = load_paper_results()
    claim = next(c for c in CLAIMS if (c.table, c.better, c.worse) == (1, "THA+DCR", "DP (HTSAT)"))
    assert claims.paper_effect(claim, paper) == pytest.approx(420.7 - 404.6)


# ----------------------------------------------------------------------------- run folders
def write_runs(root, runs, rng, sizes=None):
    """Fake finished runs: test_ranks.npz from the generative model and a matching metrics.json."""
    sizes = sizes or {"audiocaps": 200, "clotho": 150}
    effects = {setting: rng.normal(0, 0.05) for setting in {run.setting_id for run in runs}}
    for run in runs:
        n = sizes[run.dataset]
        owner = np.repeat(np.arange(n), CAPTIONS)
        skill = effects[run.setting_id] + rng.normal(0, 0.1)
        ranks = {
            "t2a": np.minimum(_ranks(skill + rng.normal(0, 1, n * CAPTIONS)), n),
            "a2t": _ranks(skill + rng.normal(0, 1, n)),
            "caption_audio": owner,
        }
        folder = root / "runs" / run.run_id
        folder.mkdir(parents=True)
        np.savez(folder / "test_ranks.npz", **ranks)
        (folder / "metrics.json").write_text(json.dumps({"test": recalls_from_ranks(ranks["t2a"], ranks["a2t"])}))


@pytest.fixture(scope="module")
def tiny_plan():
    """A plan with 3 seeds for Table 1 and single runs elsewhere (the paper's design; the tiny plan
    now seeds every table), so that both the paired and the pooled seed variance are exercised."""
    return plan("paper")


def test_claims_frame_reads_runs_pairs_seeds_and_pools(tmp_path, tiny_plan):
    write_runs(tmp_path, tiny_plan, np.random.default_rng(0))
    paper = load_paper_results()
    frame = claims_frame(tmp_path, tiny_plan, paper, resamples=200)
    assert len(frame) == len(CLAIMS)
    assert {"claim", "table", "paper_effect", "effect", "ci_low", "ci_high", "verdict", "n_seeds", "seed_variance",
            "bootstrap_sd", "seed_sd", "runs"} <= set(frame.columns)  # fmt: skip
    row = frame[(frame.table == 1) & (frame.claim == "THA > DP (HTSAT)")].iloc[0]
    assert row.n_seeds == 3 and row.seed_variance == "paired seeds (n=3)"
    runs = row.runs.split(";")
    assert runs[:2] == ["audiocaps-THA-htsat-K8-a0.01-b0.005-s0", "audiocaps-DP-htsat-K8-a0.01-b0.005-s0"]
    ranks = {r: claims.load_ranks(tmp_path / "runs" / r) for r in runs}
    diffs = [rsum(ranks[runs[i]]) - rsum(ranks[runs[i + 1]]) for i in (0, 2, 4)]
    assert row.effect == pytest.approx(np.mean(diffs))
    single = frame[frame.table == 4].iloc[0]  # K=8 (3 seeds) against K=6 (seed 0): paired on seed 0
    assert single.n_seeds == 1 and single.seed_variance == "pooled from Table 1 (df=10)"
    assert single.runs == "audiocaps-DCR-htsat-K8-a0.01-b0.005-s0;audiocaps-DCR-htsat-K6-a0.01-b0.005-s0"
    assert (frame.verdict != "missing").all() and frame.ci_low.notna().all()
    again = claims_frame(tmp_path, tiny_plan, paper, resamples=200)
    assert again.equals(frame)  # seeded bootstrap


def test_runs_without_ranks_give_nan_rows(tmp_path, tiny_plan):
    write_runs(tmp_path, tiny_plan, np.random.default_rng(1))
    (tmp_path / "runs" / "clotho-THA-htsat-K8-a0.01-b0.005-s0" / "test_ranks.npz").unlink()
    (tmp_path / "runs" / "audiocaps-THA-htsat-K8-a0.01-b0.005-s2" / "test_ranks.npz").unlink()
    frame = claims_frame(tmp_path, tiny_plan, load_paper_results(), resamples=100)
    clotho = frame[(frame.table == 2) & frame.claim.str.contains("THA")]
    broken = clotho[clotho.claim.isin(["THA > DP (HTSAT)", "THA+DP > THA", "THA+DCR > THA"])]
    assert (broken.verdict == "missing").all() and broken.effect.isna().all() and len(broken) == 3
    assert broken.missing.str.contains("clotho-THA-htsat").all()
    row = frame[(frame.table == 1) & (frame.claim == "THA > DP (HTSAT)")].iloc[0]
    assert row.n_seeds == 2 and "s2" in row.missing  # the seeds run for both settings
    assert frame[frame.table == 5].verdict.isin(["holds", "undecided", "contradicted"]).all()


def test_bad_files_are_errors_naming_the_file(tmp_path, tiny_plan):
    write_runs(tmp_path, tiny_plan, np.random.default_rng(2))
    paper = load_paper_results()
    run = tmp_path / "runs" / "audiocaps-DCR-htsat-K6-a0.01-b0.005-s0"
    (run / "test_ranks.npz").write_bytes(b"not a zip")
    with pytest.raises(ReproduceError, match=re.escape(str(run / "test_ranks.npz")) + ".*unreadable"):
        claims_frame(tmp_path, tiny_plan, paper, resamples=10)
    owner = np.repeat(np.arange(200), 5)
    ranks = {"t2a": np.ones(1000, np.int64), "a2t": np.ones(200, np.int64), "caption_audio": owner}
    np.savez(run / "test_ranks.npz", **ranks)
    with pytest.raises(ReproduceError, match="t2a_R1 100.0000 from the ranks"):  # metrics.json says otherwise
        claims_frame(tmp_path, tiny_plan, paper, resamples=10)
    np.savez(run / "test_ranks.npz", **{k: v for k, v in ranks.items() if k != "a2t"})
    with pytest.raises(ReproduceError, match="lacks t2a, a2t, caption_audio"):
        claims_frame(tmp_path, tiny_plan, paper, resamples=10)
    np.savez(run / "test_ranks.npz", **(ranks | {"t2a": np.full(1000, 201)}))
    with pytest.raises(ReproduceError, match="ranks outside"):
        claims_frame(tmp_path, tiny_plan, paper, resamples=10)
    np.savez(run / "test_ranks.npz", **(ranks | {"caption_audio": owner[::-1].copy()}))
    (run / "metrics.json").write_text(json.dumps({"test": recalls_from_ranks(ranks["t2a"], ranks["a2t"])}))
    with pytest.raises(ReproduceError, match="different audiocaps test sets"):
        claims_frame(tmp_path, tiny_plan, paper, resamples=10)


if __name__ == "__main__":
    for case in ("multi", "single"):
        print(f"coverage of the 95 % interval, {case}: {coverage(case, 300):.3f} (300 simulations, as the test), "
              f"{coverage(case, 1000):.3f} (1000)")
    true, ours, naive = variances_without_training_noise(1000)
    print(f"no training noise, 1000 simulations: Var(effect) {true:.1f}, the interval's {ours:.1f}, "
          f"bootstrap + between-seed / 3 {naive:.1f}")


def test_pooled_seed_sd_is_the_root_mean_variance_of_table_1_rows():
    runs = plan("paper", tables=[1, 2])  # Table 1 over 3 seeds, Table 2 once
    rsum = {run.run_id: float(10 * i + run.seed ** 2) for i, run in enumerate(runs)}
    pooled, per_setting = claims.pooled_seed_sd(rsum, runs)
    rows = {}
    for run in runs:
        if 1 in run.tables:
            rows.setdefault(run.setting_id, []).append(rsum[run.run_id])
    assert set(per_setting) == set(rows) and len(rows) == 6  # Table 2's single runs are not pooled
    tiny = plan("tiny", tables=[1, 2])  # THA rows once: only the rows with several seeds are pooled
    _, tiny_rows = claims.pooled_seed_sd({run.run_id: float(run.seed) for run in tiny}, tiny)
    assert len(tiny_rows) == 3 and not any("THA" in setting for setting in tiny_rows)
    for setting, values in rows.items():
        mean = sum(values) / len(values)
        variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        assert per_setting[setting] == pytest.approx(variance ** 0.5)
    assert pooled == pytest.approx((sum(sd ** 2 for sd in per_setting.values()) / 6) ** 0.5)
    assert math.isnan(claims.pooled_seed_sd({}, runs)[0])
