"""The `thadcr` command: train, evaluate, search, data check and its errors, end to end in-process."""

import json
import shutil

import pytest

from thadcr.cli import main

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
    assert main(["train", "--profile", "tiny", "--out", str(trained), "--quiet"]) == 2
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
