"""The paper's pairwise claims about Tables 1-5, each with our effect, a 95 % interval and a verdict.

**Which claims** (``CLAIMS``). One row per ordering the paper's text asserts, compared on R-sum
(the six recalls added; the paper's effect is its own R-sum difference, all positive):

- Tables 1 and 2 (section 3.2): "our methods consistently achieve better performance over the
  baselines" -> THA > DP (HTSAT) and DCR > DP (HTSAT), against the baseline with the same audio
  encoder, so that the comparison isolates the method; "the marginal improvements observed in
  THA+DP over THA" -> THA+DP > THA; "our THA+DCR combination stands out, delivering the highest
  scores" -> THA+DCR > every other row of the table (for Table 1 including DP (ResNet38), the
  prior method [8]). Table 1 adds DP (HTSAT) > DP (ResNet38): the paper's case for two-stream
  Transformers (sections 1 and 4). Section 3.2 speaks of both tables, so Table 2 (Clotho) repeats
  the claims that have rows there.
- Table 3 (section 3.3): the cumulative rows each improve on the previous one ("the three
  components are all beneficial", CA "yields marked improvement", "our full method obtains the best
  performance"): three adjacent pairs. The statement that L_D helps more than L_A is a difference
  of two gains (1.5 R-sum points in the paper), not an ordering of two rows; it is left out.
- Table 4: "K = 8 achieves the optimal performance" -> K=8 > K=6 and K=8 > K=10.
- Table 5: alpha = 0.01 "a slight but notable improvement over ... 0.005 and 0.02", and "a similar
  pattern" for beta = 0.005 -> four pairs.

Orderings the text does not state (e.g. DCR against THA+DP) are not claims.

**The interval** (``claim_interval``). A claim compares settings b (better) and w (worse) on the
same test set. The runs are paired by seed: seed s of both settings shares the data order and the
start of the shared parts, so seed noise partly cancels in d_s = R-sum(b, s) - R-sum(w, s). Only
seeds run for both settings are paired (so a Table 1 row against a single-run row uses seed 0).
Our effect is the mean of d_s over the S paired seeds. Model: d_s on a test set of n clips is
delta + a + u_s + v_s, with a the mean query effect (test sampling, variance sigma_a^2 / n),
u_s the training noise (seed, variance sigma_u^2), v_s the seed x query interaction (which queries
a particular model gets right; variance sigma_v^2 / n). Var(mean d) = sigma_a^2/n + sigma_u^2/S +
sigma_v^2/(n S).

- Test sampling: a paired bootstrap over the test clips (each clip carries its captions, so both
  directions are resampled; each query keeps the rank it has in its gallery: the whole test set,
  or its fold with ``eval_fold_clips``): B multinomial count vectors over all test clips, the
  same ones for every run of a data set. Its variance of the seed-mean difference, v_boot,
  estimates sigma_a^2/n + sigma_v^2/(n S).
- Seeds: the between-seed variance of d_s on the one test set estimates sigma_u^2 + sigma_v^2/n
  (df S - 1): not training noise alone, since v_s is test-sampling noise that is also in v_boot.
  Adding the two would count sigma_v^2/(n S) twice. ``residual_variance`` estimates that part
  with the bootstrap (the bootstrap variance of the setting x seed residuals), so
  V = between-seed variance / S + (v_boot - sigma_v^2/(n S)) = sigma_a^2/n + (sigma_u^2 +
  sigma_v^2/n)/S, without double counting (the bracket is clipped at 0).
- With S >= 2 paired seeds, the between-seed variance is the claim's own (df S - 1). With one,
  it is pooled from the Table 1 block of all its rows and seeds: twice the residual mean square of
  the additive model R-sum = setting + seed (df (rows - 1)(seeds - 1)), with its seed x query part
  from the same block; Table 2's single runs borrow it too (the only multi-seed block).
- The interval is effect +- t(0.975, df) sqrt(V), with Welch-Satterthwaite
  df = V^2 / ((seed part)^2 / df_seed), the bootstrap part counting as exactly known; it tends
  to the normal quantile when the seed part vanishes.

Verdict (`verdict`): ``holds`` (interval above 0), ``contradicted`` (below 0), ``smaller than the
paper's`` (it contains 0 but lies wholly below the paper's effect: the paper's size is ruled out, not
the sign), ``undecided``; ``missing`` when no seed was run for both settings. The coverage of this interval is checked on simulated results
in tests/test_claims.py (docs/decisions/claims.md gives the figures).
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
from collections.abc import Iterable
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from thadcr.run.metrics import recalls_from_ranks
from thadcr.experiments.plan import (
    DATASETS, METRICS, TABLE_DATASET, TABLE_ROWS, ReproduceError, Run, read_metrics, setting_id,
)  # fmt: skip

LEVEL = 0.95
RESAMPLES = 2000
RANKS_FILE = "test_ranks.npz"


@dataclasses.dataclass(frozen=True)
class Claim:
    """The paper claims that row ``better`` of ``table`` beats row ``worse`` (method labels of
    ``thadcr.experiments.plan.TABLE_ROWS`` and data/paper_results.csv); ``basis`` says where the paper says so."""

    table: int
    better: str
    worse: str
    basis: str

    @property
    def text(self) -> str:
        return f"{self.better} > {self.worse}"

    @property
    def dataset(self) -> str:
        return TABLE_DATASET[self.table]

    def setting(self, method: str) -> str:
        return setting_id(self.dataset, **dict(TABLE_ROWS[self.table])[method])


_BASELINES = "3.2: our methods beat the baselines"
_BEST = "3.2: THA+DCR has the highest scores"
_THA_DP = "3.2: improvements of THA+DP over THA"
CLAIMS: tuple[Claim, ...] = (
    Claim(1, "DP (HTSAT)", "DP (ResNet38)", "1, 4: two-stream Transformers"),
    Claim(1, "THA", "DP (HTSAT)", _BASELINES),
    Claim(1, "DCR", "DP (HTSAT)", _BASELINES),
    Claim(1, "THA+DP", "THA", _THA_DP),
    *(Claim(1, "THA+DCR", other, _BEST) for other in ("DP (ResNet38)", "DP (HTSAT)", "THA", "THA+DP", "DCR")),
    Claim(2, "THA", "DP (HTSAT)", _BASELINES),
    Claim(2, "DCR", "DP (HTSAT)", _BASELINES),
    Claim(2, "THA+DP", "THA", _THA_DP),
    *(Claim(2, "THA+DCR", other, _BEST) for other in ("DP (HTSAT)", "THA", "THA+DP", "DCR")),
    Claim(3, "DP+LD", "DP (HTSAT)", "3.3: L_D improves DP"),
    Claim(3, "DP+LD+LA", "DP+LD", "3.3: L_A improves further"),
    Claim(3, "DCR", "DP+LD+LA", "3.3: CA yields marked improvement"),
    Claim(4, "K=8", "K=6", "3.3: K = 8 is optimal"),
    Claim(4, "K=8", "K=10", "3.3: K = 8 is optimal"),
    Claim(5, "alpha=0.01", "alpha=0.005", "3.3: alpha = 0.01 is optimal"),
    Claim(5, "alpha=0.01", "alpha=0.02", "3.3: alpha = 0.01 is optimal"),
    Claim(5, "beta=0.005", "beta=0.001", "3.3: beta = 0.005 is best"),
    Claim(5, "beta=0.005", "beta=0.01", "3.3: beta = 0.005 is best"),
)


def paper_effect(claim: Claim, paper: pd.DataFrame) -> float:
    """The paper's R-sum difference better - worse (data/paper_results.csv; NaN if a cell is missing)."""
    rsum = {}
    for method in (claim.better, claim.worse):
        rows = paper[(paper.table == claim.table) & (paper.method == method) & paper.metric.isin(METRICS)]
        rsum[method] = float(rows["mean"].sum()) if len(rows) == len(METRICS) else math.nan
    return rsum[claim.better] - rsum[claim.worse]


# ----------------------------------------------------------------------------- statistics
def t_quantile(p: float, df: float) -> float:
    """Student's t quantile for 0.5 < p < 1 and df >= 1 (df = inf: the normal one).

    With T = sqrt(df) tan(theta), theta has density proportional to cos(theta)^(df - 1) on
    (-pi/2, pi/2); its CDF is integrated numerically (trapezoid) and inverted. Beyond
    theta = 40 / sqrt(df) the density is below exp(-790) for large df, so the grid stops there.
    """
    if not 0.5 < p < 1 or not df >= 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    theta = np.linspace(0.0, min(math.pi / 2, 40 / math.sqrt(df)), 20_001)  # (G,)
    density = np.cos(theta) ** (df - 1)
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])  # trapezoid, (G,)
    angle = float(np.interp((2 * p - 1) * cdf[-1], cdf, theta))
    return math.sqrt(df) * math.tan(angle)


def _residuals(x: np.ndarray) -> np.ndarray:
    """Two-way residuals over the first two axes: x - row mean - column mean + grand mean."""
    return x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean(axis=(0, 1), keepdims=True)


def residual_variance(values: np.ndarray, replicates: np.ndarray) -> tuple[float, float, int]:
    """Seed-to-seed variance of R-sum around the additive model R[i, s] = mu_i + b_s + e_is, and
    its test-sampling part.

    values: (I, S) R-sum of I settings x S seeds on one test set; replicates: (I, S, B) the same
    on B bootstrap resamples (the same resamples for every run). Returns (mean square of the
    two-way residuals, the bootstrap variance of those residuals averaged alike, df = (I - 1)(S - 1)).
    The first estimates Var(e) = training noise + the seed x query part of test sampling, the
    second that part alone; a paired difference of two settings at one seed has twice each.
    """
    n_settings, n_seeds = values.shape
    df = (n_settings - 1) * (n_seeds - 1)
    if df < 1 or replicates.shape[:2] != values.shape:
        raise ValueError(
            f"need at least 2 settings x 2 seeds and matching replicates, got {values.shape}, {replicates.shape}"
        )
    mean_square = float((_residuals(values) ** 2).sum()) / df
    test_part = float(_residuals(replicates).var(axis=2, ddof=1).sum()) / df
    return mean_square, test_part, df


SMALLER = "smaller than the paper's"
VERDICTS = ("holds", "contradicted", SMALLER, "undecided", "missing")


def verdict(low: float, high: float, paper_effect: float = math.nan) -> str:
    """The verdict of a 95 % interval [low, high] for a claim whose paper effect is `paper_effect`
    (positive: the claims are written "better > worse"): holds above 0, contradicted below 0,
    smaller than the paper's when it contains 0 but lies wholly below the paper's effect, else undecided."""
    if low > 0:
        return "holds"
    if high < 0:
        return "contradicted"
    return SMALLER if high < paper_effect else "undecided"


def claim_interval(
    better: np.ndarray,
    worse: np.ndarray,
    better_rep: np.ndarray,
    worse_rep: np.ndarray,
    pooled: tuple[float, float, int] | None = None,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Effect, interval and verdict of one claim from its S paired seeds (see the module docstring).

    better, worse: (S,) R-sum of the two settings, seed by seed; ``*_rep``: (S, B) the same on the
    bootstrap resamples. pooled: for S = 1, the Table 1 block's (seed-to-seed variance of a paired
    difference, its seed x query part, df), see ``residual_variance``.
    """
    diffs = np.asarray(better, np.float64) - np.asarray(worse, np.float64)  # (S,)
    n_seeds = diffs.shape[0]
    boot_var = float((np.asarray(better_rep) - np.asarray(worse_rep)).mean(axis=0).var(ddof=1))
    if n_seeds >= 2:
        block, block_reps = np.stack([better, worse]), np.stack([better_rep, worse_rep])  # (2, S), (2, S, B)
        mean_square, test_part, df_seed = residual_variance(block, block_reps)
        seed_var, interaction, source = 2 * mean_square, 2 * test_part, f"paired seeds (n={n_seeds})"
    elif pooled is not None and not math.isnan(pooled[0]):
        seed_var, interaction, df_seed = pooled
        source = f"pooled from Table 1 (df={df_seed})"
    else:
        seed_var, interaction, df_seed, source = math.nan, math.nan, 1, "unavailable: no seed variance from Table 1"
    seed_part = seed_var / n_seeds  # training noise + seed x query noise, df_seed
    total = max(boot_var - interaction / n_seeds, 0.0) + seed_part  # + query main effect (bootstrap)
    df = math.inf if seed_part == 0 else total**2 / (seed_part**2 / df_seed)
    effect = float(diffs.mean())
    half = t_quantile(0.5 + level / 2, df) * math.sqrt(total) if not math.isnan(total) else math.nan
    low, high = effect - half, effect + half
    return {
        "effect": effect, "ci_low": low, "ci_high": high, "verdict": verdict(low, high), "n_seeds": n_seeds,
        "seed_variance": source, "bootstrap_sd": math.sqrt(boot_var),
        "seed_sd": math.sqrt(max(seed_var - interaction, 0.0)), "sd": math.sqrt(total), "df": df,
    }  # fmt: skip


def bootstrap_weights(n_clips: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n_clips) counts of each test clip in B resamples of the clips with replacement."""
    return rng.multinomial(n_clips, np.full(n_clips, 1.0 / n_clips), size=resamples).astype(np.float64)


def rsum(ranks: dict[str, np.ndarray], weights: np.ndarray | None = None) -> float | np.ndarray:
    """R-sum of one run from its test ranks; (B,) on the resamples given by (B, Na) weights."""
    recalls = recalls_from_ranks(ranks["t2a"], ranks["a2t"], weights, ranks["caption_audio"])
    return sum(recalls[m] for m in METRICS)


# ----------------------------------------------------------------------------- results
def load_ranks(run_dir: Path) -> dict[str, np.ndarray] | None:
    """A finished run's test ranks (``query_ranks`` + ``caption_audio``), checked against its
    metrics.json; None when the run is unfinished or has no test_ranks.npz."""
    path, metrics_path = run_dir / RANKS_FILE, run_dir / "metrics.json"
    if not (path.is_file() and metrics_path.is_file()):
        return None
    redo = "delete the run folder and execute the plan again"
    try:
        with np.load(path, allow_pickle=False) as npz:
            ranks = {key: npz[key] for key in ("t2a", "a2t", "caption_audio")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ReproduceError(f"{path}: unreadable or lacks t2a, a2t, caption_audio ({error}); {redo}") from None
    t2a, a2t, owner = ranks["t2a"], ranks["a2t"], ranks["caption_audio"]
    n_audio = a2t.shape[0] if a2t.ndim == 1 else 0
    shapes_ok = t2a.ndim == 1 and owner.shape == t2a.shape and n_audio > 0
    ints = all(np.issubdtype(x.dtype, np.integer) for x in ranks.values())
    if not (shapes_ok and ints) or owner.min() < 0 or owner.max() >= n_audio or (np.bincount(owner) == 0).any():
        raise ReproduceError(
            f"{path}: t2a (Nt,), a2t (Na,), caption_audio (Nt,) in 0..Na-1 must be integer arrays with a caption "
            f"for every clip, got shapes {t2a.shape}, {a2t.shape}, {owner.shape}; {redo}"
        )
    if t2a.min() < 1 or t2a.max() > n_audio or a2t.min() < 1 or a2t.max() > t2a.shape[0]:
        raise ReproduceError(f"{path}: ranks outside 1..{n_audio} (t2a) or 1..{t2a.shape[0]} (a2t); {redo}")
    test = read_metrics(metrics_path)["test"]
    for metric, value in recalls_from_ranks(t2a, a2t).items():
        if abs(value - float(test[metric])) > 1e-6:
            raise ReproduceError(
                f"{path}: {metric} {value:.4f} from the ranks, {test[metric]} in {metrics_path.name}; {redo}"
            )
    return ranks


def _test_sets(ranks: dict[str, dict[str, np.ndarray]], runs: dict[str, Run], root: Path) -> dict[str, np.ndarray]:
    """caption_audio of each data set's test set, checked to be the same for all its runs."""
    owners: dict[str, tuple[str, np.ndarray]] = {}
    for run_id, r in ranks.items():
        dataset = runs[run_id].dataset
        first, owner = owners.setdefault(dataset, (run_id, r["caption_audio"]))
        if not np.array_equal(owner, r["caption_audio"]):
            raise ReproduceError(
                f"{root / 'runs' / run_id / RANKS_FILE} and {root / 'runs' / first / RANKS_FILE} were evaluated on "
                f"different {dataset} test sets: re-run the runs made with the older data set"
            )
    return {dataset: owner for dataset, (_, owner) in owners.items()}


def _pooled(
    observed: dict[str, float], replicates: dict[str, np.ndarray], runs: Iterable[Run]
) -> tuple[float, float, int]:
    """The Table 1 block's seed-to-seed variance of a paired difference, its seed x query part and
    df (``residual_variance``): its settings run with 2+ seeds, on the seeds all of them have.
    (NaN, NaN, 0) when there is no such block."""
    seeds: dict[str, set[int]] = {}
    for run in runs:
        if 1 in run.tables and run.run_id in observed:
            seeds.setdefault(run.setting_id, set()).add(run.seed)
    block = {setting: found for setting, found in seeds.items() if len(found) >= 2}
    common = sorted(set.intersection(*block.values())) if block else []
    if len(block) < 2 or len(common) < 2:
        return math.nan, math.nan, 0
    ids = [[f"{setting}-s{seed}" for seed in common] for setting in block]
    values = np.array([[observed[i] for i in row] for row in ids])  # (I, S)
    reps = np.array([[replicates[i] for i in row] for row in ids])  # (I, S, B)
    mean_square, test_part, df = residual_variance(values, reps)
    return 2 * mean_square, 2 * test_part, df



def pooled_seed_sd(rsum_of_run: dict[str, float], runs: Iterable[Run]) -> tuple[float, dict[str, float]]:
    """Table 1's pooled seed-to-seed SD of R-sum: the square root of the mean, over its settings run
    with 2+ seeds, of each setting's sample variance over its seeds; and each setting's SD.

    ``rsum_of_run``: run id -> test R-sum (e.g. ``learning.csv``'s ``rsum``). This SD mixes the
    seed's effect on the model with which test queries succeed (the claims section of the
    reproduction notes); issue 12's goal for the tiny profile was at most 3 points.
    """
    values: dict[str, list[float]] = {}
    for run in runs:
        if 1 in run.tables and run.run_id in rsum_of_run:
            values.setdefault(run.setting_id, []).append(float(rsum_of_run[run.run_id]))
    per_setting = {setting: float(np.std(found, ddof=1)) for setting, found in values.items() if len(found) >= 2}
    if not per_setting:
        return math.nan, {}
    return float(np.sqrt(np.mean([sd**2 for sd in per_setting.values()]))), per_setting


def claims_frame(
    root: str | Path, runs: list[Run], paper: pd.DataFrame, resamples: int = RESAMPLES, seed: int = 0
) -> pd.DataFrame:
    """One row per claim of CLAIMS: paper_effect, effect, ci_low, ci_high, verdict and how they
    were obtained (module docstring), from the runs' test_ranks.npz under ``root/runs/<run_id>/``.

    root: results/<profile>; runs: the whole plan (``thadcr.experiments.plan.plan``); paper:
    ``thadcr.experiments.tables.load_paper_results()``. Runs without test_ranks.npz are left out (listed in
    ``missing``); a claim without a paired seed gets NaN and verdict ``missing``. The bootstrap
    is seeded (``seed``, one stream per data set), so the table is reproducible.
    """
    root = Path(root)
    by_id = {run.run_id: run for run in runs}
    ranks = {run_id: r for run_id in by_id if (r := load_ranks(root / "runs" / run_id)) is not None}
    weights = {
        dataset: bootstrap_weights(owner.max() + 1, resamples, np.random.default_rng([seed, DATASETS.index(dataset)]))
        for dataset, owner in _test_sets(ranks, by_id, root).items()
    }  # dataset -> (B, Na)
    observed = {run_id: rsum(r) for run_id, r in ranks.items()}
    replicates = {run_id: rsum(r, weights[by_id[run_id].dataset]) for run_id, r in ranks.items()}  # (B,) each
    pooled = _pooled(observed, replicates, runs)
    planned: dict[str, dict[int, str]] = {}
    for run in runs:
        planned.setdefault(run.setting_id, {})[run.seed] = run.run_id
    rows = []
    for claim in CLAIMS:
        better, worse = planned.get(claim.setting(claim.better), {}), planned.get(claim.setting(claim.worse), {})
        paired = [s for s in sorted(set(better) & set(worse)) if better[s] in ranks and worse[s] in ranks]
        row = {"claim": claim.text, "table": claim.table, "dataset": claim.dataset, "basis": claim.basis,
               "paper_effect": paper_effect(claim, paper)}  # fmt: skip
        if paired:
            values = [np.array([source[side[s]] for s in paired]) for source in (observed, replicates)
                      for side in (better, worse)]  # fmt: skip
            row |= claim_interval(*values, pooled)  # better, worse (S,); their replicates (S, B)
            row["verdict"] = verdict(row["ci_low"], row["ci_high"], row["paper_effect"])
        else:
            row |= {key: math.nan for key in ("effect", "ci_low", "ci_high", "bootstrap_sd", "seed_sd", "sd", "df")}
            row |= {"verdict": "missing", "n_seeds": 0, "seed_variance": "no seed run for both settings"}
        used = [side[s] for s in paired for side in (better, worse)]
        row["runs"] = ";".join(used)
        row["missing"] = ";".join(r for side in (better, worse) for r in side.values() if r not in ranks)
        rows.append(row)
    return pd.DataFrame(rows)

