"""Render a plan's tables from its finished runs: ``tables/table1.csv ... table5.csv`` (ours beside
the paper's values, data/paper_results.csv), ``claims.csv`` (`thadcr.experiments.claims`),
``learning.csv`` and ``summary.json``, each rewritten only when its content changed; and a table
in the paper's layout (``paper_layout``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from thadcr.experiments.claims import claims_frame
from thadcr.experiments.plan import (
    EXTRA_METRICS, METRICS, REPO_ROOT, TABLE_DATASET, TABLE_ROWS, TABLES, ReproduceError, Run, check_not_stale,
    is_complete, plan, read_metrics, runs_dir, setting_id,
)  # fmt: skip
from thadcr.files import atomic_write_bytes, write_if_changed
from thadcr.run.metrics import chance_recall
from thadcr.run.provenance import machine, package_versions

PAPER_RESULTS = REPO_ROOT / "data" / "paper_results.csv"


def load_paper_results(path: Path = PAPER_RESULTS) -> pd.DataFrame:
    """The paper's Tables 1-5 (long format: table, method, metric, mean, std)."""
    if not path.is_file():
        raise ReproduceError(f"{path} is missing: it ships with the source checkout (data/paper_results.csv)")
    frame = pd.read_csv(path)
    expected = ["table", "method", "metric", "mean", "std"]
    if list(frame.columns) != expected:
        raise ReproduceError(f"{path}: columns {list(frame.columns)}, expected {expected}")
    return frame


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

    Chance is ``thadcr.run.metrics.chance_recall`` on one gallery of the run's test split (the whole
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
    """Write results/<profile>/tables/table{1..5}.csv, claims.csv (`thadcr.experiments.claims`), learning.csv and
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
    and R-sum, the six recalls added (what the claims compare, `thadcr.experiments.claims`)."""
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
