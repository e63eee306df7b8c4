"""Execute a plan's runs: each one as a papermill notebook (``notebooks/train.py``) or with a launcher
(``torchrun ... -m thadcr train``), into ``results/<profile>/runs/<run-id>/``.

``execute(runs, results_dir)`` skips finished runs (metrics.json present), resumes interrupted
ones, takes only its ``shard="i/n"`` of the plan, fills the frozen encoders' feature caches first
and records each call in ``results/<profile>/executions/``, also when it is interrupted.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from thadcr import numerics
from thadcr.experiments.plan import (
    REPO_ROOT, ReproduceError, Run, check_not_stale, config_from_parameters, is_complete, override_text,
    profile_changes, runs_dir, select_shard, train_profile,
)  # fmt: skip
from thadcr.files import atomic_write_bytes
from thadcr.run.provenance import machine

TRAIN_NOTEBOOK = REPO_ROOT / "notebooks" / "train.py"
# what a run's executed notebook shows instead of its figure (the curves are in the run's log.csv)
FIGURE_NOT_KEPT = "(figure not kept in the committed copy: execute notebooks/train.py to draw it)"


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


def train_arguments(parameters: dict[str, Any]) -> list[str]:
    """The `thadcr train` arguments of one run (notebooks/train.py's parameters, :meth:`~thadcr.experiments.plan.Run.parameters`):
    its profile, its folder, ``--resume`` for an earlier attempt, and each key that differs."""
    profile = train_profile(parameters["profile"], parameters["dataset"])
    changes = profile_changes(parameters["profile"], parameters["dataset"], config_from_parameters(parameters))
    resume = ["--resume"] if parameters["resume"] else []
    return ["train", "--profile", profile, "--out", str(parameters["out_dir"]), *resume,
            *(f"{key}={override_text(value)}" for key, value in changes.items())]  # fmt: skip


def launcher_executor(launcher: str) -> Executor:
    """An executor that trains each run with ``<launcher> -m thadcr train ...`` (e.g.
    ``torchrun --standalone --nproc_per_node 4``: one run on all the GPUs) instead of papermill;
    the run's output goes to its papermill.log, and no run.ipynb is written."""
    command = shlex.split(launcher)
    if not command:
        raise ReproduceError("--launcher is empty: give a command such as 'torchrun --nproc_per_node 4'")

    def launch(notebook: Path, output: Path, parameters: dict[str, Any], log: Path) -> int:
        quiet = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
        env = {**numerics.environment(config_from_parameters(parameters).numerics), **quiet}
        with open(log, "w") as stream:
            argv = [*command, "-m", "thadcr", *train_arguments(parameters)]
            stream.write(f"$ {shlex.join(argv)}\n")
            stream.flush()
            return subprocess.run(argv, stdout=stream, stderr=subprocess.STDOUT, check=False, env=env).returncode

    return launch


def drop_figures(path: Path) -> None:
    """Replace each image output of the executed notebook at `path` with the line FIGURE_NOT_KEPT,
    in place: with its PNG a run's notebook takes about 94 kB instead of 24 kB, and the committed
    plan holds 110 of them."""
    notebook = json.loads(path.read_text())
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            if any(kind.startswith("image/") for kind in output.get("data", {})):
                output["data"], output["metadata"] = {"text/plain": [FIGURE_NOT_KEPT]}, {}
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def _execute_one(run: Run, notebook: Path, root: Path, executor: Executor) -> tuple[str, str]:
    """Run one notebook; returns (status, message) with status 'done' or 'failed'."""
    run_dir = root / run.run_id
    resume = run_dir.exists()  # an earlier attempt left files: continue it
    run_dir.mkdir(parents=True, exist_ok=True)
    partial, final = run_dir / "run.partial.ipynb", run_dir / "run.ipynb"  # papermill wants .ipynb names
    log = run_dir / "papermill.log"
    status = executor(notebook, partial, run.parameters(run_dir.resolve(), resume), log)
    if partial.exists():
        if status == 0:  # a failed run's notebook is kept as papermill left it
            drop_figures(partial)
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
    from thadcr.run.train import fill_feature_caches

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
