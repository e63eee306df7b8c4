"""Reproduce the paper's Tables 1-5: plan the runs, execute them as notebooks, render the tables.

- ``plan(profile)`` expands Tables 1-5 (section 3) into runs; a run shared by several tables
  (e.g. DCR with K=8, alpha=0.01, beta=0.005 is in Tables 1, 3, 4 and 5) runs once.
- ``execute(runs, results_dir)`` runs each one with papermill through ``notebooks/train.py`` into
  ``results/<profile>/runs/<run-id>/``; finished runs (metrics.json present) are skipped,
  interrupted ones are resumed, and ``shard="i/n"`` splits the plan for SLURM arrays.
- ``render(profile, results_dir)`` writes ``tables/table1.csv ... table5.csv`` (ours beside the
  paper's values) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import datetime as dt
import io
import json
import math
import multiprocessing
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm import tqdm

from thadcr import numerics
from thadcr.config import KEYS_ADDED, VARIANT_PARTS, Config, ConfigError, describe_keys, make_config, parse_override
from thadcr.errors import ThadcrError
from thadcr.files import atomic_write_bytes, write_if_changed
from thadcr.metrics import chance_recall
from thadcr.provenance import machine, package_versions

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_NOTEBOOK = REPO_ROOT / "notebooks" / "train.py"
PAPER_RESULTS = REPO_ROOT / "data" / "paper_results.csv"

PROFILES = ("tiny", "paper")
DATASETS = ("audiocaps", "clotho")
TABLES = (1, 2, 3, 4, 5)
METRICS = ("t2a_R1", "t2a_R5", "t2a_R10", "a2t_R1", "a2t_R5", "a2t_R10")
EXTRA_METRICS = ("t2a_mAP10", "a2t_mAP10")  # ours only: the paper reports no mAP@10
TINY_DATA_ROOTS = {"audiocaps": "data/embedded/audiocaps", "clotho": "data/embedded/clotho"}
PANNS_CHECKPOINT = "checkpoints/ResNet38_mAP=0.434.pth"
TINY_RESNET38_CHECKPOINT = "checkpoints/tiny/resnet38-tiny.pth"  # `thadcr pretrain` (docs/decisions/pretrain.md)

# Paper section 3.1: K = 8, alpha = 0.01, beta = 0.005.
_PAPER = {"audio_encoder": "htsat", "n_factors": 8, "alpha": 0.01, "beta": 0.005}


def _row(variant: str, **changes: Any) -> dict[str, Any]:
    return {**_PAPER, "variant": variant, **changes}


# (method label as in data/paper_results.csv, settings); the data set of each table below.
TABLE_ROWS: dict[int, list[tuple[str, dict[str, Any]]]] = {
    1: [
        ("DP (ResNet38)", _row("DP", audio_encoder="resnet38")),
        ("DP (HTSAT)", _row("DP")),
        ("THA", _row("THA")),
        ("THA+DP", _row("THA+DP")),
        ("DCR", _row("DCR")),
        ("THA+DCR", _row("THA+DCR")),
    ],
    2: [
        ("DP (HTSAT)", _row("DP")),
        ("THA", _row("THA")),
        ("THA+DP", _row("THA+DP")),
        ("DCR", _row("DCR")),
        ("THA+DCR", _row("THA+DCR")),
    ],
    3: [
        ("DP (HTSAT)", _row("DP")),
        ("DP+LD", _row("DP+LD")),
        ("DP+LD+LA", _row("DP+LD+LA")),
        ("DCR", _row("DCR")),
    ],
    4: [(f"K={k}", _row("DCR", n_factors=k)) for k in (6, 8, 10)],
    5: [(f"alpha={a:g}", _row("DCR", alpha=a)) for a in (0.005, 0.01, 0.02)]
    + [(f"beta={b:g}", _row("DCR", beta=b)) for b in (0.001, 0.005, 0.01)],
}
TABLE_TITLES = {
    1: "ATR performance on the AudioCaps dataset",
    2: "ATR performance on the Clotho dataset",
    3: "Effect of each part of our DCR method",
    4: "Effect of the number of latent factors",
    5: "Effect of the trade-off hyper-parameters alpha and beta",
}
TABLE_DATASET = {1: "audiocaps", 2: "clotho", 3: "audiocaps", 4: "audiocaps", 5: "audiocaps"}
# Tables whose rows run every seed of the plan, and the plan's seeds: the paper repeats Table 1
# over 3 seeds and runs the others once; the tiny plan runs every row with the seeds its power
# analysis asks for (docs/decisions/power.md).
SEEDED_TABLES = {"tiny": TABLES, "paper": (1,)}
DEFAULT_SEEDS = {"tiny": 8, "paper": 3}
# Tables that run fewer seeds by default (the tiny plan's Tables 4-5: the session's time budget,
# docs/decisions/power.md); --seeds sets every seeded table alike.
DEFAULT_TABLE_SEEDS = {"tiny": {4: 4, 5: 4}, "paper": {}}
# The tiny plan's THA rows run fewer seeds: THA scores each 200-clip fold's 200 x 1,000 pairs in
# about 25 s on one core, so a THA run costs about 10 minutes against under one for the others
# (docs/decisions/power.md). None: as many as the other rows.
DEFAULT_THA_SEEDS = {"tiny": 1, "paper": None}


class ReproduceError(ThadcrError, RuntimeError):
    """A plan, a results folder or a results file is unusable; the message says what to do."""


def setting_id(dataset: str, variant: str, audio_encoder: str, n_factors: int, alpha: float, beta: float) -> str:
    """A run's settings but the seed, e.g. ``audiocaps-DCR-htsat-K8-a0.01-b0.005``."""
    return f"{dataset}-{variant}-{audio_encoder}-K{n_factors}-a{alpha:g}-b{beta:g}"


# ----------------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the plan; ``tables`` lists the tables that use it."""

    profile: str
    dataset: str
    variant: str
    audio_encoder: str
    n_factors: int
    alpha: float
    beta: float
    seed: int
    tables: tuple[int, ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()  # other Config keys, the same for every run of a plan

    @property
    def setting_id(self) -> str:
        return setting_id(self.dataset, self.variant, self.audio_encoder, self.n_factors, self.alpha, self.beta)

    @property
    def run_id(self) -> str:
        return f"{self.setting_id}-s{self.seed}"

    def config(self) -> Config:
        """The Config that notebooks/train.py builds from :meth:`parameters`."""
        return config_from_parameters(self.parameters(Path(), False))

    def parameters(self, out_dir: Path, resume: bool) -> dict[str, Any]:
        """The parameters of notebooks/train.py for this run."""
        return {
            "variant": self.variant,
            "dataset": self.dataset,
            "profile": self.profile,
            "seed": self.seed,
            "n_factors": self.n_factors,
            "alpha": self.alpha,
            "beta": self.beta,
            "epochs": None,
            "out_dir": str(out_dir),
            "device": "auto",
            "overrides": {"audio_encoder": self.audio_encoder, **dict(self.overrides)},
            "resume": resume,
            "progress": "lines",
        }


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ReproduceError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")


PLAN_KEYS = ("variant", "audio_encoder", "n_factors", "alpha", "beta", "seed", "data_root", "device")


def plan(
    profile: str, tables: Iterable[int] = TABLES, seeds: int | None = None, overrides: dict[str, Any] | None = None,
    tha_seeds: int | None = None,
) -> list[Run]:
    """The runs of the chosen tables: the rows of the profile's ``SEEDED_TABLES`` run ``seeds``
    seeds (0..seeds-1; default ``DEFAULT_SEEDS``, or ``DEFAULT_TABLE_SEEDS`` for the tables it
    names), their THA rows ``tha_seeds`` (default ``DEFAULT_THA_SEEDS``, at most ``seeds``), the
    others seed 0.

    A run used by several tables appears once (tables merged), in order of first use.
    ``overrides`` changes other Config keys in every run (e.g. an ablation of the whole plan into
    its own results folder); the keys the plan itself sets (``PLAN_KEYS``) are refused.
    """
    _check_profile(profile)
    overrides = dict(overrides or {})
    fixed = sorted(set(overrides) & set(PLAN_KEYS))
    if fixed:
        raise ReproduceError(f"--set {', '.join(fixed)}: the plan sets {', '.join(PLAN_KEYS)} itself")
    try:  # unknown keys and bad values fail here, not in every run's notebook
        config_for(profile, TABLE_DATASET[min(TABLES)], overrides)
    except ConfigError as error:
        raise ReproduceError(f"--set: {error}") from None
    tables = tuple(tables)
    unknown = sorted(set(tables) - set(TABLES))
    if unknown or not tables:
        raise ReproduceError(f"tables {list(tables)}: choose among {list(TABLES)}")
    table_seeds = {} if seeds is not None else DEFAULT_TABLE_SEEDS[profile]
    seeds = DEFAULT_SEEDS[profile] if seeds is None else seeds
    tha_seeds = DEFAULT_THA_SEEDS[profile] if tha_seeds is None else tha_seeds
    tha_seeds = seeds if tha_seeds is None else min(tha_seeds, seeds)
    if seeds < 1 or tha_seeds < 1:
        raise ReproduceError(f"seeds must be at least 1, got {seeds} (THA rows {tha_seeds})")
    runs: dict[str, Run] = {}
    for table in sorted(set(tables)):
        for _, settings in TABLE_ROWS[table]:
            row_seeds = tha_seeds if VARIANT_PARTS[settings["variant"]].tha else table_seeds.get(table, seeds)
            for seed in range(row_seeds if table in SEEDED_TABLES[profile] else 1):
                run = Run(profile=profile, dataset=TABLE_DATASET[table], seed=seed,
                          overrides=tuple(sorted(overrides.items())), **settings)
                known = runs.get(run.run_id, run)
                runs[run.run_id] = dataclasses.replace(known, tables=tuple(sorted({*known.tables, table})))
    return list(runs.values())


def config_for(profile: str, dataset: str, overrides: dict[str, Any] | None = None) -> Config:
    """The Config of one run: profile ``tiny`` (embedded data) or ``paper`` (paper-<dataset>.yaml).

    A ResNet38 run loads the profile's ResNet38 checkpoint unless ``audio_checkpoint`` is given
    (the profiles name the HTS-AT one): the PANNs one on the paper profile, the narrow ResNet38
    tagger of ``thadcr pretrain`` on the tiny profile.
    """
    _check_profile(profile)
    if dataset not in DATASETS:
        raise ReproduceError(f"dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    overrides = dict(overrides or {})
    if profile == "tiny":
        overrides.setdefault("data_root", TINY_DATA_ROOTS[dataset])
    if overrides.get("audio_encoder") == "resnet38":
        overrides.setdefault("audio_checkpoint", TINY_RESNET38_CHECKPOINT if profile == "tiny" else PANNS_CHECKPOINT)
    return make_config("tiny" if profile == "tiny" else f"paper-{dataset}", overrides)


def config_from_parameters(parameters: dict[str, Any]) -> Config:
    """The Config of one run from the parameters of notebooks/train.py (see :meth:`Run.parameters`):
    the run's settings, then ``overrides``, then ``epochs`` unless it is None (the profile's)."""
    settings = {key: parameters[key] for key in ("variant", "seed", "n_factors", "alpha", "beta", "device")}
    settings.update(parameters.get("overrides") or {})
    if parameters.get("epochs") is not None:
        settings["epochs"] = parameters["epochs"]
    return config_for(parameters["profile"], parameters["dataset"], settings)


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n); None -> (0, 1)."""
    if shard is None:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ReproduceError(
            f"shard {shard!r} must be 'i/n' with 0 <= i < n, e.g. '0/4' (SLURM: $SLURM_ARRAY_TASK_ID/n)"
        )
    return int(match[1]), int(match[2])


def select_shard(runs: Sequence[Run], shard: str | None) -> list[Run]:
    """Deterministic round-robin: shard i/n takes runs i, i+n, i+2n, ... of the plan's order."""
    index, count = parse_shard(shard)
    return list(runs[index::count])


# ----------------------------------------------------------------------------- execution
def runs_dir(results_dir: str | Path, profile: str) -> Path:
    return Path(results_dir) / profile / "runs"


def is_complete(run_dir: Path) -> bool:
    """metrics.json is written last and atomically by thadcr.train: its presence means done."""
    return (run_dir / "metrics.json").is_file()


def stale_settings(run: Run, run_dir: Path) -> dict[str, tuple[Any, Any]]:
    """Keys whose value in a finished run's metrics.json differs from the plan's config now:
    key -> (recorded, planned). A key the run did not record (Config gained it later) matches when
    the plan sets it to its value in `thadcr.config.KEYS_ADDED`, which keeps the behaviour from
    before the key existed; otherwise it shows as ``"<absent>"``."""
    metrics_path = run_dir / "metrics.json"
    try:
        recorded = json.loads(metrics_path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReproduceError(
            f"{metrics_path}: cannot read the run's recorded config ({error}); move the folder away to re-run it"
        ) from error
    planned = json.loads(json.dumps(run.config().to_dict()))
    earlier = json.loads(json.dumps(KEYS_ADDED))
    differences = {}
    for key, value in planned.items():
        if key in recorded:
            if recorded[key] != value:
                differences[key] = (recorded[key], value)
        elif key not in earlier or value != earlier[key]:
            differences[key] = ("<absent>", value)
    return differences


def check_not_stale(runs: Sequence[Run], root: Path) -> None:
    """Refuse to skip finished runs that were made with other settings than the plan's now
    (a changed profile, say): their results would be mixed silently with new ones."""
    stale = {}
    for run in runs:
        if is_complete(root / run.run_id):
            differences = stale_settings(run, root / run.run_id)
            if differences:
                stale[run.run_id] = differences
    if stale:
        lines = [
            f"  {root / run_id}: " + ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in diffs.items())
            for run_id, diffs in stale.items()
        ]
        raise ReproduceError(
            f"{len(stale)} finished run(s) were made with other settings than the plan's now:\n"
            + "\n".join(lines)
            + "\nMove or delete those folders to re-run them with the current settings, or restore the settings."
        )


def papermill_executor(notebook: Path, output: Path, parameters: dict[str, Any], log: Path) -> int:
    """Run papermill in a child process (one kernel per run); returns its exit status.

    The kernel shows no progress bars (``TQDM_DISABLE``, the hub's and transformers' switches): a
    notebook keeps every update of a bar, and the run logs one plain line per epoch instead. It
    starts with the environment of the run's numerics mode (`thadcr.numerics.environment`).
    """
    command = [
        sys.executable, "-m", "papermill", str(notebook), str(output),
        "-y", json.dumps(parameters), "-k", "python3", "-l", "python", "--cwd", os.getcwd(), "--no-progress-bar",
    ]  # fmt: skip
    quiet = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env = {**numerics.environment(config_from_parameters(parameters).numerics), **quiet}
    with open(log, "w") as stream:
        return subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, check=False, env=env).returncode


Executor = Callable[[Path, Path, dict[str, Any], Path], int]


def train_profile(profile: str, dataset: str) -> str:
    """The `thadcr train` profile of a plan's run: ``tiny``, or ``paper-<dataset>``."""
    return "tiny" if profile == "tiny" else f"paper-{dataset}"


def override_text(value: Any) -> str:
    """A Config value as `key=value` text that `thadcr.config.parse_override` reads back as it is."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)  # JSON is YAML: numbers, lists, true/false, null, quoted text


def profile_changes(profile: str, dataset: str, config: Config) -> dict[str, Any]:
    """The keys of ``config`` whose value differs from its `train_profile`'s, in Config order."""
    base = make_config(train_profile(profile, dataset)).to_dict()
    return {key: value for key, value in config.to_dict().items() if value != base[key]}


def train_arguments(parameters: dict[str, Any]) -> list[str]:
    """The `thadcr train` arguments of one run (notebooks/train.py's parameters, :meth:`Run.parameters`):
    its profile, its folder, ``--resume`` for an earlier attempt, and each key that differs."""
    profile = train_profile(parameters["profile"], parameters["dataset"])
    changes = profile_changes(parameters["profile"], parameters["dataset"], config_from_parameters(parameters))
    resume = ["--resume"] if parameters["resume"] else []
    return ["train", "--profile", profile, "--out", str(parameters["out_dir"]), *resume,
            *(f"{key}={override_text(value)}" for key, value in changes.items())]  # fmt: skip


def launcher_executor(launcher: str) -> Executor:
    """An executor that trains each run with ``<launcher> -m thadcr.cli train ...`` (e.g.
    ``torchrun --standalone --nproc_per_node 4``: one run on all the GPUs) instead of papermill;
    the run's output goes to its papermill.log, and no run.ipynb is written."""
    command = shlex.split(launcher)
    if not command:
        raise ReproduceError("--launcher is empty: give a command such as 'torchrun --nproc_per_node 4'")

    def launch(notebook: Path, output: Path, parameters: dict[str, Any], log: Path) -> int:
        quiet = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
        env = {**numerics.environment(config_from_parameters(parameters).numerics), **quiet}
        with open(log, "w") as stream:
            argv = [*command, "-m", "thadcr.cli", *train_arguments(parameters)]
            stream.write(f"$ {shlex.join(argv)}\n")
            stream.flush()
            return subprocess.run(argv, stdout=stream, stderr=subprocess.STDOUT, check=False, env=env).returncode

    return launch


def _execute_one(run: Run, notebook: Path, root: Path, executor: Executor) -> tuple[str, str]:
    """Run one notebook; returns (status, message) with status 'done' or 'failed'."""
    run_dir = root / run.run_id
    resume = run_dir.exists()  # an earlier attempt left files: continue it
    run_dir.mkdir(parents=True, exist_ok=True)
    partial, final = run_dir / "run.partial.ipynb", run_dir / "run.ipynb"  # papermill wants .ipynb names
    log = run_dir / "papermill.log"
    status = executor(notebook, partial, run.parameters(run_dir.resolve(), resume), log)
    if partial.exists():
        os.replace(partial, final)
    if status != 0:
        where = f"{final} and {log}" if final.exists() else str(log)
        return "failed", f"the run exited with status {status}; see {where}"
    if not is_complete(run_dir):
        return "failed", f"notebook finished but wrote no metrics.json; see {final}"
    return "done", str(final)


def execute(
    runs: Sequence[Run],
    results_dir: str | Path = "results",
    jobs: int = 1,
    shard: str | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    fill: bool | None = None,
) -> dict[str, Any]:
    """Execute this shard's runs into results/<profile>/runs/<run-id>/ (run.ipynb, metrics.json).

    With the papermill executor (or ``fill=True``) the frozen encoders' feature caches are filled
    first (`fill_caches`), so that runs side by side do not each compute them.
    Completed runs are skipped; a run folder without metrics.json is resumed (resume=True).
    Failures are collected and the plan goes on. Returns an execution record (elapsed wall time)
    and, when it ran any run, writes it to results/<profile>/executions/; a call with every run
    complete writes nothing. executor: papermill_executor by default.
    """
    started, clock = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    profiles = {run.profile for run in runs}
    if len(profiles) != 1:
        raise ReproduceError(f"execute needs the runs of one profile, got {sorted(profiles) or 'no runs'}: use plan()")
    if jobs < 1:
        raise ReproduceError(f"jobs must be at least 1, got {jobs}")
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of oversubscribing them
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    profile = profiles.pop()
    root = runs_dir(results_dir, profile)
    mine = select_shard(runs, shard)
    check_not_stale(mine, root)
    todo = [run for run in mine if not is_complete(root / run.run_id)]
    record: dict[str, Any] = {
        "profile": profile,
        "shard": shard or "0/1",
        "jobs": jobs,
        "started": started.isoformat(timespec="seconds"),
        "skipped": [run.run_id for run in mine if run not in todo],
        "done": [],
        "failed": {},
    }
    if todo:
        if not TRAIN_NOTEBOOK.is_file():
            raise ReproduceError(f"{TRAIN_NOTEBOOK} is missing: run from a source checkout of thadcr")
        import jupytext

        try:  # an interrupted call (Ctrl-C, or SIGTERM from a scheduler) still records what it did
            with _terminate_as_interrupt():
                if executor is None if fill is None else fill:
                    fill_caches(todo, jobs, progress)
                with tempfile.TemporaryDirectory() as tmp:
                    notebook = Path(tmp) / "train.ipynb"
                    jupytext.write(jupytext.read(TRAIN_NOTEBOOK), notebook)  # once per execute call
                    _run_all(todo, notebook, root, executor or papermill_executor, jobs, record, clock, progress)
        except KeyboardInterrupt:
            record["interrupted"] = True
            raise
        finally:
            _write_execution(record, todo, results_dir, profile, started, clock)
    else:
        record["elapsed_s"] = time.perf_counter() - clock
        record["machine"] = machine()
    for run_id, message in record["failed"].items():
        print(f"FAILED {run_id}: {message}", file=sys.stderr)
    return record


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt in the main thread while the block runs (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_execution(record: dict[str, Any], todo: list[Run], results_dir: str | Path, profile: str,
                     started: dt.datetime, clock: float) -> None:
    """Complete the execution record (runs in plan order, elapsed time, machine) and write it to
    results/<profile>/executions/, also when the call was interrupted."""
    order = [run.run_id for run in todo]  # runs finish in any order; report them in plan order
    record["done"].sort(key=order.index)
    record["failed"] = {run_id: record["failed"][run_id] for run_id in order if run_id in record["failed"]}
    record["elapsed_s"] = time.perf_counter() - clock
    record["machine"] = machine()
    executions = Path(results_dir) / profile / "executions"
    executions.mkdir(parents=True, exist_ok=True)
    name = f"{started:%Y%m%dT%H%M%S_%f}-shard{record['shard'].replace('/', 'of')}-{os.getpid()}.json"
    atomic_write_bytes(executions / name, json.dumps(record, indent=2).encode())


def _fill(config: dict[str, Any], parts: tuple[str, ...]) -> None:
    from thadcr.config import from_dict
    from thadcr.train import fill_feature_caches

    fill_feature_caches(from_dict(config), parts)


def fill_caches(runs: Sequence[Run], jobs: int, progress: bool = True) -> None:
    """Compute the frozen encoders' feature caches the runs will read before any run starts: first
    the text features of each data set, then the audio features of each (data set, audio
    encoder), ``jobs`` at a time in their own processes. Runs started side by side then share them
    instead of each computing them."""
    configs = {}
    for run in runs:
        config = run.config()
        if config.audio_frozen or config.text_trainable_layers == 0:
            configs.setdefault((run.dataset, run.audio_encoder), config.to_dict())
    stages = [("text", {dataset: c for (dataset, _), c in configs.items()}.values()), ("audio", configs.values())]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: torch's threads do not survive fork
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        for part, todo in stages:
            todo = list(todo)
            bar = tqdm(total=len(todo), desc=f"{part} feature caches", disable=not progress or not todo)
            for future in concurrent.futures.as_completed([pool.submit(_fill, c, (part,)) for c in todo]):
                future.result()
                bar.update(1)
            bar.close()


def _run_all(
    todo: list[Run],
    notebook: Path,
    root: Path,
    executor: Executor,
    jobs: int,
    record: dict,
    clock: float,
    progress: bool,
) -> None:
    """Run ``todo`` with ``jobs`` workers, filling record['done'] / record['failed']; a tqdm bar shows progress."""
    bar = tqdm(total=len(todo), unit="run", disable=not progress, dynamic_ncols=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        pending = {pool.submit(_execute_one, run, notebook, root, executor): run for run in todo}
        while pending:
            running = ", ".join(run.run_id for run in list(pending.values())[:jobs])
            bar.set_description(f"running {running}")
            bar.set_postfix_str(f"{len(pending)} left, {time.perf_counter() - clock:.0f} s so far")
            finished, _ = concurrent.futures.wait(pending, timeout=5, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                run = pending.pop(future)
                try:
                    status, message = future.result()
                except Exception as error:  # an executor crash must not stop the plan
                    status, message = "failed", f"{type(error).__name__}: {error}"
                if status == "done":
                    record["done"].append(run.run_id)
                else:
                    record["failed"][run.run_id] = message
                bar.update(1)
    bar.close()


# ----------------------------------------------------------------------------- rendering
def load_paper_results(path: Path = PAPER_RESULTS) -> pd.DataFrame:
    """The paper's Tables 1-5 (long format: table, method, metric, mean, std)."""
    if not path.is_file():
        raise ReproduceError(f"{path} is missing: it ships with the source checkout (data/paper_results.csv)")
    frame = pd.read_csv(path)
    expected = ["table", "method", "metric", "mean", "std"]
    if list(frame.columns) != expected:
        raise ReproduceError(f"{path}: columns {list(frame.columns)}, expected {expected}")
    return frame


def read_metrics(path: Path) -> dict[str, Any]:
    """One run's metrics.json, checked for the test metrics the tables need."""
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReproduceError(f"{path}: not valid JSON ({error}); delete the run folder and execute again") from None
    missing = [key for key in METRICS if key not in metrics.get("test", {})]
    if missing:
        raise ReproduceError(f"{path}: 'test' lacks {', '.join(missing)}; delete the run folder and execute again")
    return metrics


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN below two values)."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def table_frame(
    table: int, expected: dict[str, list[str]], metrics: dict[str, dict], paper: pd.DataFrame
) -> pd.DataFrame:
    """Long table: one row per (method, metric) with ours (mean, std over seeds) and the paper's.

    expected: setting_id -> planned run ids; metrics: run_id -> metrics.json of finished runs.
    """
    rows = []
    for method, settings in TABLE_ROWS[table]:
        planned = expected.get(setting_id(TABLE_DATASET[table], **settings), [])
        found = [run_id for run_id in planned if run_id in metrics]
        for metric in METRICS + EXTRA_METRICS:
            values = [float(metrics[run_id]["test"][metric]) for run_id in found if metric in metrics[run_id]["test"]]
            mean, std = _mean_std(values)
            ref = paper[(paper.table == table) & (paper.method == method) & (paper.metric == metric)]
            paper_mean = float(ref["mean"].iloc[0]) if len(ref) else math.nan
            paper_std = float(ref["std"].iloc[0]) if len(ref) else math.nan
            rows.append({
                "table": table, "method": method, "metric": metric,
                "ours_mean": mean, "ours_std": std, "n_runs": len(values),
                "paper_mean": paper_mean, "paper_std": paper_std,
                "runs": ";".join(found), "missing": ";".join(r for r in planned if r not in found),
            })  # fmt: skip
    return pd.DataFrame(rows)


def learning_frame(metrics: dict[str, dict]) -> pd.DataFrame:
    """Each finished run's test R-sum (the six recalls added) and R@10 against a random ranking's,
    both directions (tables/learning.csv).

    Chance is ``thadcr.metrics.chance_recall`` on one gallery of the run's test split (the whole
    split, or a fold of ``eval_fold_clips`` clips): 1 correct clip among the gallery's clips
    (text-to-audio), captions / clips correct captions among its captions (audio-to-text).
    A metrics.json without the split sizes (``data.test``) keeps its row with NaN chance.
    """
    rows = []
    for run_id, run in metrics.items():
        data = run.get("data", {}).get("test", {})
        if {"clips", "captions"} <= set(data):
            clips, captions = data["clips"], data["captions"]
            fold = run.get("config", {}).get("eval_fold_clips", 0)
            gallery = fold if 0 < fold < clips else clips
            per_clip = round(captions / clips)
            chance = {"t2a": chance_recall(gallery, 1, 10), "a2t": chance_recall(gallery * per_clip, per_clip, 10)}
        else:
            chance = {"t2a": math.nan, "a2t": math.nan}
        row: dict[str, Any] = {"run": run_id, "rsum": sum(run["test"][metric] for metric in METRICS)}
        for direction, level in chance.items():
            value = run["test"][f"{direction}_R10"]
            row.update({f"{direction}_R10": value, f"{direction}_chance": level, f"{direction}_x_chance": value / level})
        rows.append(row)
    return pd.DataFrame(rows)


RENDER_STAMP = (("generated",), ("versions", "render"))  # summary.json's fields on the rendering itself


def _unstamped(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without `RENDER_STAMP`, as JSON reads it back (what says whether the results changed)."""
    plain = json.loads(json.dumps(summary, default=str))
    for *parents, key in RENDER_STAMP:
        part = plain
        for parent in parents:
            part = part.get(parent) if isinstance(part, dict) else None
        if isinstance(part, dict):
            part.pop(key, None)
    return plain


def render(profile: str, results_dir: str | Path = "results", seeds: int | None = None,
           tha_seeds: int | None = None) -> dict[str, Any]:
    """Write results/<profile>/tables/table{1..5}.csv, claims.csv (`thadcr.claims`), learning.csv and
    summary.json from the finished runs.

    A table row averages every planned seed of its setting (so Table 3's DCR row, shared with
    Table 1, is the 3-seed mean, as in the paper). Returns the summary. A file that would get
    the bytes it holds is left alone, and summary.json is rewritten (with a new time and the
    renderer's versions) only when a table or the summary's content changed: rendering results
    that did not change changes nothing on disk.
    """
    full = plan(profile, TABLES, seeds, tha_seeds=tha_seeds)
    root = Path(results_dir) / profile
    expected: dict[str, list[str]] = {}
    for run in full:
        expected.setdefault(run.setting_id, []).append(run.run_id)
    metrics = {
        run.run_id: read_metrics(root / "runs" / run.run_id / "metrics.json")
        for run in full
        if is_complete(root / "runs" / run.run_id)
    }
    paper = load_paper_results()
    tables_dir = root / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in TABLES:
        frame = table_frame(table, expected, metrics, paper)
        written.append(write_if_changed(tables_dir / f"table{table}.csv",
                                        frame.to_csv(index=False, float_format="%.4f").encode()))
    learning = learning_frame(metrics)
    written.append(write_if_changed(tables_dir / "learning.csv",
                                    learning.to_csv(index=False, float_format="%.2f").encode()))
    from thadcr.claims import claims_frame  # thadcr.claims builds on this module

    claims = claims_frame(root, full, paper)
    written.append(write_if_changed(tables_dir / "claims.csv", claims.to_csv(index=False, float_format="%.2f").encode()))
    summary = _summary(profile, full, metrics, root)
    previous = _read_summary(root / "summary.json")
    if any(written) or previous is None or _unstamped(previous) != _unstamped(summary):
        atomic_write_bytes(root / "summary.json", json.dumps(summary, indent=2, default=str).encode())
        return summary
    return previous


def _read_summary(path: Path) -> dict[str, Any] | None:
    """The summary.json a render wrote, or None (absent or unreadable: it is written again)."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _summary(profile: str, full: list[Run], metrics: dict[str, dict], root: Path) -> dict[str, Any]:
    executions = []
    for path in sorted((root / "executions").glob("*.json")):
        try:
            executions.append(json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise ReproduceError(f"{path}: not valid JSON ({error}); delete it") from None
    data: dict[str, Any] = {}
    for run in full:
        if run.run_id in metrics and run.dataset not in data:
            m = metrics[run.run_id]
            data[run.dataset] = {"data_root": m.get("config", {}).get("data_root"), "splits": m.get("data")}
    run_versions = [m.get("versions") for m in metrics.values() if m.get("versions")]
    return {
        "profile": profile,
        "datasets": data,
        "runs": {
            "planned": len(full),
            "complete": len(metrics),
            "missing": [run.run_id for run in full if run.run_id not in metrics],
        },
        "wall_time_s": {
            "sum_of_runs": sum(float(m.get("wall_time_s", 0.0)) for m in metrics.values()),
            "execute_elapsed": sum(float(e.get("elapsed_s", 0.0)) for e in executions),
            "execute_calls": [
                {k: e.get(k) for k in ("started", "shard", "jobs", "elapsed_s", "machine")} for e in executions
            ],
        },
        "machine": {
            **(executions[-1]["machine"] if executions and "machine" in executions[-1] else machine()),
            "run_devices": sorted({str(m.get("device")) for m in metrics.values()}),
            "run_machines": _unique(m.get("machine") for m in metrics.values()),
            "execute_machines": _unique(e.get("machine") for e in executions),
        },
        "versions": {"render": package_versions(), "runs": run_versions[0] if run_versions else None},
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _unique(items: Iterable[Any]) -> list[Any]:
    return [json.loads(text) for text in sorted({json.dumps(item, sort_keys=True) for item in items if item})]


def paper_layout(frame: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A table CSV in the paper's layout: rows (method, then ours / paper), columns direction x R@k
    and R-sum, the six recalls added (what the claims compare, `thadcr.claims`)."""
    columns = pd.MultiIndex.from_tuples(
        [(direction, f"R@{k}") for direction in ("Text-to-Audio", "Audio-to-Text") for k in (1, 5, 10)]
        + [("", "R-sum")]
    )
    methods = list(dict.fromkeys(frame["method"]))
    index = pd.MultiIndex.from_product([methods, ["ours", "paper"]], names=["method", ""])
    out = pd.DataFrame("", index=index, columns=columns)

    def fmt(mean: float, std: float = math.nan) -> str:
        if math.isnan(mean):
            return "missing"
        return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"

    recalls = frame[frame.metric.isin(METRICS)]
    for row in recalls.itertuples():
        column = columns[METRICS.index(row.metric)]
        out.loc[(row.method, "ours"), column] = fmt(row.ours_mean, row.ours_std)
        out.loc[(row.method, "paper"), column] = fmt(row.paper_mean, row.paper_std)
    sums = recalls.groupby("method", sort=False)[["ours_mean", "paper_mean"]].sum(min_count=len(METRICS))
    for method, row in sums.iterrows():
        out.loc[(method, "ours"), ("", "R-sum")] = fmt(row.ours_mean)
        out.loc[(method, "paper"), ("", "R-sum")] = fmt(row.paper_mean)
    return out


# ----------------------------------------------------------------------------- dry run and estimate
DRY_RUN_FORMATS = ("table", "csv", "json")
GPU_CHECK_FILE = "benchmarks/out/gpu_check.json"  # benchmarks/gpu_check.py's default --out
GPU_CHECK_COMMAND = f".venv/bin/python benchmarks/gpu_check.py --out {GPU_CHECK_FILE}"
GPU_CHECK_VARIANTS = ("DP", "THA", "THA+DCR")  # the variants gpu_check.py times


def last_epoch(run_dir: Path) -> int:
    """The last epoch an unfinished run logged (thadcr.train rewrites log.csv after each); 0 when none."""
    try:
        with open(run_dir / "log.csv", newline="") as stream:
            return max((int(row["epoch"]) for row in csv.DictReader(stream)), default=0)
    except (OSError, KeyError, ValueError, TypeError):
        return 0


def run_state(run: Run, run_dir: Path) -> tuple[str, str, float]:
    """(state, detail, share of the run already trained) of a planned run's folder: "done";
    "stale" with its differing keys (`stale_settings`; it must be trained again); "unreadable"
    (its metrics.json has no config); "in progress" with its last logged epoch; "to do" (no folder)."""
    if is_complete(run_dir):
        try:
            differences = stale_settings(run, run_dir)
        except ReproduceError:
            return "unreadable", "metrics.json without a readable config: move the folder away to re-run it", 0.0
        if differences:
            return "stale", "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in differences.items()), 0.0
        return "done", "", 1.0
    if run_dir.is_dir():
        epoch, epochs = last_epoch(run_dir), run.config().epochs
        return "in progress", f"epoch {epoch} of {epochs}", min(epoch / epochs, 1.0)
    return "to do", "", 0.0


def finished_records(root: Path) -> list[dict[str, Any]]:
    """The readable metrics.json (with a config) of every finished run folder under ``root``."""
    records = []
    for path in sorted(root.glob("*/metrics.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("config"), dict):
            records.append(record)
    return records


def optimiser_steps(epochs: int, batch_size: int, max_steps_per_epoch: int, captions: int) -> int:
    """Optimiser steps of a run on ``captions`` training captions: epochs x the global batches of an
    epoch as `thadcr.datasets.GlobalBatchSampler` deals them (no partial batch, at most
    ``max_steps_per_epoch`` when it is not 0); 0 when the captions do not fill one batch."""
    from thadcr.datasets import GlobalBatchSampler

    try:
        return epochs * len(GlobalBatchSampler(captions, batch_size, 0, max_steps=max_steps_per_epoch))
    except ValueError:
        return 0


def train_captions(config: Config, records: list[dict[str, Any]]) -> tuple[int | None, str]:
    """(training captions of the run's data set, where the number comes from): the data at
    ``data_root`` read as training reads it, else the "data" block of a finished run's metrics.json
    on the same ``data_root``; (None, why) when neither is there."""
    from thadcr.datasets import DatasetError, load_split

    root = Path(config.data_root)
    if root.is_dir():
        try:
            split = load_split(root, config.layout, "train", config.audio_pattern, config.max_missing_share)
        except (DatasetError, OSError) as error:
            return None, f"data at {root} unusable ({str(error).splitlines()[0]}): steps unknown"
        return len(split.captions), f"read from {root}"
    for record in records:
        captions = record.get("data", {}).get("train", {}).get("captions")
        if record["config"].get("data_root") == config.data_root and isinstance(captions, int):
            return captions, "the data block of finished runs' metrics.json"
    return None, f"data not found at {root}: steps unknown"


def step_time(record: dict[str, Any]) -> tuple[int, float] | None:
    """(optimiser steps, wall time per step) of a finished run: loading, validation and test included."""
    config = record["config"]
    try:
        captions = int(record["data"]["train"]["captions"])
        steps = optimiser_steps(int(config["epochs"]), int(config["batch_size"]),
                                int(config.get("max_steps_per_epoch", 0)), captions)  # fmt: skip
        wall = float(record["wall_time_s"])
    except (KeyError, TypeError, ValueError):
        return None
    return (steps, wall / steps) if steps else None


def gpu_variant(variant: str) -> str:
    """The variant of gpu_check.py's three whose step costs about as much (DCR's factor heads cost
    about what DP's do: README, training step vs DP)."""
    parts = VARIANT_PARTS[variant]
    return "THA+DCR" if parts.tha and parts.factors else "THA" if parts.tha else "DP"


def load_gpu_check(path: Path, profile: str) -> tuple[dict[str, Any] | None, str]:
    """(gpu_check.py's results, a note) when ``path`` holds training step times of this plan's
    profile (paper-* for ``paper``, tiny for ``tiny``); (None, why not) otherwise."""
    if not path.is_file():
        return None, f"{path} not found"
    try:
        results = json.loads(path.read_text())
        measured = {variant: float(results["training"][variant]["step_s"]) for variant in GPU_CHECK_VARIANTS}
        ours = (results["profile"] == "tiny") == (profile == "tiny")
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{path} has no training step times (gpu_check.py without CUDA measures none)"
    if not ours:
        return None, f"{path} measured profile {results['profile']}, not this plan's"
    return {"step_s": measured, "batch": results.get("batch"), "device": results.get("device")}, ""


@dataclasses.dataclass
class StepTimes:
    """Measured seconds per optimiser step for a plan's runs: its finished runs' (wall time / steps,
    by audio encoder, variant and steps) and gpu_check.py's training figures (None: no usable file).

    A finished run's time per step also carries its evaluations and start-up, so it stands for runs
    of as many steps only: a run of 2 steps would make one of 450 look 400 times longer.
    """

    runs: dict[tuple[str, str, int], list[float]]
    gpu: dict[str, Any] | None

    @classmethod
    def measure(cls, records: list[dict[str, Any]], gpu: dict[str, Any] | None) -> "StepTimes":
        runs: dict[tuple[str, str, int], list[float]] = {}
        for record in records:
            measured, config = step_time(record), record["config"]
            if measured is not None:
                key = (config.get("audio_encoder"), config.get("variant"), measured[0])
                runs.setdefault(key, []).append(measured[1])
        return cls(runs, gpu)

    def _finished(self, encoder: str, variant: str | None, steps: int | None) -> list[float]:
        return [s for (e, v, n), times in self.runs.items() for s in times
                if e == encoder and variant in (None, v) and steps in (None, n)]  # fmt: skip

    def lookup(self, config: Config, steps: int | None) -> tuple[float | None, str]:
        """(seconds per step, source) for a run of ``steps`` steps (None: unknown): the median of
        finished runs of the same encoder, variant and steps; else gpu_check's figure (HTS-AT at the
        run's batch size; training steps only); else the median of finished runs of the same encoder
        and steps; else (None, "")."""
        same = self._finished(config.audio_encoder, config.variant, steps)
        if same:
            return statistics.median(same), "finished runs"
        gpu = self.gpu
        if gpu and config.audio_encoder == "htsat" and gpu["batch"] == config.batch_size:
            return gpu["step_s"][gpu_variant(config.variant)], "gpu_check"
        near = self._finished(config.audio_encoder, None, steps)
        if near:
            return statistics.median(near), "finished runs, other variants"
        return None, ""


def shard_of(runs: Sequence[Run], shard: str | None) -> dict[str, str]:
    """Run id -> "k/n": the shard of ``shard``'s count n that takes it (`select_shard`)."""
    count = parse_shard(shard)[1]
    return {run.run_id: f"{k}/{count}" for k in range(count) for run in select_shard(runs, f"{k}/{count}")}


def validations(config: Config) -> int:
    """The epochs a run validates: every ``val_every``-th and the last."""
    return sum(1 for epoch in range(1, config.epochs + 1) if epoch % config.val_every == 0 or epoch == config.epochs)


def plan_row(run: Run, root: Path, captions: int | None, times: StepTimes, shard: str) -> dict[str, Any]:
    """One run of the listing: what it is, its state on disk, its shard, steps and estimate."""
    config = run.config()
    state, detail, trained = run_state(run, root / run.run_id)
    changes = profile_changes(run.profile, run.dataset, config)
    steps = None if captions is None else optimiser_steps(
        config.epochs, config.batch_size, config.max_steps_per_epoch, captions)  # fmt: skip
    step_s, source = times.lookup(config, steps)
    hours = None if steps is None or step_s is None else steps * step_s / 3600
    left = 0.0 if trained == 1.0 else None if hours is None else hours * (1 - trained)
    return {
        "run": run.run_id, "tables": ",".join(map(str, run.tables)), "dataset": run.dataset,
        "variant": run.variant, "seed": run.seed,
        "changes": " ".join(f"{k}={override_text(v)}" for k, v in changes.items() if k not in ("variant", "seed")),
        "state": state, "detail": detail, "shard": shard, "steps": steps, "evaluations": validations(config) + 1,
        "step_s": step_s, "time_from": source, "hours": hours, "hours_left": left,
    }  # fmt: skip


def plan_rows(runs: Sequence[Run], results_dir: str | Path, shard: str | None, timing: Path) -> tuple[list, list]:
    """(a row per run of the whole plan, notes): states, shards and estimates; reads, never writes."""
    root = runs_dir(results_dir, runs[0].profile)
    records = finished_records(root)
    gpu, gpu_note = load_gpu_check(timing, runs[0].profile)
    times = StepTimes.measure(records, gpu)
    first: dict[str, Run] = {}  # a data set's settings are the same in all its runs: read it once
    for run in runs:
        first.setdefault(run.dataset, run)
    sizes = {dataset: train_captions(run.config(), records) for dataset, run in first.items()}
    shards = shard_of(runs, shard)
    rows = [plan_row(run, root, sizes[run.dataset][0], times, shards[run.run_id]) for run in runs]
    return rows, plan_notes(runs[0].profile, rows, sizes, gpu, gpu_note, timing)


def plan_notes(profile: str, rows: list[dict], sizes: dict[str, tuple[int | None, str]], gpu: dict | None,
               gpu_note: str, timing: Path) -> list[str]:
    """Where the steps and step times come from, and what to run when a step time is missing."""
    notes = [f"{dataset}: {n} training captions ({source})" if n is not None else f"{dataset}: {source}"
             for dataset, (n, source) in sizes.items()]  # fmt: skip
    sources = {row["time_from"] for row in rows}
    if sources & {"finished runs", "finished runs, other variants"}:
        notes.append("step time from finished runs of this profile with as many steps: wall time / steps "
                     "(evaluations included)")  # fmt: skip
    if "gpu_check" in sources:
        notes.append(f"step time from {timing}: training steps only, one GPU ({gpu['device']}), batch {gpu['batch']}"
                     "; evaluations and data loading not included")  # fmt: skip
    unknown = sum(row["step_s"] is None for row in rows)
    finish = "let one run of each variant finish in this results folder (its wall time / steps is used)"
    if unknown and profile == "tiny":
        notes.append(f"no measured step time for {unknown} of the plan's runs: {finish}")
    elif unknown:
        notes.append(f"no measured step time for {unknown} of the plan's runs ({gpu_note or 'gpu_check does not fit'}"
                     f"): run `{GPU_CHECK_COMMAND}` on the GPU that will train them (or give its file with --timing)"
                     f", or {finish}")  # fmt: skip
    return notes


def plan_totals(rows: list[dict], listed: list[dict]) -> dict[str, Any]:
    """Counts by state and estimated hours: left for the listed runs and per shard, for the whole plan."""
    def hours(part: list[dict], key: str) -> float | None:
        values = [row[key] for row in part]
        return None if any(v is None for v in values) else sum(values)

    shards = {row["shard"]: [r for r in rows if r["shard"] == row["shard"]] for row in rows}
    return {
        "runs": len(listed),
        "states": dict(collections.Counter(row["state"] for row in listed)),  # in order of first appearance
        "hours_left": hours(listed, "hours_left"),
        "hours_all_runs": hours(rows, "hours"),
        "hours_left_by_shard": {shard: hours(part, "hours_left") for shard, part in shards.items()},
        "runs_without_estimate": sum(row["hours_left"] is None for row in listed),
    }


def _hours(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def text_table(cells: list[dict[str, str]], right: tuple[str, ...] = ()) -> str:
    """Rows of text cells as aligned columns (``right``: the right-aligned ones), headed by their keys."""
    widths = {key: max(len(key), *(len(row[key]) for row in cells)) for key in cells[0]}

    def line(row: dict[str, str]) -> str:
        return "  ".join(row[k].rjust(w) if k in right else row[k].ljust(w) for k, w in widths.items()).rstrip()

    return "\n".join([line({key: key for key in widths}), *map(line, cells)])


def format_table(rows: list[dict], totals: dict, notes: list[str], header: str) -> str:
    """The listing for people: a line per run, then the counts, the estimate and the notes."""
    cells = [{
        "run": r["run"], "tables": r["tables"], "dataset": r["dataset"], "variant": r["variant"],
        "seed": str(r["seed"]), "changes": r["changes"] or "-",
        "state": f"{r['state']}: {r['detail']}" if r["detail"] else r["state"], "shard": r["shard"],
        "steps": "?" if r["steps"] is None else str(r["steps"]), "evals": str(r["evaluations"]),
        "s/step": "?" if r["step_s"] is None else f"{r['step_s']:.3f}", "hours": _hours(r["hours"]),
    } for r in rows]  # fmt: skip
    states = ", ".join(f"{n} {state}" for state, n in totals["states"].items())
    lines = [header, text_table(cells, right=("seed", "steps", "evals", "s/step", "hours")) if cells else "(no runs)",
             f"{totals['runs']} runs: {states}",
             f"estimate: {_hours(totals['hours_left'])} h left for these runs, {_hours(totals['hours_all_runs'])} h "
             "for every run of the plan (done ones included)"]  # fmt: skip
    if totals["runs_without_estimate"]:
        lines.append(f"{totals['runs_without_estimate']} run(s) without an estimate: the notes below say why")
    if len(totals["hours_left_by_shard"]) > 1:
        lines.append("hours left by shard: " + ", ".join(
            f"{shard} {_hours(h)}" for shard, h in totals["hours_left_by_shard"].items()))  # fmt: skip
    return "\n".join(lines + notes)


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """Rows as CSV: floats with 4 decimals, None as an empty cell, ints as they are."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[k] is None else f"{row[k]:.4f}" if isinstance(row[k], float) else row[k]
                         for k in columns])  # fmt: skip
    return buffer.getvalue().rstrip("\n")


def dry_run(runs: Sequence[Run], results_dir: str | Path, shard: str | None, fmt: str = "table",
            timing: str | Path = GPU_CHECK_FILE) -> str:
    """The plan as text (``fmt`` table, csv or json): every run of ``shard`` (all without one) with
    its state, shard, optimiser steps, evaluations and estimated hours, then the totals and notes
    (csv: the notes go to stderr). Runs nothing, writes nothing."""
    if fmt not in DRY_RUN_FORMATS:
        raise ReproduceError(f"--format {fmt!r}: choose among {', '.join(DRY_RUN_FORMATS)}")
    rows, notes = plan_rows(runs, results_dir, shard, Path(timing))
    mine = {run.run_id for run in select_shard(runs, shard)}
    listed = [row for row in rows if row["run"] in mine]
    totals = plan_totals(rows, listed)
    if fmt == "csv":
        print("\n".join(notes), file=sys.stderr)  # the notes beside the CSV, which stays one table
        return csv_text(listed, list(rows[0]))
    root = runs_dir(results_dir, runs[0].profile)
    if fmt == "json":
        document = {"profile": runs[0].profile, "runs_dir": str(root), "shard": shard or "0/1", "runs": listed,
                    "totals": totals, "notes": notes}  # fmt: skip
        return json.dumps(document, indent=2)
    header = f"plan of profile {runs[0].profile} in {root}: {len(listed)} of {len(rows)} runs (shard {shard or '0/1'})"
    return format_table(listed, totals, notes, header)


def render_only(runs: Sequence[Run], results_dir: str | Path, seeds: int | None, tha_seeds: int | None = None) -> int:
    """Write the tables from the finished runs without training any (the step after every shard of
    a cluster array has ended). Refuses stale runs as `execute` does; returns 1 while runs of
    ``runs`` are unfinished (the tables are written all the same, their cells "missing"), else 0."""
    profile = runs[0].profile
    root = runs_dir(results_dir, profile)
    check_not_stale(runs, root)
    render(profile, results_dir, seeds=seeds, tha_seeds=tha_seeds)
    missing = [run.run_id for run in runs if not is_complete(root / run.run_id)]
    tables = Path(results_dir) / profile / "tables"
    print(f"{len(runs) - len(missing)} of {len(runs)} run(s) complete; tables in {tables}")
    if missing:
        print(f"thadcr reproduce: {len(missing)} run(s) not finished, their cells say missing: {', '.join(missing)}",
              file=sys.stderr)  # fmt: skip
    return 1 if missing else 0


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``thadcr reproduce``; the help's epilog lists the keys ``--set`` takes."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = describe_keys(exclude=PLAN_KEYS)
    parser.add_argument(
        "--profile", required=True, choices=PROFILES,
        help="tiny (embedded data, CPU) or paper (profiles paper-audiocaps and paper-clotho, GPUs)",
    )  # fmt: skip
    parser.add_argument("--tables", default="1,2,3,4,5", help="comma-separated table numbers (default 1,2,3,4,5)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds of the seeded tables' rows (default: tiny 8, Tables 4-5 4; paper 3, Table 1)")
    parser.add_argument("--tha-seeds", type=int, default=None,
                        help="seeds of their THA rows (default: tiny 1, THA scoring being costly; paper as --seeds)")
    parser.add_argument("--shard", default=None, help="i/n: run only every n-th run starting at i (0-based)")
    parser.add_argument("--jobs", type=int, default=1, help="runs executed at once (default 1)")
    parser.add_argument("--results", default="results", help="results folder (default results)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="change a key in every run (repeatable; the keys below, the value read as YAML), "
        "e.g. --set epochs=6 with --results results/epochs6",
    )  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", "-n", action="store_true",
                      help="list the plan (this --shard's runs) with each run's state, shard, optimiser steps, "
                      "evaluations and estimated hours; run nothing, write nothing")  # fmt: skip
    mode.add_argument("--render-only", action="store_true",
                      help="train nothing: write the tables from the finished runs (after every shard has ended); "
                      "exit status 1 while runs are unfinished")  # fmt: skip
    parser.add_argument("--format", choices=DRY_RUN_FORMATS, default=None,
                        help="--dry-run's output: table (default), csv or json (for scripts)")  # fmt: skip
    parser.add_argument("--timing", default=GPU_CHECK_FILE, metavar="FILE",
                        help=f"--dry-run: benchmarks/gpu_check.py's output with measured step times "
                        f"(default {GPU_CHECK_FILE}, used when present)")  # fmt: skip
    parser.add_argument("--launcher", metavar="COMMAND",
                        help="train each run with 'COMMAND -m thadcr.cli train ...' instead of a papermill "
                        "notebook, e.g. 'torchrun --standalone --nproc_per_node 4' (a node's GPUs for one run)")


def plan_from_args(args: argparse.Namespace) -> list[Run]:
    """The plan the options ask for, every option checked first: a ReproduceError names the bad one."""
    try:
        tables = [int(t) for t in args.tables.split(",") if t.strip()]
    except ValueError:
        raise ReproduceError(f"--tables {args.tables!r}: give table numbers like 1,2,3") from None
    try:
        overrides = dict(parse_override(text) for text in args.set)
    except ConfigError as error:
        raise ReproduceError(str(error)) from None
    if args.jobs < 1:
        raise ReproduceError(f"--jobs {args.jobs}: give the number of runs at once, 1 or more")
    parse_shard(args.shard)
    if args.format and not args.dry_run:
        raise ReproduceError(f"--format {args.format}: it formats --dry-run's listing; add --dry-run")
    if args.render_only and args.shard:
        raise ReproduceError("--render-only writes the tables of the whole plan: leave out --shard")
    try:
        if args.launcher is not None and not shlex.split(args.launcher):
            raise ValueError("empty")
    except ValueError as error:
        raise ReproduceError(f"--launcher {args.launcher!r}: {error}; e.g. 'torchrun --nproc_per_node 4'") from None
    return plan(args.profile, tables, args.seeds, overrides, args.tha_seeds)


def run_from_args(args: argparse.Namespace) -> int:
    """Plan, then list it (--dry-run), render it (--render-only) or execute this shard and render
    the tables. Exit status 2 on a bad option (nothing runs), 1 when a run failed, a results folder
    cannot be used or (--render-only) runs are unfinished, else 0."""
    try:
        runs = plan_from_args(args)
    except ReproduceError as error:
        print(f"thadcr reproduce: error: {error}", file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            print(dry_run(runs, args.results, args.shard, args.format or "table", args.timing))
            return 0
        if args.render_only:
            return render_only(runs, args.results, args.seeds, args.tha_seeds)
        executor = launcher_executor(args.launcher) if args.launcher else None
        record = execute(runs, args.results, jobs=args.jobs, shard=args.shard, executor=executor)
        render(args.profile, args.results, seeds=args.seeds, tha_seeds=args.tha_seeds)
    except ReproduceError as error:
        print(f"thadcr reproduce: error: {error}", file=sys.stderr)
        return 1
    print(
        f"{len(record['done'])} run(s) done, {len(record['skipped'])} already complete, "
        f"{len(record['failed'])} failed; tables in {Path(args.results) / args.profile / 'tables'}"
    )
    return 1 if record["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m thadcr.reproduce``: the same as ``thadcr reproduce``, exit statuses included."""
    from thadcr.cli import main as thadcr_main

    return thadcr_main(["reproduce", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
