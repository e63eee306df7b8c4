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


def test_figures_of_the_experiments_page():
    """The figures book/experiments.md and the README give for the committed tiny runs, from the
    files `thadcr reproduce` wrote (so the text fails this test when the results change)."""
    learning = pd.read_csv(ROOT / "results" / "tiny" / "tables" / "learning.csv").set_index("run")
    assert len(learning) == 31 and round(learning.rsum.mean(), 1) == 103.7
    ranges = [round(learning[f"{d}_x_chance"].agg(f), 1) for d in ("t2a", "a2t") for f in ("min", "max")]
    assert ranges == [5.8, 7.9, 3.6, 5.7]
    assert ((learning.t2a_x_chance >= 3) & (learning.a2t_x_chance >= 3)).all()

    def seeds(setting):
        return [learning.rsum[f"audiocaps-{setting}-K8-a0.01-b0.005-s{s}"] for s in range(3)]

    assert seeds("THA+DP-htsat") == [108.1, 103.1, 85.8]
    assert sorted(seeds("DP-resnet38"), reverse=True) == [112.3, 108.1, 98.0]
    spreads = {s: max(seeds(s)) - min(seeds(s)) for s in ("DP-resnet38", "DP-htsat", "THA-htsat", "THA+DP-htsat",
                                                          "DCR-htsat", "THA+DCR-htsat")}
    assert round(max(spreads.values()), 1) == 22.3
    assert (min(seeds("DP-htsat")), max(seeds("DP-htsat"))) == (87.8, 93.3)
    assert (min(seeds("DCR-htsat")), max(seeds("DCR-htsat"))) == (97.6, 100.5)

    claims = pd.read_csv(ROOT / "results" / "tiny" / "tables" / "orderings.csv").set_index("claim")
    table1 = claims[claims.table == 1]
    assert dict(table1.holds_in_ours) == {
        "DP (ResNet38) < DP (HTSAT)": False, "DP (HTSAT) < THA < THA+DP": True,
        "DP (HTSAT) < DCR": True, "THA+DCR is the best method": False,
    }  # fmt: skip
    assert not claims[claims.table > 1].holds_in_ours.any()
    beyond_spread = table1[table1.holds_in_ours & (table1.smallest_gap > table1.spread)]
    assert list(beyond_spread.index) == ["DP (HTSAT) < DCR"]
    assert table1.ours_rsum["THA+DCR is the best method"] == (
        "THA+DCR 95.4; DP (ResNet38) 106.1; DP (HTSAT) 91.2; THA 92.2; THA+DP 99.0; DCR 99.4")
    assert claims.ours_rsum["K = 8 is the best number of factors"] == "K=8 99.4; K=6 92.5; K=10 103.8"
    clotho = {r: learning.rsum[f"clotho-{r}-htsat-K8-a0.01-b0.005-s0"] for r in ("THA", "THA+DCR")}
    assert clotho == {"THA": 141.07, "THA+DCR": 140.67}
    table3 = [learning.rsum[f"audiocaps-{v}-htsat-K8-a0.01-b0.005-s0"] for v in ("DP+LD", "DP+LD+LA")]
    assert table3 == [95.9, 102.3]


def test_time_figures_of_the_readme():
    """The README's time figures of the tiny reproduction, from its summary and run files."""
    summary = json.loads((ROOT / "results" / "tiny" / "summary.json").read_text())
    assert round(summary["wall_time_s"]["execute_elapsed"] / 60, 1) == 27.7
    assert round(summary["wall_time_s"]["sum_of_runs"] / 60, 1) == 52.8
    assert summary["machine"]["cpu_count"] == 2 and summary["runs"]["complete"] == 31
    times = [json.loads(p.read_text())["wall_time_s"] for p in (RUN.parent).glob("*/metrics.json")]
    assert len(times) == 31 and (round(min(times)), round(max(times))) == (64, 242)


def test_resnet38_log_behind_the_last_epoch_rule():
    """The model notes: ResNet38 seed 0's validation t2a R-sum is 50.1 after epoch 1 and 48.1
    after epoch 2, so peers' rule would test epoch 1; the committed run tests epoch 2."""
    run = RUN.parent / "audiocaps-DP-resnet38-K8-a0.01-b0.005-s0"
    log = pd.read_csv(run / "log.csv")
    scores = (log.val_t2a_R1 + log.val_t2a_R5 + log.val_t2a_R10).round(1).tolist()
    assert scores == [50.1, 48.1]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["model_selection"] == "last" and metrics["best_epoch"] == 2
