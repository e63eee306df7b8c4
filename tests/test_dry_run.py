"""`thadcr reproduce --dry-run` (states, shards, steps and estimates; nothing written), `--render-only`,
`--launcher`, and the SLURM recipe scripts/slurm_reproduce.sh (shard arithmetic, requeue, render step).

The tiny plan's finished runs are the committed ones (results/tiny/runs): their metrics.json carry
the configs, data sizes and wall times the estimate is checked against."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from thadcr.interfaces import cli
from thadcr.experiments.dry_run import GPU_CHECK_COMMAND, GPU_CHECK_FILE
from thadcr.experiments.execution import execute, launcher_executor, train_arguments
from thadcr.experiments.plan import METRICS, check_not_stale, plan, runs_dir, select_shard
from thadcr.config import make_config

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results" / "tiny" / "runs"
SCRIPT = REPO / "scripts" / "slurm_reproduce.sh"
TINY_TRAIN = {"audiocaps": 3600, "clotho": 6000}  # training captions of the embedded sets (committed runs)


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the SHA-256 of its content ("dir" for a folder)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(root.rglob("*"))
    }


def copy_runs(results: Path, run_ids, files=("metrics.json", "log.csv")) -> Path:
    """Copy committed tiny runs (only ``files`` of each) into ``results``; returns the runs folder."""
    root = runs_dir(results, "tiny")
    for run_id in run_ids:
        (root / run_id).mkdir(parents=True)
        for name in files:
            if (COMMITTED / run_id / name).is_file():
                shutil.copy(COMMITTED / run_id / name, root / run_id / name)
    return root


def listing(capsys, *args: str) -> tuple[int, str]:
    """(exit status, stdout) of `thadcr reproduce ARGS` run in this process."""
    status = cli.main(["reproduce", *args])
    return status, capsys.readouterr().out


def json_listing(capsys, *args: str) -> dict:
    status, out = listing(capsys, *args, "--dry-run", "--format", "json")
    assert status == 0
    return json.loads(out)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Work in an empty folder: no data/embedded, no benchmarks/out (the paths are relative)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_states(elsewhere):
    """Tiny results with every state: 27 committed runs done, one stale (epochs changed), one
    unreadable, one in progress after epoch 1, one missing."""
    runs = plan("tiny")
    ids = [run.run_id for run in runs]
    stale, unreadable, partial, missing = ids[4], ids[7], ids[20], ids[30]
    root = copy_runs(elsewhere / "results", [i for i in ids if i not in (partial, missing)])
    metrics = json.loads((root / stale / "metrics.json").read_text())
    metrics["config"]["epochs"] = 3
    (root / stale / "metrics.json").write_text(json.dumps(metrics))
    (root / unreadable / "metrics.json").write_text("{}")
    (root / partial).mkdir()
    log = (COMMITTED / partial / "log.csv").read_text().splitlines()
    (root / partial / "log.csv").write_text("\n".join(log[:2]) + "\n")  # header and epoch 1
    special = {"stale": stale, "unreadable": unreadable, "partial": partial, "missing": missing}
    return elsewhere / "results", runs, special


# ----------------------------------------------------------------------------- states, and nothing written
def test_dry_run_lists_every_state_of_the_tiny_plan_and_writes_nothing(tiny_states, capsys):
    results, runs, special = tiny_states
    before = tree_digest(results.parent)
    document = json_listing(capsys, "--profile", "tiny", "--results", str(results))
    rows = {row["run"]: row for row in document["runs"]}
    assert list(rows) == [run.run_id for run in runs]  # the plan's order
    assert rows[special["stale"]]["state"] == "stale" and rows[special["stale"]]["detail"] == "epochs 3 -> 8"
    assert rows[special["unreadable"]]["state"] == "unreadable"
    assert (rows[special["partial"]]["state"], rows[special["partial"]]["detail"]) == ("in progress", "epoch 1 of 8")
    assert rows[special["missing"]]["state"] == "to do"
    assert document["totals"]["states"] == {"done": 106, "stale": 1, "unreadable": 1, "in progress": 1, "to do": 1}
    for run in runs:  # what each run is
        row = rows[run.run_id]
        assert (row["dataset"], row["variant"], row["seed"]) == (run.dataset, run.variant, run.seed)
        assert row["shard"] == "0/1"
        assert row["tables"] == ",".join(map(str, run.tables)) and row["evaluations"] == 2  # 1 validation (val_every: 8), 1 test
    assert rows["audiocaps-DCR-htsat-K10-a0.01-b0.005-s0"]["changes"] == "n_factors=10"
    assert rows["clotho-DP-htsat-K8-a0.01-b0.005-s0"]["changes"] == "data_root=data/embedded/clotho"
    assert rows["audiocaps-DP-resnet38-K8-a0.01-b0.005-s1"]["changes"] == (
        "audio_encoder=resnet38 audio_checkpoint=checkpoints/tiny/resnet38-tiny.pth")
    assert rows["audiocaps-THA+DCR-htsat-K8-a0.01-b0.005-s0"]["changes"] == ""  # the profile's own settings
    status, table = listing(capsys, "--profile", "tiny", "--results", str(results), "--dry-run")
    assert status == 0
    assert "110 runs: 106 done, 1 stale, 1 unreadable, 1 in progress, 1 to do" in table
    assert "in progress: epoch 1 of 8" in next(line for line in table.splitlines() if special["partial"] in line)
    status, text = listing(capsys, "--profile", "tiny", "--results", str(results), "--dry-run", "--format", "csv")
    table_rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["run"] for r in table_rows] == list(rows) and table_rows[4]["state"] == "stale"
    assert tree_digest(results.parent) == before  # nothing written, changed or created anywhere here


def test_dry_run_lists_the_paper_plan_in_every_state(elsewhere, capsys):
    runs = plan("paper")
    root = runs_dir(elsewhere / "results", "paper")
    done, stale, partial = runs[1], runs[2], runs[3]
    for run in (done, stale):
        (root / run.run_id).mkdir(parents=True)
        config = run.config().to_dict()
        config["lr"] = 1e-3 if run is stale else config["lr"]
        record = {"test": {}, "config": config, "wall_time_s": 36_000.0,
                  "data": {"train": {"clips": 49_000, "captions": 49_000}}}  # fmt: skip
        (root / run.run_id / "metrics.json").write_text(json.dumps(record))
    (root / partial.run_id).mkdir()
    (root / partial.run_id / "log.csv").write_text("epoch,loss\n" + "".join(f"{e},1.0\n" for e in range(1, 21)))
    before = tree_digest(elsewhere)
    document = json_listing(capsys, "--profile", "paper")
    rows = {row["run"]: row for row in document["runs"]}
    assert [rows[r.run_id]["state"] for r in runs[:5]] == ["to do", "done", "stale", "in progress", "to do"]
    assert rows[stale.run_id]["detail"] == "lr 0.001 -> 0.0001"
    assert rows[partial.run_id]["detail"] == "epoch 20 of 50"
    assert rows[done.run_id]["evaluations"] == 51
    assert rows[runs[0].run_id]["changes"] == (
        "audio_encoder=resnet38 audio_checkpoint=checkpoints/ResNet38_mAP=0.434.pth")
    clotho = next(row for row in document["runs"] if row["dataset"] == "clotho")
    assert clotho["changes"] == "" and clotho["steps"] is None  # profile paper-clotho: its data_root is its own
    assert rows[done.run_id]["steps"] == 50 * (49_000 // 32)  # AudioCaps' size from the finished run
    assert "clotho: data not found at data/clotho: steps unknown" in document["notes"]
    assert tree_digest(elsewhere) == before


# ----------------------------------------------------------------------------- the estimate
def test_estimate_matches_the_committed_tiny_runs(elsewhere, capsys):
    """Steps from the profile and the data's size, step times from the finished runs' wall times."""
    runs = plan("tiny")
    records = {run.run_id: json.loads((COMMITTED / run.run_id / "metrics.json").read_text()) for run in runs}
    left_out = "audiocaps-DCR-htsat-K8-a0.01-b0.005-s1"
    copy_runs(elsewhere / "results", [run.run_id for run in runs if run.run_id != left_out])
    rows = {row["run"]: row for row in json_listing(capsys, "--profile", "tiny", "--results", "results")["runs"]}
    per_step = {}
    for run_id, record in records.items():
        config, captions = record["config"], record["data"]["train"]["captions"]
        assert captions == TINY_TRAIN[rows[run_id]["dataset"]]
        steps = config["epochs"] * (captions // config["batch_size"])  # full batches only, max_steps_per_epoch 0
        assert rows[run_id]["steps"] == steps == {"audiocaps": 1800, "clotho": 3000}[rows[run_id]["dataset"]]
        if run_id != left_out:
            key = (config["audio_encoder"], config["variant"], steps)  # as many steps: as much start-up per step
            per_step.setdefault(key, []).append(record["wall_time_s"] / steps)
    for run_id, row in rows.items():
        config = records[run_id]["config"]
        expected = statistics.median(per_step[(config["audio_encoder"], config["variant"], row["steps"])])
        assert row["step_s"] == pytest.approx(expected) and row["time_from"] == "finished runs"
        assert row["hours"] == pytest.approx(row["steps"] * expected / 3600)
        assert row["hours_left"] == (pytest.approx(row["hours"]) if run_id == left_out else 0.0)
    # the estimate of the whole plan against the sum of the runs' own wall times
    total = sum(record["wall_time_s"] for record in records.values()) / 3600
    estimate = sum(row["hours"] for row in rows.values())
    assert estimate == pytest.approx(total, rel=0.05)
    status, table = listing(capsys, "--profile", "tiny", "--results", "results", "--dry-run")
    assert f"estimate: {rows[left_out]['hours']:.2f} h left for these runs, {estimate:.2f} h" in table
    assert "audiocaps: 3600 training captions (the data block of finished runs' metrics.json)" in table


def test_estimate_without_data_or_timing_says_what_to_run(elsewhere, capsys):
    document = json_listing(capsys, "--profile", "paper")
    assert all(row["steps"] is None and row["hours"] is None for row in document["runs"])
    assert document["totals"]["hours_left"] is None and document["totals"]["runs_without_estimate"] == 31
    notes = "\n".join(document["notes"])
    assert "audiocaps: data not found at data/audiocaps: steps unknown" in notes
    assert GPU_CHECK_COMMAND in notes and "benchmarks/out/gpu_check.json not found" in notes


def write_gpu_check(path: Path, batch: int = 32, profile: str = "paper-audiocaps") -> Path:
    """A gpu_check.py output file (its keys) with made-up step times."""
    path.parent.mkdir(parents=True, exist_ok=True)
    training = {v: {"step_s": s, "step_s_range": [s, s], "peak_memory_gib": 20.0}
                for v, s in (("DP", 0.4), ("THA", 0.6), ("THA+DCR", 0.7))}  # fmt: skip
    path.write_text(json.dumps({"device": "NVIDIA H100", "profile": profile, "batch": batch, "training": training,
                                "loader": {}, "skipped": []}))  # fmt: skip
    return path


def test_estimate_from_gpu_check_and_data_on_disk(elsewhere, capsys):
    from synthetic import write_clotho

    write_gpu_check(elsewhere / GPU_CHECK_FILE)
    write_clotho(elsewhere / "data" / "clotho", counts=(40, 2, 2), captions_per_clip=5)  # 200 training captions
    rows = json_listing(capsys, "--profile", "paper", "--tables", "2")["runs"]
    expected = {"DP": 0.4, "THA": 0.6, "THA+DP": 0.6, "DCR": 0.4, "THA+DCR": 0.7}
    for row in rows:
        assert row["steps"] == 50 * (200 // 32)
        assert row["step_s"] == expected[row["variant"]] and row["time_from"] == "gpu_check"
        assert row["hours"] == pytest.approx(row["steps"] * row["step_s"] / 3600)
    status, table = listing(capsys, "--profile", "paper", "--tables", "2", "--dry-run")
    assert "clotho: 200 training captions (read from data/clotho)" in table
    assert "NVIDIA H100), batch 32; evaluations and data loading not included" in table
    rows = json_listing(capsys, "--profile", "paper", "--tables", "1")["runs"]  # AudioCaps: no data here
    resnet = next(row for row in rows if "resnet38" in row["run"])
    assert resnet["step_s"] is None  # gpu_check times HTS-AT only
    write_gpu_check(elsewhere / "other.json", batch=64)  # another batch size than the profile's: not used
    rows = json_listing(capsys, "--profile", "paper", "--tables", "2", "--timing", "other.json")["runs"]
    assert all(row["step_s"] is None for row in rows)
    write_gpu_check(elsewhere / "smoke.json", batch=16, profile="tiny")  # another profile's figures: not used
    rows = json_listing(capsys, "--profile", "paper", "--tables", "2", "--timing", "smoke.json")["runs"]
    assert all(row["step_s"] is None for row in rows)


# ----------------------------------------------------------------------------- shards
@pytest.mark.parametrize("count", [1, 3, 8])
def test_dry_run_shows_each_shards_runs_and_hours(elsewhere, capsys, count):
    runs = plan("tiny")
    copy_runs(elsewhere / "results", [run.run_id for run in runs[::2]])  # every other run done
    hours_left = {}
    for index in range(count):
        document = json_listing(capsys, "--profile", "tiny", "--results", "results", "--shard", f"{index}/{count}")
        mine = select_shard(runs, f"{index}/{count}")
        assert [row["run"] for row in document["runs"]] == [run.run_id for run in mine]
        assert {row["shard"] for row in document["runs"]} == {f"{index}/{count}"}
        assert document["totals"]["hours_left"] == pytest.approx(sum(row["hours_left"] for row in document["runs"]))
        hours_left[f"{index}/{count}"] = document["totals"]["hours_left"]
    assert document["totals"]["hours_left_by_shard"] == pytest.approx(hours_left)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, message",
    [(["--dry-run", "--shard", "1/x"], "shard '1/x' must be 'i/n'"),
     (["--dry-run", "--shard", "4/4"], "shard '4/4' must be 'i/n'"),
     (["--format", "csv"], "add --dry-run"),
     (["--render-only", "--shard", "0/2"], "leave out --shard"),
     (["--launcher", ""], "--launcher ''"),
     (["--launcher", "torchrun 'unclosed"], "No closing quotation"),
     (["--dry-run", "--tables", "1,9"], "tables [1, 9]")],
)  # fmt: skip
def test_bad_options_are_usage_errors(elsewhere, capsys, args, message):
    assert cli.main(["reproduce", "--profile", "tiny", *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("args", [["--dry-run", "--format", "xml"], ["--dry-run", "--render-only"]])
def test_argparse_refuses_bad_formats_and_both_modes(elsewhere, capsys, args):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reproduce", "--profile", "tiny", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert ("invalid choice: 'xml'" in err) if "xml" in args else ("not allowed with argument" in err)
    assert list(elsewhere.iterdir()) == []


# ----------------------------------------------------------------------------- render only
RUN_FILES = ("metrics.json", "log.csv", "test_ranks.npz", "factors.npz")


def test_render_only_writes_the_committed_tables_from_the_committed_runs(tmp_path, capsys):
    runs = plan("tiny")
    root = copy_runs(tmp_path, [run.run_id for run in runs], RUN_FILES)
    before = tree_digest(root)
    status, out = listing(capsys, "--profile", "tiny", "--results", str(tmp_path), "--render-only")
    assert status == 0 and "110 of 110 run(s) complete" in out
    for table in sorted((REPO / "results" / "tiny" / "tables").glob("*.csv")):  # table1-5, claims, learning
        assert (tmp_path / "tiny" / "tables" / table.name).read_bytes() == table.read_bytes(), table.name
    assert tree_digest(root) == before and not (tmp_path / "tiny" / "executions").exists()  # nothing ran


def test_render_only_with_missing_or_stale_runs(tmp_path, capsys):
    runs = plan("tiny", tables=(4,), seeds=1)
    root = copy_runs(tmp_path, [run.run_id for run in runs[:2]], RUN_FILES)
    args = ["--profile", "tiny", "--tables", "4", "--seeds", "1", "--results", str(tmp_path), "--render-only"]
    assert cli.main(["reproduce", *args]) == 1
    captured = capsys.readouterr()
    assert "2 of 3 run(s) complete" in captured.out and runs[2].run_id in captured.err
    table4 = (tmp_path / "tiny" / "tables" / "table4.csv").read_text()
    assert runs[2].run_id in table4  # listed in the "missing" column
    metrics = json.loads((root / runs[0].run_id / "metrics.json").read_text())
    metrics["config"]["lr"] = 0.5
    (root / runs[0].run_id / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "tiny" / "tables" / "table4.csv").unlink()
    assert cli.main(["reproduce", *args]) == 1
    assert "lr 0.5 -> 0.001" in capsys.readouterr().err
    assert not (tmp_path / "tiny" / "tables" / "table4.csv").exists()  # stale runs: no tables


# ----------------------------------------------------------------------------- --launcher
@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_train_arguments_give_each_run_its_config(profile):
    for run in plan(profile, overrides={"epochs": 3, "cache_dir": "2024", "text_layers": [1, 2, 3]}):
        for resume in (False, True):
            parameters = run.parameters(Path("out") / run.run_id, resume)
            args = cli.parse_args(train_arguments(parameters))
            assert (args.command, args.out, args.resume) == ("train", str(Path("out") / run.run_id), resume)
            assert make_config(args.profile, args.overrides) == run.config()


STUB_LAUNCHER = """import json, sys
from pathlib import Path
from thadcr.interfaces.cli import parse_args
from thadcr.config import make_config

assert sys.argv[1:3] == ["-m", "thadcr"], sys.argv
args = parse_args(sys.argv[3:])
config = make_config(args.profile, args.overrides)
test = {m: float(config.n_factors) for m in ("t2a_R1", "t2a_R5", "t2a_R10", "a2t_R1", "a2t_R5", "a2t_R10")}
Path(args.out, "metrics.json").write_text(json.dumps({"test": test, "config": config.to_dict()}))
print("trained", Path(args.out).name, "resume" if args.resume else "fresh")
"""


@pytest.fixture
def stub_launcher(tmp_path) -> str:
    """A launcher that "trains" by writing metrics.json with the config `thadcr train` would build."""
    path = tmp_path / "stub_launcher.py"
    path.write_text(STUB_LAUNCHER)
    return f"{sys.executable} {path}"


@pytest.mark.slow
def test_launcher_trains_runs_the_plan_then_finds_not_stale(tmp_path, stub_launcher):
    runs = plan("tiny", tables=(4,))
    (runs_dir(tmp_path, "tiny") / runs[1].run_id).mkdir(parents=True)  # an interrupted attempt
    record = execute(runs, tmp_path, executor=launcher_executor(stub_launcher), progress=False)
    assert record["done"] == [run.run_id for run in runs] and record["failed"] == {}
    log = (runs_dir(tmp_path, "tiny") / runs[1].run_id / "papermill.log").read_text()
    assert "-m thadcr train --profile tiny --out" in log and "--resume" in log and "resume\n" in log
    check_not_stale(runs, runs_dir(tmp_path, "tiny"))  # the launched config is the plan's
    failing = launcher_executor(f"{sys.executable} -c 'import sys; sys.exit(3)'")
    more = plan("tiny", tables=(5,))[:1]  # not one of Table 4's
    failed = execute(more, tmp_path, executor=failing, progress=False)["failed"]
    assert "exited with status 3" in failed[more[0].run_id] and "run.ipynb" not in failed[more[0].run_id]


# ----------------------------------------------------------------------------- the SLURM script
def slurm(*args: str, task: tuple[int, int, int, int] | None = None, cwd: Path | None = None, **env: str):
    """Run scripts/slurm_reproduce.sh with array task (id, count, min, max); returns the process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    if task:
        names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX")
        environment.update(dict(zip(names, map(str, task))))
    environment.update(env)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd or REPO, env=environment, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_slurm_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)


@pytest.mark.parametrize(
    "task, shard",
    [((0, 1, 0, 0), "0/1"), ((3, 8, 0, 7), "3/8"), ((7, 8, 0, 7), "7/8"), ((1, 4, 1, 4), "0/4"),
     ((4, 4, 1, 4), "3/4"), ((12, 3, 10, 12), "2/3")],
)  # fmt: skip
def test_slurm_script_turns_the_array_task_into_a_shard(task, shard):
    done = slurm(task=task, THADCR="echo", THADCR_GPUS="4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["reproduce", "--profile", "paper", "--results", "results", "--shard", shard,
                                   "--launcher", ".venv/bin/torchrun", "--standalone", "--nproc_per_node", "4"]


@pytest.mark.parametrize("count", [1, 5, 31, 40])
def test_slurm_array_covers_the_plan_once(count):
    runs = plan("paper")
    taken = []
    for task in range(count):
        out = slurm(task=(task, count, 0, count - 1), THADCR="echo").stdout.split()
        taken += select_shard(runs, out[out.index("--shard") + 1])
    assert sorted(run.run_id for run in taken) == sorted(run.run_id for run in runs)


@pytest.mark.parametrize(
    "task, message",
    [(None, "not a SLURM array task"), ((1, 4, 1, 7), "give one range"),
     ((9, 4, 0, 3), "outside the array")],
)  # fmt: skip
def test_slurm_script_refuses_what_is_not_a_contiguous_array(task, message):
    done = slurm(task=task, THADCR="echo")
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""


def test_slurm_script_reruns_chosen_shards_with_thadcr_shards():
    """sbatch --array=3,5 --export=ALL,THADCR_SHARDS=8: tasks 3 and 5 of a 2-task array run 3/8 and 5/8."""
    for task in (3, 5):
        out = slurm(task=(task, 2, 3, 5), THADCR="echo", THADCR_SHARDS="8").stdout.split()
        assert out[out.index("--shard") + 1] == f"{task}/8"
    refused = slurm(task=(8, 1, 8, 8), THADCR="echo", THADCR_SHARDS="8")
    assert refused.returncode == 2 and "from 0 to THADCR_SHARDS-1" in refused.stderr


def test_slurm_script_modes_and_options():
    done = slurm("render", "--tables", "4", THADCR="echo", THADCR_PROFILE="tiny", THADCR_RESULTS="r")
    assert done.stdout.split() == ["reproduce", "--profile", "tiny", "--results", "r", "--render-only", "--tables", "4"]
    done = slurm("shard", "--set", "epochs=3", task=(0, 2, 0, 1), THADCR="echo", THADCR_LAUNCHER="python")
    assert done.stdout.split()[-4:] == ["--launcher", "python", "--set", "epochs=3"]
    assert slurm("train", THADCR="echo").returncode == 2


def test_slurm_script_requeues_near_the_time_limit(tmp_path):
    stub, pid_file = tmp_path / "slow_thadcr", tmp_path / "stub.pid"
    stub.write_text(f"#!/bin/sh\necho $$ > {pid_file}\necho started\nexec sleep 60 >/dev/null 2>&1\n")
    stub.chmod(0o755)
    environment = {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
                   "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_JOB_ID": "77",
                   "THADCR": str(stub), "THADCR_SCONTROL": "echo scontrol"}  # fmt: skip
    process = subprocess.Popen(["bash", str(SCRIPT)], cwd=tmp_path, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout.readline() == "started\n"  # the shard runs: the trap is set
    time.sleep(0.2)
    process.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@600 sends
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out == "scontrol requeue 77_3\n" and "requeueing 77_3" in err
    try:  # SLURM ends the task's processes after a requeue; here the stub's sleep is ended by its id
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_slurm_recipe_on_the_tiny_profile(tmp_path, stub_launcher):
    """The whole recipe with the real thadcr and a stub launcher: three array tasks (one of them
    requeued after an interruption), then the render step."""
    thadcr = str(REPO / ".venv" / "bin" / "thadcr")
    env = {"THADCR": thadcr, "THADCR_PROFILE": "tiny", "THADCR_RESULTS": str(tmp_path / "results"),
           "THADCR_LAUNCHER": stub_launcher}  # fmt: skip
    runs = plan("tiny", tables=(4,), seeds=1)
    first = slurm("shard", "--tables", "4", "--seeds", "1", task=(1, 3, 0, 2), **env)
    assert first.returncode == 0, first.stderr
    assert "1 run(s) done, 0 already complete, 0 failed" in first.stdout
    render = slurm("render", "--tables", "4", "--seeds", "1", **env)
    assert render.returncode == 1 and "1 of 3 run(s) complete" in render.stdout
    interrupted = runs_dir(tmp_path / "results", "tiny") / runs[2].run_id
    interrupted.mkdir()  # task 2 was stopped mid-run: its requeued task resumes the run
    for task in (0, 2):
        assert slurm("shard", "--tables", "4", "--seeds", "1", task=(task, 3, 0, 2), **env).returncode == 0
    assert "--resume" in (interrupted / "papermill.log").read_text()
    render = slurm("render", "--tables", "4", "--seeds", "1", **env)
    assert render.returncode == 0 and "3 of 3 run(s) complete" in render.stdout
    table = pd.read_csv(tmp_path / "results" / "tiny" / "tables" / "table4.csv")
    recalls = table[table.metric.isin(METRICS)]
    assert set(recalls.n_runs) == {1} and sorted(set(recalls.ours_mean)) == [6.0, 8.0, 10.0]  # the stub's recall: K
