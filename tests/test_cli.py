"""The `thadcr` command: train, evaluate, search, data check and its errors, end to end in-process."""

import argparse
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import thadcr
from thadcr.interfaces import cli
from thadcr.data.audio_io import AudioError
from thadcr.interfaces.cli import main, parse_args
from thadcr.config import ConfigError, allowed, valid_keys
from thadcr.data.readers import DatasetError
from thadcr.errors import RunError, UsageError
from thadcr.experiments.plan import PLAN_KEYS, ReproduceError

REPO = Path(__file__).resolve().parent.parent

SMALL = ["clip_seconds=1.0", "batch_size=8", "epochs=1", "max_steps_per_epoch=2", "eval_batch=8", "joint_dim=32"]


@pytest.fixture(scope="module")
def trained(synthetic_clotho, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    cache = out.parent / "cache"
    args = ["train", "--profile", "tiny", "--out", str(out), "--quiet", f"data_root={synthetic_clotho}",
            f"cache_dir={cache}", "variant=THA+DCR", *SMALL]
    assert main(args) == 0
    return out


def test_train_evaluate_search(trained, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(trained / "best.pt"), "--split", "test", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    committed = json.loads((trained / "metrics.json").read_text())["test"]
    assert evaluated["t2a_R10"] == pytest.approx(committed["t2a_R10"])
    assert main(["search", "a high tone then a low tone", "--checkpoint", str(trained / "best.pt"), "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["1.", "2.", "3."] and all(".wav" in line for line in lines)
    scores = [float(line.split()[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)


def test_train_refuses_a_finished_run_and_unknown_keys(trained, capsys):
    assert main(["train", "--profile", "tiny", "--out", str(trained), "--quiet"]) == 1  # a run-time error
    assert "finished run" in capsys.readouterr().err
    assert main(["train", "--profile", "tiny", "--out", str(trained.parent / "x"), "colour=red"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'colour'" in err and "n_factors" in err


def test_data_check_exit_codes(synthetic_clotho, tmp_path, capsys):
    assert main(["data", "check", str(synthetic_clotho)]) == 0
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_clotho, broken)
    (broken / "evaluation" / "test_000.wav").write_bytes(b"not audio")
    capsys.readouterr()
    assert main(["data", "check", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "test_000.wav" in out and "ERROR" in out


def test_overrides_after_the_options_reach_evaluate(trained, synthetic_clotho, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(synthetic_clotho, moved)
    capsys.readouterr()
    args = ["evaluate", str(trained / "best.pt"), "--split", "test", "--device", "cpu", f"data_root={moved}"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["t2a_R10"] == pytest.approx(
        json.loads((trained / "metrics.json").read_text())["test"]["t2a_R10"])  # fmt: skip
    assert main(args[:-1] + [f"data_root={tmp_path / 'nowhere'}"]) == 1  # the override was used: data missing
    assert "nowhere" in capsys.readouterr().err


def test_evaluate_takes_device_as_a_key_or_the_option_but_not_two_devices(trained, capsys):
    committed = json.loads((trained / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(trained / "best.pt"), "--split", "test", "device=cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["t2a_R10"] == pytest.approx(committed["t2a_R10"])
    assert main(["evaluate", str(trained / "best.pt"), "--device", "cpu", "device=cpu"]) == 0  # the same device
    capsys.readouterr()
    assert main(["evaluate", str(trained / "best.pt"), "--device", "cuda:7", "device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "device=cpu and --device cuda:7 ask for two devices" in err and "Traceback" not in err
    assert main(["evaluate", str(trained / "best.pt"), "--device", "toaster"]) == 2
    assert "device 'toaster' is not 'auto' or a torch device" in capsys.readouterr().err
    assert main(["evaluate", str(trained / "best.pt"), "device="]) == 2
    assert "device=None: give 'auto' or a torch device" in capsys.readouterr().err


def _not_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """Files a new user might pass as a checkpoint by mistake."""
    import torch

    empty, tensor, archive = tmp_path / "empty.pt", tmp_path / "tensor.pt", tmp_path / "other.zip"
    empty.write_bytes(b"")
    torch.save(torch.zeros(2), tensor)
    shutil.make_archive(str(archive.with_suffix("")), "zip", REPO / "thadcr" / "profiles")
    return {"README.md": REPO / "README.md", "empty": empty, "tensor": tensor, "zip": archive, "folder": tmp_path}


@pytest.mark.parametrize("kind", ["README.md", "empty", "tensor", "zip", "folder"])
@pytest.mark.parametrize("command", ["search", "evaluate"])
def test_a_file_that_is_no_checkpoint_is_named_without_a_traceback(command, kind, tmp_path, capsys):
    path = _not_checkpoints(tmp_path)[kind]
    argv = ["search", "a dog", "--checkpoint", str(path)] if command == "search" else ["evaluate", str(path)]
    assert main(argv + ["--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"thadcr: error: {path} ") and err.count("\n") == 1
    assert "not a checkpoint" in err if kind == "folder" else "is not a thadcr checkpoint" in err
    assert "give the best.pt or last.pt that `thadcr train --out DIR` writes" in err
    assert "Unsupported operand" not in err and "Weights only load failed" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "data_root=X", "--out", "D", "--profile", "paper-clotho", "seed=3"],
        ["train", "--out", "D", "--profile", "paper-clotho", "data_root=X", "seed=3"],
        ["train", "--out", "D", "data_root=X", "--profile", "paper-clotho", "--quiet", "seed=3"],
    ],
)
def test_overrides_anywhere_after_the_command_keep_their_order(argv):
    args = parse_args(argv)
    assert (args.out, args.profile, args.overrides) == ("D", "paper-clotho", ["data_root=X", "seed=3"])
    args = parse_args(["evaluate", "ckpt.pt", "--split", "val", "data_root=X", "--device", "cpu", "seed=3"])
    assert (args.checkpoint, args.split, args.device) == ("ckpt.pt", "val", "cpu")
    assert args.overrides == ["data_root=X", "seed=3"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--out", "D", "--bogus"], "thadcr train: error: unrecognized arguments: --bogus"),
        (["evaluate", "ckpt.pt", "--split", "test", "extra"], "thadcr evaluate: error: unrecognized arguments: extra"),
        (["search", "a dog", "--checkpoint", "c.pt", "seed=1"], "thadcr search: error: unrecognized arguments: seed=1"),
        (["train"], "the following arguments are required: --out"),
        (["reproduce", "--profile", "tiny", "epochs=2"], "unrecognized arguments: epochs=2"),  # reproduce takes --set
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_bad_values_exit_2_before_anything_runs(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--quiet", "lr=abc"]) == 2
    assert "lr must be positive (a number), got 'abc'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "error, status",
    [(UsageError("bad option"), 2), (ConfigError("bad key"), 2), (RunError("cannot go on"), 1),
     (DatasetError("bad csv"), 1), (AudioError("bad audio"), 1), (ReproduceError("stale runs"), 1),
     (FileNotFoundError("no such file"), 1)],
)  # fmt: skip
def test_exit_status_of_each_error(error, status, monkeypatch, capsys):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_evaluate", fail)
    assert main(["evaluate", "ckpt.pt"]) == status
    assert capsys.readouterr().err == f"thadcr: error: {error}\n"  # the message alone, no traceback


@pytest.mark.parametrize(
    "argv, function, hint",
    [(["train", "--out", "D"], "_train", "add --resume to the same command"),
     (["reproduce", "--profile", "tiny"], "_reproduce", "run the same command again"),
     (["evaluate", "ckpt.pt"], "_evaluate", None), (["search", "a dog", "--checkpoint", "c.pt"], "_search", None),
     (["data", "check", "somewhere"], "_data_check", None)],
)  # fmt: skip
def test_interrupt_exits_130_with_a_resume_hint_only_where_there_is_one(argv, function, hint, monkeypatch, capsys):
    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, function, interrupt)
    assert main(argv) == 130
    err = capsys.readouterr().err
    if hint:
        assert err.startswith("thadcr: interrupted;") and hint in err
    else:
        assert err == "thadcr: interrupted\n"


def test_reproduce_exit_statuses(tmp_path, capsys):
    base = ["reproduce", "--profile", "tiny", "--tables", "4", "--results", str(tmp_path)]
    for bad in (["--jobs", "0"], ["--shard", "3/2"], ["--set", "epochs=0"], ["--set", "seed=1"]):
        assert main(base + bad) == 2, bad
        assert "thadcr reproduce: error:" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()  # refused before anything ran
    from thadcr.experiments.plan import plan, runs_dir

    run = plan("tiny", tables=(4,))[0]
    (runs_dir(tmp_path, "tiny") / run.run_id).mkdir(parents=True)
    (runs_dir(tmp_path, "tiny") / run.run_id / "metrics.json").write_text("{}")  # finished, config unreadable
    assert main(base) == 1  # the results folder is unusable: a run-time error
    assert "cannot read the run's recorded config" in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser, name: str = "thadcr"):
    """Every (name, parser) of the command, subcommands included."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


@pytest.mark.parametrize("command", sorted(name for name, _ in _parsers(cli.build_parser())))
def test_every_argument_has_help(command):
    parser = dict(_parsers(cli.build_parser()))[command]
    missing = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert missing == [], f"{command}: arguments without help: {missing}"


def test_help_lists_every_key_with_what_it_accepts(capsys):
    for command, keys in (("train", valid_keys()), ("evaluate", valid_keys()),
                          ("reproduce", [k for k in valid_keys() if k not in PLAN_KEYS])):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())  # the epilog is wrapped
        assert exit_.value.code == 0
        for key in keys:
            assert f" {key} {allowed(key)}:" in out, (command, key)
        if command == "reproduce":
            assert " variant one of" not in out  # the plan sets it: --set refuses it
    assert "true or false" in allowed("amp") and "yes/no" in out  # YAML's boolean spellings are said


def test_version_is_written_once_and_python_m_thadcr_is_the_command(capsys):
    pyproject = (REPO / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; the package supports 3.10)
    project = pyproject.split("\n[project]\n")[1].split("\n[")[0]
    assert not re.search(r"^version\s*=", project, re.M) and re.search(r'^dynamic = \["version"\]', project, re.M)
    assert 'version = { attr = "thadcr.__version__" }' in pyproject
    assert importlib.metadata.version("thadcr") == thadcr.__version__
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"thadcr {thadcr.__version__}\n"
    done = subprocess.run([sys.executable, "-m", "thadcr", "--version"], capture_output=True, text=True, cwd=REPO)
    assert (done.returncode, done.stdout) == (0, f"thadcr {thadcr.__version__}\n")
    done = subprocess.run([sys.executable, "-m", "thadcr", "train", "--out", "x", "epochs=2.5"],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert done.returncode == 2 and "epochs must be positive (an integer), got 2.5" in done.stderr


@pytest.mark.skipif(importlib.util.find_spec("thadcr.experiments.pretrain") is None, reason="thadcr.experiments.pretrain not written yet")
def test_pretrain_is_a_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--help"])
    assert exit_.value.code == 0 and "usage: thadcr pretrain" in capsys.readouterr().out
    assert parse_args(["pretrain"]).func is cli._pretrain
