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


def test_committed_runs_were_made_with_the_plans_settings():
    runs = reproduce.plan("tiny")
    root = reproduce.runs_dir(ROOT / "results", "tiny")
    assert all(reproduce.is_complete(root / run.run_id) for run in runs)
    reproduce.check_not_stale(runs, root)  # raises, listing the keys, if a run's config differs
