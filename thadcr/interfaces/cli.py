"""The `thadcr` command: data build/check, train, evaluate, numerics, search, reproduce, pretrain.

`python -m thadcr` is the same command. `key=value` overrides may come anywhere after the
command, also after its options; `thadcr train --help` lists every key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from thadcr import __version__
from thadcr.config import SPLITS, available_profiles, describe_keys, make_config
from thadcr.errors import ThadcrError, UsageError
from thadcr.files import AUDIO_SUFFIXES

EXIT_CODES = """exit status:
  0    done
  1    a run-time error: unusable data or audio, a run that cannot start or go on, a failed
       run of `reproduce`, errors found by `data check`
  2    a usage error: a wrong option, key or value (nothing was run)
  130  interrupted (Ctrl-C)"""


def _data_build(args: argparse.Namespace) -> int:
    from thadcr.data.embedded.build import build

    sizes = {k: v for k, v in (("n_train", args.n_train), ("n_val", args.n_val), ("n_test", args.n_test)) if v}
    summary = build(
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
    from thadcr.data.check import check_dataset

    problems = check_dataset(Path(args.path), layout=args.layout)
    for problem in problems:
        print(problem)
    print(f"{args.path!r}: {problems.summary()}", file=sys.stderr)
    return 1 if problems.counts()["error"] else 0


def _train(args: argparse.Namespace) -> int:
    from thadcr.run.train import train

    config = make_config(args.profile, args.overrides)
    metrics = train(config, args.out, resume=args.resume, progress=not args.quiet)
    if metrics:
        print(json.dumps(metrics["test"], indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from thadcr.run.evaluation import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(args.checkpoint, args.split, args.device, args.overrides), indent=2))
    return 0


def _search(args: argparse.Namespace) -> int:
    from thadcr.interfaces.search import Searcher

    if args.top < 1:
        raise UsageError(f"--top {args.top}: ask for at least 1 clip")
    searcher = Searcher(args.checkpoint, args.split, args.audio_dir, args.device, args.index_dir, progress=True)
    index = searcher.index
    print(f"{len(index.files)} clips, {'encoded into' if index.built else 'read from'} {index.path}", file=sys.stderr)
    for rank, hit in enumerate(searcher(args.query, args.top), 1):
        print(f"{rank:2d}. {hit['score']:+.3f}  {hit['file']}" + (f"  | {hit['caption']}" if hit["caption"] else ""))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from thadcr.interfaces import reproduce_cli

    return reproduce_cli.run_from_args(args)


def _pretrain(args: argparse.Namespace) -> int:
    from thadcr.experiments import pretrain

    return pretrain.run_from_args(args)


def _numerics_trace(args: argparse.Namespace) -> int:
    from thadcr.run import numerics_trace

    events = numerics_trace.trace(args.run, args.out, args.steps)
    print(f"{events} events -> {args.out}")
    return 0


def _numerics_compare(args: argparse.Namespace) -> int:
    from thadcr.run import numerics_trace

    print(numerics_trace.describe_difference(args.a, args.b))
    return 0 if numerics_trace.compare(args.a, args.b) is None else 1


def _command(commands: argparse._SubParsersAction, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand's parser; it is kept in the namespace to report its own usage errors."""
    parser = commands.add_parser(
        name, help=help, description=help, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
    )
    parser.set_defaults(command_parser=parser)
    return parser


def _add_data(commands: argparse._SubParsersAction) -> None:
    data = _command(commands, "data", "build or check data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="{build,check}")
    build = _command(data_commands, "build", "build the embedded real-audio data set from Debian packages")
    build.add_argument("--flavour", default="all", choices=("audiocaps", "clotho", "labels", "all"),
                       help="which flavour to build (default: all)")  # fmt: skip
    build.add_argument("--out", default="data/embedded", help="folder of the flavours (default: data/embedded)")
    build.add_argument("--packages", help="folder of downloaded .deb files or extracted package trees "
                       "(default: <out>/../packages, downloaded with apt-get when missing)")  # fmt: skip
    build.add_argument("--seed", type=int, default=0, help="seed of the scene planner and mixer (default: 0)")
    for split in SPLITS:
        build.add_argument(f"--n-{split}", type=int, help=f"{split} clips of the scene flavours (default: built-in)")
    build.add_argument("--clip-seconds", type=float, default=5.0, help="length of each clip in seconds (default: 5.0)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(func=_data_build)
    check = _command(data_commands, "check", "validate a data set folder (Clotho v2 or AudioCaps layout)")
    check.add_argument("path", help="the data set's root folder")
    check.add_argument("--layout", choices=("clotho", "audiocaps"), help="its layout (default: detected)")
    check.set_defaults(func=_data_check)


def _add_numerics(commands: argparse._SubParsersAction) -> None:
    numerics = _command(commands, "numerics", "find where two machines' numbers part (op-by-op traces)")
    numerics_commands = numerics.add_subparsers(dest="numerics_command", required=True, metavar="{trace,compare}")
    trace = _command(numerics_commands, "trace", "fingerprint a finished run's first training steps, op by op")
    trace.add_argument("--run", default="results/tiny/runs/clotho-DP-htsat-K8-a0.01-b0.005-s0",
                       help="a finished run's folder (default: the committed-run test's run)")  # fmt: skip
    trace.add_argument("--out", required=True, help="the trace file to write (JSON lines)")
    trace.add_argument("--steps", type=int, default=3, help="optimiser steps to trace (default: 3)")
    trace.set_defaults(func=_numerics_trace)
    compare = _command(numerics_commands, "compare", "name the first operation whose bits differ between two traces "
                       "(exit status 1 when they differ)")  # fmt: skip
    compare.add_argument("a", help="a trace file, e.g. results/tiny/numerics/trace-*.jsonl")
    compare.add_argument("b", help="another trace file, e.g. your machine's")
    compare.set_defaults(func=_numerics_compare)


def _add_train_evaluate(commands: argparse._SubParsersAction) -> None:
    train = _command(commands, "train", "train and test one run", epilog=describe_keys())
    profiles = ", ".join(available_profiles())
    train.add_argument("--profile", default="tiny", help=f"the settings to start from: {profiles} (default: tiny)")
    train.add_argument("--out", required=True, help="run folder (metrics.json, log.csv, checkpoints)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="change a key of the profile (keys below)")
    train.set_defaults(func=_train, interrupt_hint="; what was saved is kept: add --resume to the same command")

    evaluate = _command(commands, "evaluate", "evaluate a checkpoint on a split", epilog=describe_keys())
    evaluate.add_argument("checkpoint", help="best.pt or last.pt of a run folder (its config travels inside)")
    evaluate.add_argument("--split", default="test", choices=SPLITS, help="the split to score (default: test)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, ... (default: auto; the key "
                          "device=... is the same)")  # fmt: skip
    evaluate.add_argument("overrides", nargs="*", metavar="key=value",
                          help="change a key of the checkpoint's config, e.g. data_root=... (keys below)")  # fmt: skip
    evaluate.set_defaults(func=_evaluate)


def _add_search(commands: argparse._SubParsersAction) -> None:
    search = _command(commands, "search", "rank the clips of a split, or your own audio files, for a caption")
    search.add_argument("query", help="a caption, e.g. \"a dog barks, then a bell rings\"")
    search.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run folder")
    where = search.add_mutually_exclusive_group()
    where.add_argument("--split", default="test", choices=SPLITS,
                       help="the split of the checkpoint's data set to rank (default: test)")  # fmt: skip
    where.add_argument("--audio-dir", metavar="DIR", help=f"rank the audio files under DIR instead "
                       f"({' '.join(AUDIO_SUFFIXES)}, any depth, any rate and channels; the centre clip_seconds of "
                       "each)")  # fmt: skip
    search.add_argument("--top", type=int, default=5, help="how many clips to show (default: 5)")
    search.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, ... (default: auto)")
    search.add_argument("--index-dir", metavar="DIR", help="where clip indexes are kept (default: <cache_dir>/search "
                        "for a split, ~/.cache/thadcr/search for --audio-dir)")  # fmt: skip
    search.set_defaults(func=_search)


def _add_reproduce_pretrain(commands: argparse._SubParsersAction) -> None:
    from thadcr.interfaces import reproduce_cli

    repro = _command(commands, "reproduce", "run the experiments of Tables 1-5 and render them")
    reproduce_cli.add_arguments(repro)
    repro.set_defaults(func=_reproduce, interrupt_hint="; finished runs are kept: run the same command again")
    from thadcr.experiments import pretrain

    pre = _command(commands, "pretrain", "pretrain the tiny profile's audio encoders as taggers")
    pretrain.add_arguments(pre)
    pre.set_defaults(func=_pretrain, interrupt_hint="; the same command continues from the last saved step")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thadcr", description=__doc__, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(commands)
    _add_train_evaluate(commands)
    _add_numerics(commands)
    _add_search(commands)
    _add_reproduce_pretrain(commands)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; ``key=value`` arguments after a command's options (which argparse
    leaves over) join its ``overrides`` in the order given. Usage errors exit with status 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [text for text in extra if "=" in text and not text.startswith("-")]
    if extra != overrides or (overrides and not hasattr(args, "overrides")):
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def _fail(error: BaseException, status: int) -> int:
    print(f"thadcr: error: {error}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see EXIT_CODES)."""
    args = parse_args(argv)
    try:
        return args.func(args)
    except UsageError as error:
        return _fail(error, 2)
    except (ThadcrError, FileNotFoundError) as error:  # their messages say what is wrong and what to do
        return _fail(error, 1)
    except KeyboardInterrupt:
        print(f"thadcr: interrupted{getattr(args, 'interrupt_hint', '')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
