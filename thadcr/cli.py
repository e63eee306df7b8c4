"""The `thadcr` command: data build/check, train, evaluate, search, reproduce."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from thadcr.config import ConfigError, available_profiles, make_config


def _data_build(args: argparse.Namespace) -> int:
    from thadcr import embedded

    sizes = {k: v for k, v in (("n_train", args.n_train), ("n_val", args.n_val), ("n_test", args.n_test)) if v}
    summary = embedded.build(
        Path(args.out),
        flavour=args.flavour,
        packages_dir=Path(args.packages) if args.packages else None,
        seed=args.seed,
        clip_seconds=args.clip_seconds,
        progress=not args.quiet,
        **sizes,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from thadcr.datasets import check_dataset

    problems = check_dataset(Path(args.path), layout=args.layout)
    for problem in problems:
        print(problem)
    errors = [p for p in problems if p.severity == "error"]
    print(f"{args.path}: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)", file=sys.stderr)
    return 1 if errors else 0


def _train(args: argparse.Namespace) -> int:
    from thadcr.train import train

    config = make_config(args.profile, args.overrides)
    metrics = train(config, args.out, resume=args.resume, progress=not args.quiet)
    if metrics:
        print(json.dumps(metrics["test"], indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from thadcr.train import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(args.checkpoint, args.split, args.device, args.overrides), indent=2))
    return 0


def _search(args: argparse.Namespace) -> int:
    from thadcr.search import search

    for rank, hit in enumerate(search(args.query, args.checkpoint, split=args.split, top=args.top, device=args.device), 1):
        print(f"{rank:2d}. {hit['score']:+.3f}  {hit['file']}  | {hit['caption']}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from thadcr import reproduce

    return reproduce.run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thadcr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="build or check data sets").add_subparsers(dest="data_command", required=True)
    build = data.add_parser("build", help="build the embedded real-audio data set from Debian packages")
    build.add_argument("--flavour", default="all", choices=("audiocaps", "clotho", "labels", "all"))
    build.add_argument("--out", default="data/embedded")
    build.add_argument("--packages", help="folder of downloaded .deb files or extracted package trees")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--n-train", type=int)
    build.add_argument("--n-val", type=int)
    build.add_argument("--n-test", type=int)
    build.add_argument("--clip-seconds", type=float, default=5.0)
    build.add_argument("--quiet", action="store_true")
    build.set_defaults(func=_data_build)
    check = data.add_parser("check", help="validate a data set folder (Clotho v2 or AudioCaps layout)")
    check.add_argument("path")
    check.add_argument("--layout", choices=("clotho", "audiocaps"))
    check.set_defaults(func=_data_check)

    train = commands.add_parser("train", help="train and test one run")
    train.add_argument("--profile", default="tiny", help=f"one of {', '.join(available_profiles())}")
    train.add_argument("--out", required=True, help="run folder (metrics.json, log.csv, checkpoints)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--quiet", action="store_true")
    train.add_argument("overrides", nargs="*", metavar="key=value")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on a split")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data_root=...")
    evaluate.set_defaults(func=_evaluate)

    search = commands.add_parser("search", help="rank the clips of a split for a caption")
    search.add_argument("query")
    search.add_argument("--checkpoint", required=True)
    search.add_argument("--split", default="test", choices=("train", "val", "test"))
    search.add_argument("--top", type=int, default=5)
    search.add_argument("--device", default="auto")
    search.set_defaults(func=_search)

    repro = commands.add_parser("reproduce", help="run the experiments of Tables 1-5 and render them")
    from thadcr import reproduce

    reproduce.add_arguments(repro)
    repro.set_defaults(func=_reproduce)
    return parser


def _known_errors() -> tuple[type[Exception], ...]:
    """Errors whose message already says what is wrong and what to do: no traceback for them."""
    from thadcr.audio_io import AudioError
    from thadcr.datasets import DatasetError
    from thadcr.train import RunError

    return (ConfigError, RunError, DatasetError, AudioError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _known_errors() as error:
        print(f"thadcr: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("thadcr: interrupted; finished work is kept (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
