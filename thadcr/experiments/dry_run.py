"""The dry run of a plan (``thadcr reproduce --dry-run``): each run's state on disk, shard, optimiser
steps, evaluations and estimated hours, from the step times of finished runs or of
benchmarks/gpu_check.py, with the totals and notes, as a table, CSV or JSON. Runs nothing, writes
nothing.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thadcr.config import VARIANT_PARTS, Config
from thadcr.experiments.plan import (
    ReproduceError, Run, is_complete, override_text, parse_shard, profile_changes, runs_dir, select_shard,
    stale_settings,
)  # fmt: skip

DRY_RUN_FORMATS = ("table", "csv", "json")
GPU_CHECK_FILE = "benchmarks/out/gpu_check.json"  # benchmarks/gpu_check.py's default --out
GPU_CHECK_COMMAND = f".venv/bin/python benchmarks/gpu_check.py --out {GPU_CHECK_FILE}"
GPU_CHECK_VARIANTS = ("DP", "THA", "THA+DCR")  # the variants gpu_check.py times


def last_epoch(run_dir: Path) -> int:
    """The last epoch an unfinished run logged (thadcr.run.train rewrites log.csv after each); 0 when none."""
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
    epoch as `thadcr.data.datasets.GlobalBatchSampler` deals them (no partial batch, at most
    ``max_steps_per_epoch`` when it is not 0); 0 when the captions do not fill one batch."""
    from thadcr.data.datasets import GlobalBatchSampler

    try:
        return epochs * len(GlobalBatchSampler(captions, batch_size, 0, max_steps=max_steps_per_epoch))
    except ValueError:
        return 0


def train_captions(config: Config, records: list[dict[str, Any]]) -> tuple[int | None, str]:
    """(training captions of the run's data set, where the number comes from): the data at
    ``data_root`` read as training reads it, else the "data" block of a finished run's metrics.json
    on the same ``data_root``; (None, why) when neither is there."""
    from thadcr.data.readers import DatasetError, load_split

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
