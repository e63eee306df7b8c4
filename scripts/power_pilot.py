"""Pilot runs of the tiny plan, on the validation folds only (issue 16's power analysis).

Stage ``schedule``: DP, DCR and THA+DCR (AudioCaps-like) trained for each candidate number of
epochs (the learning rate x0.1 after three quarters of them), seeds 0 and 1 (THA+DCR seed 0):
the validation R-sum chooses the schedule. Stage ``variance``: the settings of four kinds of claim
(DCR vs DP, DP vs DP (ResNet38), THA+DCR vs DCR, DCR K=8 vs K=6) with the chosen schedule, seeds
0..S-1; for each pair, `thadcr.experiments.power.variance_parts` and the half-width predicted for plans of 2-12
seeds on the 2,000 test clips, with the measured minutes per run.

Stage ``finetune``: the like-for-like measurement behind the frozen encoders. DP and DCR with the
whole tiny HTS-AT fine-tuned (``audio_frozen: false``, the earlier plan's schedule: 2 epochs, x0.1
for the second), seeds 0..S-1, against the frozen DP and DCR pilots of the variance stage: the SD of
the paired differences, the variance parts and the minutes per run of both, and the variance of a
seed-mean difference times the minutes it costs (smaller: more power per minute).

Every run tests its validation split (`thadcr.run.train.train(..., test_split="val")`), never the
test split. Runs go to results/tiny/pilot/runs/<name>/ (their checkpoints removed once finished;
finished runs are kept and skipped when the script runs again), the figures to
results/tiny/pilot/<stage>.json.

    .venv/bin/python scripts/power_pilot.py schedule --epochs 4 8 12
    .venv/bin/python scripts/power_pilot.py variance --epochs 8 --seeds 4
    .venv/bin/python scripts/power_pilot.py finetune --epochs 2 --seeds 4 --frozen-epochs 8
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PILOT = ROOT / "results" / "tiny" / "pilot"
TEST_CLIPS = 2000  # the embedded test splits: 10 folds of 200 clips
RESAMPLES = 2000

# name -> (dataset, config changes)
SETTINGS = {
    "DP": ("audiocaps", {"variant": "DP"}),
    "DCR": ("audiocaps", {"variant": "DCR"}),
    "THA+DCR": ("audiocaps", {"variant": "THA+DCR"}),
    "DP-resnet38": ("audiocaps", {"variant": "DP", "audio_encoder": "resnet38"}),
    "DCR-K6": ("audiocaps", {"variant": "DCR", "n_factors": 6}),
}
# the whole audio encoder fine-tuned (its features computed in every step, not cached)
FINETUNED = {
    "DP-finetuned": ("audiocaps", {"variant": "DP", "audio_frozen": False}),
    "DCR-finetuned": ("audiocaps", {"variant": "DCR", "audio_frozen": False}),
}
ALL_SETTINGS = {**SETTINGS, **FINETUNED}
PAIRS = [("DCR", "DP"), ("DP", "DP-resnet38"), ("THA+DCR", "DCR"), ("DCR", "DCR-K6")]
THA_SEEDS = 2  # THA scores 200 x 1,000 pairs per fold in about 20-30 s: its pilot runs 2 seeds


def seeds_of(name: str, seeds: int) -> int:
    return min(seeds, THA_SEEDS) if ALL_SETTINGS[name][1]["variant"].startswith("THA") else seeds


def config_of(name: str, epochs: int, seed: int):
    from thadcr.experiments.plan import config_for

    dataset, changes = ALL_SETTINGS[name]
    schedule = {"epochs": epochs, "lr_step": max(1, (3 * epochs) // 4), "seed": seed}
    return config_for("tiny", dataset, {**changes, **schedule})


def run_one(name: str, epochs: int, seed: int) -> str:
    """Train one pilot run (validation as its test split); returns its folder."""
    from thadcr.run.train import train

    out = PILOT / "runs" / f"{name}-e{epochs}-s{seed}"
    if not (out / "metrics.json").is_file():
        train(config_of(name, epochs, seed), out, resume=(out / "last.pt").is_file(), progress="none",
              test_split="val")
    for checkpoint in out.glob("*.pt"):
        checkpoint.unlink()
    return str(out)


def run_all(jobs: list[tuple[str, int, int]], workers: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_one, *job): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            print("done", future.result(), flush=True)


def read(name: str, epochs: int, seed: int) -> tuple[dict, dict]:
    out = PILOT / "runs" / f"{name}-e{epochs}-s{seed}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tested_on"] == "val", out
    with np.load(out / "test_ranks.npz") as npz:
        ranks = {key: npz[key] for key in ("t2a", "a2t", "caption_audio")}
    return metrics, ranks


def write(path: Path, payload: dict) -> None:
    from thadcr.files import atomic_write_json

    atomic_write_json(path, payload)
    print(json.dumps(payload, indent=1))


def schedule(epochs: list[int], workers: int) -> None:
    from thadcr.experiments.claims import rsum

    jobs = [(name, e, seed) for e in epochs for name, seeds in (("DP", 2), ("DCR", 2), ("THA+DCR", 1))
            for seed in range(seeds)]
    run_all(jobs, workers)
    rows = []
    for name, e, seed in jobs:
        metrics, ranks = read(name, e, seed)
        rows.append({"setting": name, "epochs": e, "seed": seed, "val_rsum": float(rsum(ranks)),
                     "minutes": metrics["wall_time_s"] / 60})
    write(PILOT / "schedule.json", {"what": "validation R-sum of the pilot runs by schedule", "runs": rows})


class Pilot:
    """The pilot runs' validation R-sums and their bootstrap replicates (one set of resampled clips)."""

    def __init__(self) -> None:
        self.observed, self.replicates, self.minutes = {}, {}, {}
        self.weights, self.clips = None, 0

    def add(self, name: str, epochs: int, seed: int) -> None:
        from thadcr.experiments.claims import bootstrap_weights, rsum

        metrics, ranks = read(name, epochs, seed)
        if self.weights is None:
            self.clips = int(ranks["caption_audio"].max()) + 1
            self.weights = bootstrap_weights(self.clips, RESAMPLES, np.random.default_rng(0))
        self.observed[name, epochs, seed] = float(rsum(ranks))
        self.replicates[name, epochs, seed] = rsum(ranks, self.weights)
        self.minutes.setdefault((name, epochs), []).append(metrics["wall_time_s"] / 60)

    def pair(self, better: str, worse: str, epochs: int, seeds: int) -> dict:
        """The variance parts of better - worse over seeds 0..seeds-1, and what they predict."""
        from thadcr.experiments.power import half_width, variance_parts

        paired = range(seeds)
        d = np.array([self.observed[better, epochs, s] - self.observed[worse, epochs, s] for s in paired])
        d_boot = np.stack([self.replicates[better, epochs, s] - self.replicates[worse, epochs, s] for s in paired])
        parts = variance_parts(d, d_boot, self.clips)
        return {
            "better": better, "worse": worse, "epochs": epochs, "pilot_effect": parts.effect,
            "pilot_seeds": len(paired), "pilot_clips": self.clips, "paired_differences": d.tolist(),
            "sd_paired_difference": float(d.std(ddof=1)), "sigma_a2": parts.test, "sigma_u2": parts.seed,
            "sigma_v2": parts.interaction,
            "predicted_half_width": {s: half_width(parts, s, TEST_CLIPS) for s in (2, 3, 4, 6, 8, 10, 12)},
        }

    def mean_minutes(self, name: str, epochs: int) -> float:
        return float(np.mean(self.minutes[name, epochs]))


def variance(epochs: int, seeds: int, workers: int) -> None:
    run_all([(name, epochs, seed) for name in SETTINGS for seed in range(seeds_of(name, seeds))], workers)
    pilot = Pilot()
    for name in SETTINGS:
        for seed in range(seeds_of(name, seeds)):
            pilot.add(name, epochs, seed)
    pairs = []
    for better, worse in PAIRS:
        pair = pilot.pair(better, worse, epochs, min(seeds_of(better, seeds), seeds_of(worse, seeds)))
        pairs.append({key: value for key, value in pair.items()
                      if key not in ("epochs", "paired_differences", "sd_paired_difference")})
    write(PILOT / "variance.json", {
        "what": f"variance parts of paired R-sum differences from {seeds} pilot seeds on the validation folds, "
                f"and the 95 % half-width they predict on the {TEST_CLIPS} test clips",
        "epochs": epochs, "pairs": pairs,
        "minutes_per_run": {name: pilot.mean_minutes(name, epochs) for name in SETTINGS},
    })


def finetune(epochs: int, seeds: int, frozen_epochs: int, workers: int) -> None:
    """DCR - DP with the audio encoder fine-tuned against the same pair frozen: power per minute."""
    frozen = [(name, frozen_epochs, seed) for name in ("DP", "DCR") for seed in range(seeds)]
    finetuned = [(name, epochs, seed) for name in FINETUNED for seed in range(seeds)]
    run_all(finetuned + frozen, workers)  # run_one skips finished runs (the variance stage's frozen ones)
    pilot = Pilot()
    for job in frozen + finetuned:
        pilot.add(*job)
    sides = {}
    for side, (better, worse, e) in {"frozen": ("DCR", "DP", frozen_epochs),
                                     "finetuned": ("DCR-finetuned", "DP-finetuned", epochs)}.items():
        pair = pilot.pair(better, worse, e, seeds)
        pair["minutes_per_run"] = {name: pilot.mean_minutes(name, e) for name in (better, worse)}
        pair_minutes = sum(pair["minutes_per_run"].values())
        seed_part = pair["sigma_u2"] + pair["sigma_v2"] / TEST_CLIPS  # what one more paired seed divides
        pair["minutes_per_paired_seed"] = pair_minutes
        pair["seed_variance_times_minutes"] = seed_part * pair_minutes
        pair["validation_rsum"] = {name: [pilot.observed[name, e, s] for s in range(seeds)] for name in (better, worse)}
        sides[side] = pair
    write(PILOT / "finetune.json", {
        "what": "DCR - DP on the validation folds with the tiny HTS-AT frozen (cached features) and fine-tuned "
                "(whole encoder): SD of paired differences, variance parts, minutes per run; "
                "seed_variance_times_minutes = (sigma_u^2 + sigma_v^2 / n_test) x minutes per paired seed, "
                "the seed-mean variance a minute of runs buys (smaller: more power per minute)",
        "test_clips": TEST_CLIPS, "sides": sides,
        "power_per_minute_ratio_frozen_over_finetuned":
            sides["finetuned"]["seed_variance_times_minutes"] / sides["frozen"]["seed_variance_times_minutes"],
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("schedule", "variance", "finetune"))
    parser.add_argument("--epochs", type=int, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--frozen-epochs", type=int, default=8, help="finetune: the frozen pilots' epochs")
    args = parser.parse_args(argv)
    if args.stage == "schedule":
        schedule(args.epochs, args.jobs)
    elif args.stage == "variance":
        variance(args.epochs[0], args.seeds, args.jobs)
    else:
        finetune(args.epochs[0], args.seeds, args.frozen_epochs, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
