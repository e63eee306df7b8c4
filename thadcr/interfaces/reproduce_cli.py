"""The options of `thadcr reproduce` and what they run: plan, then list the plan (``--dry-run``),
render its tables (``--render-only``) or execute this shard and render the tables."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from thadcr.config import ConfigError, describe_keys, parse_override
from thadcr.experiments.dry_run import DRY_RUN_FORMATS, GPU_CHECK_FILE, dry_run
from thadcr.experiments.execution import execute, launcher_executor
from thadcr.experiments.plan import PLAN_KEYS, PROFILES, ReproduceError, Run, parse_shard, plan
from thadcr.experiments.tables import render, render_only


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
                        help="seeds of the seeded tables' rows (default: tiny 8; paper 3, Table 1)")
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
                        help="train each run with 'COMMAND -m thadcr train ...' instead of a papermill "
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
