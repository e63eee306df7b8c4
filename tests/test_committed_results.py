"""The committed tiny-profile results are repeatable: re-run one run and compare its test metrics.

The run re-trained here is Table 1's DP (HTS-AT) seed 0, the cheapest HTS-AT run of the plan.
Training on the CPU is deterministic for a given machine, thread count and library versions, so
the tolerance only absorbs floating-point differences between machines of the same kind:
TOLERANCE percentage points on every recall and mAP value.
"""

import json
from pathlib import Path

import pandas as pd

import pytest
import torch

from thadcr import reproduce
from thadcr.config import from_dict
from thadcr.train import train

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "results" / "tiny" / "runs" / "audiocaps-DP-htsat-K8-a0.01-b0.005-s0"
TOLERANCE = 1.0  # percentage points
KEYS = ("t2a_R1", "t2a_R5", "t2a_R10", "t2a_mAP10", "a2t_R1", "a2t_R5", "a2t_R10", "a2t_mAP10")


@pytest.mark.slow
def test_one_committed_tiny_run_reproduces(tmp_path, monkeypatch):
    committed = json.loads((RUN / "metrics.json").read_text())
    config = from_dict(committed["config"])
    data_root = ROOT / config.data_root
    if not data_root.is_dir():
        pytest.fail(f"{data_root} is missing: build the embedded data set first (thadcr data build)")
    monkeypatch.chdir(ROOT)
    threads = torch.get_num_threads()
    torch.set_num_threads(committed["machine"].get("torch_threads", threads))
    try:
        again = train(config, tmp_path / "again", progress=False)
    finally:
        torch.set_num_threads(threads)
    for key in KEYS:
        assert again["test"][key] == pytest.approx(committed["test"][key], abs=TOLERANCE), key


# The SpecAugment trial of the whole plan (reproduction notes, audio section), committed beside
# the default results: `thadcr reproduce --profile tiny --jobs 2 --results results/specaug
# --set specaug_time_masks=2 --set specaug_freq_masks=2`.
SPECAUG = {"specaug_time_masks": 2, "specaug_freq_masks": 2}


@pytest.mark.parametrize(("results", "overrides"), [("results", {}), ("results/specaug", SPECAUG)])
def test_committed_runs_were_made_with_the_plans_settings(results, overrides):
    runs = reproduce.plan("tiny", overrides=overrides)
    root = reproduce.runs_dir(ROOT / results, "tiny")
    assert all(reproduce.is_complete(root / run.run_id) for run in runs)
    reproduce.check_not_stale(runs, root)  # raises, listing the keys, if a run's config differs
    if overrides:  # the trial's runs are not the default plan's
        with pytest.raises(reproduce.ReproduceError, match="specaug_time_masks 2 -> 0"):
            reproduce.check_not_stale(reproduce.plan("tiny"), root)


def test_specaugment_trial_figures_of_the_notes():
    """The figures the audio notes and the Experiments page give for the trial, from the two
    committed learning.csv files (so the text fails this test if the results change)."""
    default, trial = (
        pd.read_csv(ROOT / results / "tiny" / "tables" / "learning.csv").set_index("run")
        for results in ("results", "results/specaug")
    )
    assert sorted(default.index) == sorted(trial.index) and len(default) == 31
    change = (trial.rsum - default.rsum).round(1)
    assert ((change > 0).sum(), (change < 0).sum()) == (17, 14)
    assert (change.min(), change.max()) == (-51.7, 23.9)
    assert (round(default.rsum.mean(), 1), round(trial.rsum.mean(), 1)) == (83.2, 79.1)
    at_least_3x = [int(((t.t2a_x_chance >= 3) & (t.a2t_x_chance >= 3)).sum()) for t in (default, trial)]
    assert at_least_3x == [27, 24] and round(trial.a2t_x_chance.min(), 1) == 1.8
