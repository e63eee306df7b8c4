"""`thadcr reproduce` (thadcr.experiments.plan, .execution, .tables; thadcr.interfaces.reproduce_cli): plan
expansion, sharding, execution bookkeeping, rendering and paper values, on synthetic results (nothing is
trained here; the train/tables/figures notebooks are tested in tests/test_notebooks.py)."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from synthetic import ALL_METRICS, SEEDS, metric_value, write_fake_run
from thadcr.config import VARIANT_PARTS
from thadcr.experiments import execution
from thadcr.experiments.dry_run import gpu_variant
from thadcr.experiments.execution import execute
from thadcr.experiments.plan import (
    METRICS, PANNS_CHECKPOINT, TABLE_DATASET, TABLE_ROWS, TABLES, ReproduceError, config_for,
    config_from_parameters, parse_shard, plan, runs_dir, select_shard, stale_settings,
)  # fmt: skip
from thadcr.experiments.tables import load_paper_results, paper_layout, render
from thadcr.interfaces import reproduce_cli
from thadcr.interfaces.cli import main

REPO = Path(__file__).resolve().parent.parent

# The 31 runs of the paper plan (Table 1 over 3 seeds, the rest once), written out by hand from
# the task's list of Tables 1-5.
_D = "K8-a0.01-b0.005"
EXPECTED_IDS = (
    [f"audiocaps-{v}-{e}-{_D}-s{s}" for v, e in [("DP", "resnet38"), ("DP", "htsat"), ("THA", "htsat"),
                                                 ("THA+DP", "htsat"), ("DCR", "htsat"), ("THA+DCR", "htsat")]
     for s in range(3)]
    + [f"clotho-{v}-htsat-{_D}-s0" for v in ("DP", "THA", "THA+DP", "DCR", "THA+DCR")]
    + ["audiocaps-DP+LD-htsat-K8-a0.01-b0.005-s0", "audiocaps-DP+LD+LA-htsat-K8-a0.01-b0.005-s0"]
    + ["audiocaps-DCR-htsat-K6-a0.01-b0.005-s0", "audiocaps-DCR-htsat-K10-a0.01-b0.005-s0"]
    + ["audiocaps-DCR-htsat-K8-a0.005-b0.005-s0", "audiocaps-DCR-htsat-K8-a0.02-b0.005-s0"]
    + ["audiocaps-DCR-htsat-K8-a0.01-b0.001-s0", "audiocaps-DCR-htsat-K8-a0.01-b0.01-s0"]
)  # fmt: skip
# The tiny plan: Tables 1-3's rows over seeds 0-7, the rows only Tables 4-5 use over 0-3, the THA rows over seed 0 (docs/decisions/power.md).
_TINY_SETTINGS = (
    [f"audiocaps-{v}-{e}-{_D}" for v, e in [("DP", "resnet38"), ("DP", "htsat"), ("DCR", "htsat")]]
    + [f"clotho-{v}-htsat-{_D}" for v in ("DP", "DCR")]
    + ["audiocaps-DP+LD-htsat-K8-a0.01-b0.005", "audiocaps-DP+LD+LA-htsat-K8-a0.01-b0.005"]
    + ["audiocaps-DCR-htsat-K6-a0.01-b0.005", "audiocaps-DCR-htsat-K10-a0.01-b0.005"]
    + ["audiocaps-DCR-htsat-K8-a0.005-b0.005", "audiocaps-DCR-htsat-K8-a0.02-b0.005"]
    + ["audiocaps-DCR-htsat-K8-a0.01-b0.001", "audiocaps-DCR-htsat-K8-a0.01-b0.01"]
)  # fmt: skip
TINY_IDS = ([f"{setting}-s{s}" for setting in _TINY_SETTINGS for s in range(8)]
            + [f"{d}-{v}-htsat-{_D}-s0" for d in ("audiocaps", "clotho") for v in ("THA", "THA+DP", "THA+DCR")])


# ----------------------------------------------------------------------------- plan
def test_plan_paper_has_the_31_expected_runs_once():
    runs = plan("paper")
    ids = [run.run_id for run in runs]
    assert len(EXPECTED_IDS) == 31
    assert len(ids) == 31 and len(set(ids)) == 31
    assert set(ids) == set(EXPECTED_IDS)
    shared = {run.run_id: run.tables for run in runs}
    assert shared["audiocaps-DCR-htsat-K8-a0.01-b0.005-s0"] == (1, 3, 4, 5)
    assert shared["audiocaps-DP-htsat-K8-a0.01-b0.005-s0"] == (1, 3)
    assert shared["audiocaps-DCR-htsat-K8-a0.01-b0.005-s1"] == (1,)
    assert shared["clotho-DCR-htsat-K8-a0.01-b0.005-s0"] == (2,)


def test_plan_tiny_seeds_every_table_and_its_tha_rows_once():
    ids = [run.run_id for run in plan("tiny")]
    assert len(TINY_IDS) == 13 * 8 + 6 == 110
    assert len(ids) == 110 and set(ids) == set(TINY_IDS)
    shared = {run.run_id: run.tables for run in plan("tiny")}
    assert shared["audiocaps-DCR-htsat-K8-a0.01-b0.005-s3"] == (1, 3, 4, 5)
    assert shared["audiocaps-DCR-htsat-K8-a0.01-b0.005-s7"] == (1, 3, 4, 5)
    assert shared["audiocaps-DCR-htsat-K6-a0.01-b0.005-s7"] == (4,)
    assert len(plan("tiny", seeds=4)) == 13 * 4 + 6  # --seeds sets every seeded table alike
    more = {run.run_id for run in plan("tiny", tha_seeds=2)}
    assert more - set(ids) == {f"{d}-{v}-htsat-{_D}-s1" for d in ("audiocaps", "clotho") for v in ("THA", "THA+DP", "THA+DCR")}
    assert len(plan("tiny", seeds=2, tha_seeds=5)) == 13 * 2 + 6 * 2  # THA rows at most --seeds


def test_plan_ids_are_stable_and_independent_of_table_order():
    first = [r.run_id for r in plan("paper")]
    assert first == [r.run_id for r in plan("paper")]
    assert first == [r.run_id for r in plan("paper", tables=(5, 4, 3, 2, 1))]
    tiny = [r.run_id for r in plan("tiny", seeds=3, tha_seeds=3)]
    assert set(first) <= set(tiny)  # ids name settings and seeds, not the profile
    # a sub-plan names its runs exactly as the full plan does
    assert {r.run_id for r in plan("paper", tables=(3, 4))} <= set(first)
    assert len(plan("paper", tables=(3, 4))) == 4 + 2
    assert len(plan("paper", seeds=1)) == 31 - 12
    assert len(plan("paper", tables=(1,), seeds=5)) == 30


def test_plan_settings_match_the_run_id():
    for run in plan("tiny"):
        assert run.run_id == (
            f"{run.dataset}-{run.variant}-{run.audio_encoder}-K{run.n_factors}-a{run.alpha:g}-b{run.beta:g}-s{run.seed}"
        )
        params = run.parameters(Path("/x") / run.run_id, resume=False)
        assert params["overrides"] == {"audio_encoder": run.audio_encoder}
        assert (params["variant"], params["seed"], params["n_factors"]) == (run.variant, run.seed, run.n_factors)


@pytest.mark.parametrize(
    "kwargs, word",
    [({"profile": "huge"}, "huge"), ({"profile": "tiny", "tables": (6,)}, "6"),
     ({"profile": "tiny", "seeds": 0}, "seeds"), ({"profile": "tiny", "tables": ()}, "tables")],
)  # fmt: skip
def test_plan_rejects_bad_input(kwargs, word):
    with pytest.raises(ReproduceError, match=word):
        plan(**kwargs)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 31, 40])
def test_shards_partition_the_plan_round_robin(n):
    runs = plan("tiny")
    shards = [select_shard(runs, f"{i}/{n}") for i in range(n)]
    seen = [run.run_id for shard in shards for run in shard]
    assert sorted(seen) == sorted(r.run_id for r in runs)  # every run exactly once
    for position, run in enumerate(runs):  # literal round robin
        assert run in shards[position % n]


@pytest.mark.parametrize("text", ["3/3", "a/b", "-1/2", "1", "1/0"])
def test_bad_shard_is_refused(text):
    with pytest.raises(ReproduceError, match="shard"):
        parse_shard(text)


def test_config_for_maps_profiles_and_datasets():
    tiny = config_for("tiny", "clotho", {"variant": "DCR", "n_factors": 10, "epochs": 2})
    assert (tiny.data_root, tiny.variant, tiny.n_factors, tiny.epochs) == ("data/embedded/clotho", "DCR", 10, 2)
    assert tiny.n_factors == 10 and tiny.joint_dim // tiny.n_factors == 6  # tiny joint_dim 64, K=10: 6-d factors
    assert config_for("tiny", "audiocaps").data_root == "data/embedded/audiocaps"
    paper = config_for("paper", "audiocaps", {"audio_encoder": "resnet38"})
    assert paper.audio_checkpoint == PANNS_CHECKPOINT and paper.data_root == "data/audiocaps"
    assert config_for("paper", "clotho").audio_checkpoint.endswith("HTSAT_AudioSet_Saved_1.ckpt")
    with pytest.raises(ReproduceError, match="dataset"):
        config_for("tiny", "librispeech")


# ----------------------------------------------------------------------------- render
def test_render_mean_std_and_paper_against_a_literal_computation(rendered):
    results, runs, missing, _ = rendered
    paper = pd.read_csv(REPO / "data" / "paper_results.csv")
    for table in TABLES:
        frame = pd.read_csv(results / "tiny" / "tables" / f"table{table}.csv", keep_default_na=False, na_values=[""])
        assert len(frame) == len(TABLE_ROWS[table]) * len(ALL_METRICS)
        for method, settings in TABLE_ROWS[table]:
            dataset = TABLE_DATASET[table]
            group = [r for r in runs if r.dataset == dataset and all(getattr(r, k) == v for k, v in settings.items())]
            done = [r for r in group if r.run_id not in missing]
            for metric in ALL_METRICS:
                row = frame[(frame.method == method) & (frame.metric == metric)].iloc[0]
                values = [metric_value(r, metric) for r in done]
                assert row.n_runs == len(values)
                if not values:
                    assert math.isnan(row.ours_mean)
                    continue
                mean = sum(values) / len(values)
                assert row.ours_mean == pytest.approx(mean, abs=1e-4)
                if len(values) > 1:
                    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
                    assert row.ours_std == pytest.approx(math.sqrt(var), abs=1e-4)
                else:
                    assert math.isnan(row.ours_std)
                ref = paper[(paper.table == table) & (paper.method == method) & (paper.metric == metric)]
                if metric in METRICS:
                    assert row.paper_mean == pytest.approx(float(ref["mean"].iloc[0]))
                else:
                    assert ref.empty and math.isnan(row.paper_mean)


def test_render_shares_seeds_across_tables_and_lists_missing_runs(rendered):
    results, _, missing, summary = rendered
    t3 = pd.read_csv(results / "tiny" / "tables" / "table3.csv", keep_default_na=False, na_values=[""])
    dcr = t3[(t3.method == "DCR") & (t3.metric == "t2a_R1")].iloc[0]
    assert dcr.n_runs == 3 and dcr.runs.count(";") == 2  # the three Table 1 seeds
    t1 = pd.read_csv(results / "tiny" / "tables" / "table1.csv", keep_default_na=False, na_values=[""])
    tha = t1[(t1.method == "THA") & (t1.metric == "a2t_R5")].iloc[0]
    assert tha.n_runs == 2 and tha.missing == "audiocaps-THA-htsat-K8-a0.01-b0.005-s2"
    order = [r.run_id for r in plan("tiny", **SEEDS)]
    assert summary["runs"] == {"planned": 57, "complete": 55, "missing": sorted(missing, key=order.index)}
    on_disk = json.loads((results / "tiny" / "summary.json").read_text())
    assert on_disk["runs"]["complete"] == 55 and on_disk["profile"] == "tiny"
    walls = [100.0 + i for i, r in enumerate(plan("tiny", **SEEDS)) if r.run_id not in missing]
    assert on_disk["wall_time_s"]["sum_of_runs"] == pytest.approx(sum(walls))
    assert on_disk["wall_time_s"]["execute_elapsed"] == pytest.approx(1244.5)
    assert on_disk["machine"]["cpu_count"] >= 1 and on_disk["machine"]["run_devices"] == ["cpu"]
    assert on_disk["datasets"]["clotho"]["data_root"] == "data/embedded/clotho"
    assert on_disk["versions"]["runs"] == {"torch": "x"}


def test_render_names_a_broken_metrics_file(tmp_path):
    run = plan("tiny")[0]
    folder = write_fake_run(runs_dir(tmp_path, "tiny"), run)
    (folder / "metrics.json").write_text(json.dumps({"test": {"t2a_R1": 1.0}}))
    with pytest.raises(ReproduceError, match=r"metrics\.json.*t2a_R5"):
        render("tiny", tmp_path)
    (folder / "metrics.json").write_text("{not json")
    with pytest.raises(ReproduceError, match="not valid JSON"):
        render("tiny", tmp_path)


def test_paper_layout_formats_ours_paper_and_rsum():
    rows = [{"method": "A", "metric": m, "ours_mean": 10.0 + i, "ours_std": 0.26, "paper_mean": 20.0 + i,
             "paper_std": math.nan} for i, m in enumerate(METRICS)]
    rows += [{"method": "B", "metric": m, "ours_mean": math.nan if m == "a2t_R10" else 1.0, "ours_std": math.nan,
              "paper_mean": 2.0, "paper_std": 0.6} for m in METRICS]
    rows += [{"method": "A", "metric": "t2a_mAP10", "ours_mean": 1.0, "ours_std": math.nan, "paper_mean": math.nan,
              "paper_std": math.nan}]
    out = paper_layout(pd.DataFrame(rows))
    assert out.shape == (4, 7) and list(out.index) == [("A", "ours"), ("A", "paper"), ("B", "ours"), ("B", "paper")]
    assert out.loc[("A", "ours"), ("Text-to-Audio", "R@1")] == "10.0 ± 0.3"
    assert out.loc[("A", "paper"), ("Audio-to-Text", "R@10")] == "25.0"
    assert out.loc[("B", "paper"), ("Text-to-Audio", "R@5")] == "2.0 ± 0.6"
    assert out.loc[("A", "ours"), ("", "R-sum")] == "75.0" and out.loc[("A", "paper"), ("", "R-sum")] == "135.0"
    assert out.loc[("B", "ours"), ("Audio-to-Text", "R@10")] == "missing"
    assert out.loc[("B", "ours"), ("", "R-sum")] == "missing"  # a missing recall leaves no sum


# ----------------------------------------------------------------------------- paper_results.csv
def test_paper_results_csv_shape_and_cells():
    frame = load_paper_results()
    assert list(frame.columns) == ["table", "method", "metric", "mean", "std"]
    assert frame.groupby("table").size().to_dict() == {1: 36, 2: 30, 3: 24, 4: 18, 5: 36}
    assert not frame.duplicated(["table", "method", "metric"]).any()
    # cells checked by hand against the paper's Tables 1-5
    cells = {
        (1, "THA+DCR", "t2a_R1"): (41.1, 0.6), (1, "DP (ResNet38)", "a2t_R1"): (39.4, 1.0),
        (1, "DCR", "a2t_R10"): (89.9, 0.9), (1, "THA+DP", "t2a_R10"): (85.2, 0.3),
        (2, "DP (HTSAT)", "t2a_R1"): (11.4, None), (2, "THA+DCR", "a2t_R10"): (47.8, None),
        (2, "DCR", "a2t_R5"): (34.2, None), (3, "DP+LD", "t2a_R1"): (39.1, None),
        (3, "DP+LD+LA", "a2t_R5"): (78.6, None), (3, "DCR", "t2a_R1"): (40.6, None),
        (4, "K=10", "a2t_R10"): (89.8, None), (4, "K=6", "t2a_R10"): (84.0, None),
        (5, "alpha=0.02", "a2t_R5"): (79.1, None), (5, "beta=0.001", "t2a_R1"): (40.2, None),
        (5, "beta=0.01", "a2t_R1"): (46.4, None),
    }  # fmt: skip
    for (table, method, metric), (mean, std) in cells.items():
        row = frame[(frame.table == table) & (frame.method == method) & (frame.metric == metric)].iloc[0]
        assert row["mean"] == pytest.approx(mean)
        assert (math.isnan(row["std"]) if std is None else row["std"] == pytest.approx(std))
    assert frame.loc[frame.table > 1, "std"].isna().all() and frame.loc[frame.table == 1, "std"].notna().all()
    # every row of the plan has its 6 paper values, and nothing else is in the file
    labels = {(t, m) for t, rows in TABLE_ROWS.items() for m, _ in rows}
    assert set(zip(frame.table, frame.method)) == labels
    assert set(frame.metric) == set(METRICS)


# ----------------------------------------------------------------------------- execute
class StubExecutor:
    """Stands in for papermill: records calls, writes the output notebook and (unless told) metrics."""

    def __init__(self, fail=(), no_metrics=()):
        self.calls, self.fail, self.no_metrics = [], set(fail), set(no_metrics)

    def __call__(self, notebook, output, parameters, log):
        assert notebook.suffix == ".ipynb" and notebook.is_file()
        run_dir = Path(parameters["out_dir"])
        run_id = run_dir.name
        self.calls.append((run_id, parameters["resume"]))
        output.write_text(json.dumps({"cells": [], "run": run_id}))
        log.write_text("stub\n")
        if run_id in self.fail:
            return 1
        if run_id not in self.no_metrics:
            config = config_from_parameters(parameters)
            metrics = {"test": {m: 1.0 for m in ALL_METRICS}, "config": config.to_dict(), "new": True}
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return 0


def test_execute_runs_skips_resumes_and_never_overwrites(tmp_path):
    runs = plan("tiny", tables=(4,), seeds=1)  # 3 runs
    root = runs_dir(tmp_path, "tiny")
    finished, interrupted, fresh = runs
    write_fake_run(root, finished)
    before = (root / finished.run_id / "metrics.json").read_bytes()
    (root / interrupted.run_id).mkdir(parents=True)
    (root / interrupted.run_id / "last.pt").write_bytes(b"checkpoint")
    stub = StubExecutor()
    record = execute(runs, tmp_path, executor=stub, progress=False)
    assert sorted(stub.calls) == sorted([(interrupted.run_id, True), (fresh.run_id, False)])
    assert record["skipped"] == [finished.run_id]
    assert sorted(record["done"]) == sorted([interrupted.run_id, fresh.run_id])
    assert (root / finished.run_id / "metrics.json").read_bytes() == before
    for run in (interrupted, fresh):
        assert (root / run.run_id / "run.ipynb").is_file()
        assert not (root / run.run_id / "run.partial.ipynb").exists()
    again = StubExecutor()
    second = execute(runs, tmp_path, executor=again, progress=False)
    assert again.calls == [] and len(second["skipped"]) == 3 and second["done"] == []
    records = sorted((tmp_path / "tiny" / "executions").glob("*.json"))  # the call that ran nothing left none
    assert len(records) == 1 and json.loads(records[0].read_text())["elapsed_s"] >= 0


def test_execute_refuses_finished_runs_made_with_other_settings(tmp_path):
    runs = plan("tiny", tables=(4,), seeds=1)  # 3 runs
    root = runs_dir(tmp_path, "tiny")
    old, current, missing = runs
    folder = write_fake_run(root, old)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["config"]["epochs"] = 7
    del metrics["config"]["joint_dim"]  # not recorded, and the plan's value (64) is not the default
    del metrics["config"]["specaug_time_masks"]  # added to Config after the run; the plan keeps the default
    (folder / "metrics.json").write_text(json.dumps(metrics))
    before = (folder / "metrics.json").read_bytes()
    write_fake_run(root, current)
    stub = StubExecutor()
    with pytest.raises(ReproduceError) as error:
        execute(runs, tmp_path, executor=stub, progress=False)
    message = str(error.value)
    planned_epochs = config_for("tiny", "audiocaps").epochs
    assert str(folder) in message and f"epochs 7 -> {planned_epochs}" in message
    assert "joint_dim '<absent>' -> 64" in message
    assert "specaug" not in message
    assert current.run_id not in message and "Move or delete" in message
    assert stub.calls == [] and (folder / "metrics.json").read_bytes() == before  # nothing ran, nothing rewritten
    assert stale_settings(current, root / current.run_id) == {}
    (root / missing.run_id).mkdir()
    (root / missing.run_id / "metrics.json").write_text(json.dumps({"test": {}}))  # no recorded config
    del runs[0]
    with pytest.raises(ReproduceError, match="cannot read the run's recorded config"):
        execute(runs, tmp_path, executor=stub, progress=False)


def disk_state(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: (SHA-256 of its content, modification time in ns)."""
    return {str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}  # fmt: skip


def test_a_reproduce_with_every_run_complete_changes_nothing_on_disk(rendered, monkeypatch, capsys):
    """`bash scripts/main.sh` on an up-to-date clone: `thadcr reproduce --profile tiny --jobs 2` with
    every run finished and the tables rendered trains nothing and writes nothing."""
    results, runs, missing, _ = rendered
    root = runs_dir(results, "tiny")
    for run in runs:
        if run.run_id in missing:
            write_fake_run(root, run)
    render("tiny", results, **SEEDS)  # the committed state: every run finished, tables rendered from them
    stub = StubExecutor()
    monkeypatch.setattr(execution, "papermill_executor", stub)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # --jobs 2 would set it for this process otherwise
    command = ["reproduce", "--profile", "tiny", "--jobs", "2", "--results", str(results), "--seeds", "3", "--tha-seeds", "3"]
    before = disk_state(results)
    assert main(command) == 0
    assert stub.calls == [] and "0 run(s) done, 57 already complete, 0 failed" in capsys.readouterr().out
    assert disk_state(results) == before  # no new execution record, no table or summary.json rewritten
    assert main(["reproduce", "--profile", "tiny", "--results", str(results), "--render-only", "--seeds", "3",
                 "--tha-seeds", "3"]) == 0
    assert disk_state(results) == before
    # a changed run still reaches its table and the summary (with a new time stamp)
    changed = root / runs[0].run_id / "metrics.json"
    metrics = json.loads(changed.read_text())
    metrics["test"]["t2a_R1"] += 1.0
    metrics["wall_time_s"] += 1.0
    changed.write_text(json.dumps(metrics))
    assert main(command) == 0
    after = disk_state(results)
    rewritten = {name for name in after if after[name] != before.get(name)}
    assert {"tiny/tables/table1.csv", "tiny/summary.json", f"tiny/runs/{runs[0].run_id}/metrics.json"} <= rewritten
    assert not any(name.startswith("tiny/executions/") for name in rewritten)
    assert "tiny/tables/table2.csv" not in rewritten  # its runs did not change


def test_gpu_variant_reads_the_variant_table():
    assert {v: gpu_variant(v) for v in VARIANT_PARTS} == {
        "DP": "DP", "THA": "THA", "THA+DP": "THA", "DCR": "DP", "THA+DCR": "THA+DCR", "DP+LD": "DP",
        "DP+LD+LA": "DP"}  # fmt: skip


def test_plan_overrides_reach_every_run_and_refuse_plan_keys():
    runs = plan("tiny", tables=(4,), seeds=1, overrides={"epochs": 6, "specaug_time_masks": 2})
    for run in runs:
        assert run.parameters(Path("x"), False)["overrides"] == {
            "audio_encoder": "htsat", "epochs": 6, "specaug_time_masks": 2}  # fmt: skip
        config = run.config()
        assert (config.epochs, config.specaug_time_masks, config.n_factors) == (6, 2, run.n_factors)
    assert [r.run_id for r in runs] == [r.run_id for r in plan("tiny", tables=(4,), seeds=1)]  # same ids
    with pytest.raises(ReproduceError, match="the plan sets variant"):
        plan("tiny", overrides={"variant": "DP"})
    with pytest.raises(ReproduceError, match="unknown key.*nonsense.*Valid keys"):
        plan("tiny", overrides={"nonsense": 1})
    with pytest.raises(ReproduceError, match="specaug_time_masks must be 0 or positive"):
        plan("tiny", overrides={"specaug_time_masks": -2})  # a bad value stops the plan, not each run


def test_reproduce_command_set_option(tmp_path, capsys):
    args = ["--profile", "tiny", "--tables", "4", "--results", str(tmp_path), "--set", "variant=DP"]
    assert main(["reproduce", *args]) == 2
    assert "the plan sets variant" in capsys.readouterr().err
    assert main(["reproduce", *args[:-1], "epochs"]) == 2
    assert "not of the form key=value" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()  # refused before anything ran


def test_execute_reports_failures_and_goes_on(tmp_path, capsys):
    runs = plan("tiny", tables=(5,), seeds=1)  # 5 runs
    broken, silent = runs[1].run_id, runs[3].run_id
    stub = StubExecutor(fail={broken}, no_metrics={silent})
    record = execute(runs, tmp_path, jobs=2, executor=stub, progress=False)
    assert len(stub.calls) == 5 and len(record["done"]) == 3
    assert set(record["failed"]) == {broken, silent}
    notebook = runs_dir(tmp_path, "tiny") / broken / "run.ipynb"
    assert str(notebook) in record["failed"][broken] and notebook.is_file()
    assert "no metrics.json" in record["failed"][silent]
    assert broken in capsys.readouterr().err
    retry = StubExecutor()  # failed runs are retried (resumed) by the next call
    execute(runs, tmp_path, executor=retry, progress=False)
    assert sorted(retry.calls) == sorted([(broken, True), (silent, True)])


def test_execute_takes_only_its_shard(tmp_path):
    runs = plan("tiny")
    stub = StubExecutor()
    record = execute(runs, tmp_path, shard="2/5", executor=stub, progress=False)
    assert [c[0] for c in stub.calls] == [r.run_id for r in runs[2::5]]
    assert record["shard"] == "2/5" and record["done"] == [r.run_id for r in runs[2::5]]


def test_execute_survives_an_executor_crash(tmp_path):
    def crash(notebook, output, parameters, log):
        raise OSError("kernel died")

    record = execute(plan("tiny", tables=(4,), seeds=1), tmp_path, executor=crash, progress=False)
    assert len(record["failed"]) == 3 and all("kernel died" in m for m in record["failed"].values())


def test_execute_refuses_bad_arguments(tmp_path):
    with pytest.raises(ReproduceError, match="no runs"):
        execute([], tmp_path, executor=StubExecutor())
    with pytest.raises(ReproduceError, match="jobs"):
        execute(plan("tiny", tables=(4,), seeds=1), tmp_path, jobs=0, executor=StubExecutor())
    with pytest.raises(ReproduceError, match="one profile"):
        execute(plan("tiny", tables=(4,), seeds=1) + plan("paper", tables=(4,)), tmp_path, executor=StubExecutor())


def test_command_line_returns_nonzero_after_a_failure(tmp_path, monkeypatch):
    runs = plan("tiny", tables=(4,), seeds=1)
    stub = StubExecutor(fail={runs[0].run_id})
    monkeypatch.setattr(execution, "papermill_executor", stub)
    filled = []  # the real caches take minutes in a fresh clone; this test is about the exit code
    monkeypatch.setattr(execution, "fill_caches", lambda todo, jobs, progress=True: filled.append(len(todo)))
    parser = argparse.ArgumentParser()
    reproduce_cli.add_arguments(parser)
    args = parser.parse_args(["--profile", "tiny", "--tables", "4", "--seeds", "1", "--results", str(tmp_path)])
    # the stub's metrics.json lack the fields render needs beyond "test": render still works
    assert reproduce_cli.run_from_args(args) == 1
    assert len(stub.calls) == 3 and (tmp_path / "tiny" / "tables" / "table4.csv").is_file()
    assert filled == [3]  # the papermill path fills the caches once, before the runs
    assert reproduce_cli.run_from_args(parser.parse_args(["--profile", "tiny", "--tables", "9", "--results", str(tmp_path)])) == 2


def test_render_writes_the_claims_table(rendered):
    """Every claim gets a row; runs written without per-query ranks leave their claims undecided as
    'missing' (thadcr.experiments.claims computes the intervals; tests/test_claims.py checks them)."""
    from thadcr.experiments.claims import CLAIMS

    results, _, _, _ = rendered
    claims = pd.read_csv(results / "tiny" / "tables" / "claims.csv")
    assert len(claims) == len(CLAIMS)
    assert {"claim", "table", "paper_effect", "effect", "ci_low", "ci_high", "verdict"} <= set(claims.columns)
    assert set(claims.verdict) == {"missing"} and (claims.paper_effect > 0).all()


def test_chance_recall_against_counting_every_ranking():
    from itertools import permutations

    from thadcr.run.metrics import chance_recall

    for n, relevant, k in ((6, 1, 2), (6, 2, 2), (5, 3, 1), (4, 2, 4)):
        rankings = list(permutations(range(n)))  # items 0..relevant-1 are the correct ones
        hits = sum(any(item < relevant for item in ranking[:k]) for ranking in rankings)
        assert chance_recall(n, relevant, k) == pytest.approx(100 * hits / len(rankings))
    assert chance_recall(200, 1, 10) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        chance_recall(5, 6, 1)


def test_render_writes_each_runs_recall_against_chance(rendered):
    tmp_path, runs, missing, _ = rendered
    learning = pd.read_csv(tmp_path / "tiny" / "tables" / "learning.csv")
    assert set(learning.run) == {run.run_id for run in runs} - missing
    row = learning.iloc[0]
    test = json.loads((runs_dir(tmp_path, "tiny") / row.run / "metrics.json").read_text())["test"]
    a2t_chance = 100 * (1 - math.comb(995, 10) / math.comb(1000, 10))  # 5 of 1000 captions correct
    assert row.t2a_chance == pytest.approx(5.0) and row.a2t_chance == pytest.approx(a2t_chance, abs=0.01)
    assert row.t2a_x_chance == pytest.approx(test["t2a_R10"] / 5.0, abs=0.01)
    assert row.a2t_x_chance == pytest.approx(test["a2t_R10"] / a2t_chance, abs=0.01)
    assert row.rsum == pytest.approx(sum(test[f"{d}_R{k}"] for d in ("t2a", "a2t") for k in (1, 5, 10)), abs=0.01)


def test_an_interrupted_execute_still_records_what_it_did(tmp_path):
    """Ctrl-C (or a scheduler's SIGTERM, turned into KeyboardInterrupt) ends the call, but its
    execution record, with the runs done so far and "interrupted", is written."""
    runs = plan("tiny", tables=(4,), seeds=1)
    stub = StubExecutor()

    def interrupting(notebook, output, parameters, log):
        if Path(parameters["out_dir"]).name == runs[1].run_id:
            raise KeyboardInterrupt
        return stub(notebook, output, parameters, log)

    with pytest.raises(KeyboardInterrupt):
        execute(runs, tmp_path, executor=interrupting, progress=False)
    records = [json.loads(p.read_text()) for p in (tmp_path / "tiny" / "executions").glob("*.json")]
    assert len(records) == 1 and records[0]["interrupted"] is True
    assert records[0]["done"] == [runs[0].run_id] and records[0]["elapsed_s"] >= 0


def test_drop_figures_keeps_text_and_replaces_images(tmp_path):
    """An executed run notebook keeps its text outputs; each image becomes one line of text."""
    notebook = {"cells": [
        {"cell_type": "code", "outputs": [
            {"output_type": "stream", "name": "stdout", "text": ["epoch 1\n"]},
            {"output_type": "display_data", "metadata": {"image/png": {"width": 600}},
             "data": {"image/png": "iVBORw0KGgo=", "text/plain": ["<Figure size 1100x400>"]}},
        ]},
        {"cell_type": "markdown", "source": ["# ü"]},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "run.ipynb"
    path.write_text(json.dumps(notebook))
    execution.drop_figures(path)
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["outputs"][0] == notebook["cells"][0]["outputs"][0]
    assert cells[0]["outputs"][1] == {"output_type": "display_data", "metadata": {},
                                      "data": {"text/plain": [execution.FIGURE_NOT_KEPT]}}
    assert cells[1] == notebook["cells"][1]
