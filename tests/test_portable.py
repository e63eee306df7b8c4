"""Vendor-independent numerics (thadcr.portable, thadcr.run.numerics_trace): each replacement against
a literal float64 transcription of its formula, and the audit that no vendor-dispatched torch
operation runs in portable numerics (conftest applies it to the whole test process)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from thadcr import numerics, portable

from thadcr.run import numerics_trace
from thadcr.model.audio import LogMel
from thadcr.config import VARIANTS
from thadcr.errors import UsageError
from thadcr.run.train import train

from test_train import small_config


def test_the_tests_run_in_portable_numerics():
    assert numerics.is_portable()


def test_exp_log_sqrt_agree_with_float64_to_a_few_ulps():
    x = torch.linspace(-87.0, 88.0, 200_001)
    exact = torch.exp(x.double())
    assert torch.allclose(portable.exp(x).double(), exact, rtol=3e-7, atol=0)
    assert portable.exp(torch.tensor([-math.inf, math.inf, 0.0])).tolist() == [0.0, math.inf, 1.0]
    assert torch.isnan(portable.exp(torch.tensor([math.nan]))).all()
    y = torch.logspace(-37, 38, 200_001)
    assert torch.allclose(portable.log(y).double(), torch.log(y.double()), rtol=0, atol=4e-7 * 88)
    assert torch.allclose(portable.sqrt(y).double(), torch.sqrt(y.double()), rtol=2.5e-7, atol=0)
    assert torch.allclose(portable.log10(y).double(), torch.log10(y.double()), rtol=0, atol=4e-7 * 38)


@pytest.mark.parametrize("fn", [portable.exp, lambda t: portable.log(t.abs() + 0.1), lambda t: portable.sqrt(t.abs() + 0.1)])
def test_exp_log_sqrt_gradients(fn):
    x = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


def _literal_power(frame: np.ndarray) -> np.ndarray:
    """|sum_t x[t] exp(-2 pi i k t / n)|^2 for k = 0..n/2, one term at a time (float64)."""
    n = len(frame)
    power = []
    for k in range(n // 2 + 1):
        re = sum(frame[t] * math.cos(2 * math.pi * k * t / n) for t in range(n))
        im = -sum(frame[t] * math.sin(2 * math.pi * k * t / n) for t in range(n))
        power.append(re * re + im * im)
    return np.array(power)


@pytest.mark.parametrize("n", [64, 48, 13, 100])
def test_power_spectrum_is_the_literal_dft(n):
    frames = torch.randn(3, 2, n)
    power = portable.power_spectrum(frames)
    assert power.shape == (3, 2, n // 2 + 1)
    for index in np.ndindex(3, 2):
        literal = _literal_power(frames[index].double().numpy())
        assert np.allclose(power[index].double().numpy(), literal, rtol=1e-4, atol=1e-4 * literal.max())


def test_the_front_end_matches_torch_fft_and_torchaudio_filters():
    wave = torch.randn(2, 16000)
    frames = portable.frames(wave, 1024, 320) * portable.hann_window(1024)
    stft = torch.stft(wave.double(), 1024, 320, window=torch.hann_window(1024, dtype=torch.float64), center=True,
                      pad_mode="reflect", return_complex=True).abs().pow(2).transpose(1, 2)
    power = portable.power_spectrum(frames).double()
    assert power.shape == stft.shape == (2, 51, 513)
    assert ((power - stft).abs().max() / stft.max()) < 1e-6
    assert torch.allclose(portable.hann_window(1024).double(), torch.hann_window(1024, dtype=torch.float64), atol=1e-7)
    filters = AF.melscale_fbanks(513, 50.0, 14000.0, 64, 32000, norm="slaney", mel_scale="slaney")
    assert torch.allclose(portable.mel_filters(513, 64, 32000, 50.0, 14000.0), filters, atol=1e-7)


def test_logmel_portable_and_fft_paths_agree():
    wave = torch.randn(2, 32000)
    portable_out = LogMel()(wave)
    assert LogMel().exact and LogMel().settings["dft"] == "matmul"
    fft = LogMel()
    fft.exact = False
    assert (portable_out - fft(wave)).abs().max() < 1e-3  # dB
    assert portable_out.shape == (2, 101, 64)


@pytest.mark.parametrize("orig,new", [(44100, 32000), (48000, 32000), (22050, 32000), (8000, 32000), (32000, 16000)])
def test_resample_matches_torchaudio_in_float64(orig, new):
    wave = torch.randn(2, orig // 10, dtype=torch.float64)
    ours = portable.resample(wave.float(), orig, new)
    theirs = AF.resample(wave, orig, new)
    assert ours.shape == theirs.shape == (2, math.ceil(new * wave.shape[-1] / orig))
    assert (ours.double() - theirs).abs().max() < 2e-6
    assert portable.resample(wave, orig, orig) is wave


def test_lowpass_biquad_matches_torchaudio():
    wave = torch.randn(8000, dtype=torch.float64)
    assert torch.allclose(portable.lowpass_biquad(wave, 16000, 1200.0), AF.lowpass_biquad(wave, 16000, 1200.0), atol=1e-9)


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_calls_no_vendor_dispatched_operation(synthetic_clotho, tmp_path, variant):
    """One epoch of two steps, validation and test of every variant, with the log-mel computed from
    audio (fresh cache): not one CPU call of an operation whose bits MKL picks by the CPU's vendor."""
    config = small_config(synthetic_clotho, tmp_path, variant=variant, epochs=1)
    with numerics_trace.vendor_dispatched_calls() as calls:
        train(config, tmp_path / "run", progress=False)
    assert dict(calls) == {}


def test_the_audit_sees_vendor_dispatched_operations():
    x = torch.rand(8) + 0.5
    with numerics_trace.vendor_dispatched_calls() as calls:
        torch.exp(x), x.log_(), torch._foreach_sqrt([x])
        torch.stft(torch.randn(64), 16, window=torch.ones(16), return_complex=True)  # reaches MKL's DFT
        portable.exp(x), portable.log(x), portable.sqrt(x), torch.softmax(x, 0)
    assert dict(calls) == {"exp": 1, "log_": 1, "_foreach_sqrt": 1, "_fft_r2c": 1}


def _finished_run(root, tmp_path) -> Path:
    run = tmp_path / "finished"
    run.mkdir()
    config = small_config(root, tmp_path, variant="DP", epochs=1)
    (run / "metrics.json").write_text(json.dumps({"config": config.to_dict()}))
    return run


def test_trace_and_compare(synthetic_clotho, tmp_path, capsys):
    from thadcr.interfaces.cli import main

    run = _finished_run(synthetic_clotho, tmp_path)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["numerics", "trace", "--run", str(run), "--out", str(a), "--steps", "2"]) == 0
    header, events = numerics_trace.read(a)
    assert header["numerics"]["mode"] == "portable" and header["numerics"]["cpu"]["vendor"]
    steps = [e for e in events if e["kind"] == "param"]
    assert steps and len(steps) % 2 == 0  # every parameter after each of the 2 steps
    assert events[-1] == {"i": len(events) - 1, "kind": "vendor_dispatched_calls", "name": "all", "sha": {}}
    assert {e["kind"] for e in events} >= {"forward", "backward", "grad", "param"}

    numerics_trace.trace(run, b, steps=2)
    assert numerics_trace.compare(a, b) is None  # the same machine twice: identical
    assert main(["numerics", "compare", str(a), str(b)]) == 0
    lines = b.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "backward")
    changed = json.loads(lines[k])
    changed["sha"] = ["0" * 16, "0" * 16]
    lines[k] = json.dumps(changed)
    b.write_text("\n".join(lines) + "\n")
    first = numerics_trace.compare(a, b)
    assert first["index"] == k - 1 and first["b"] == changed
    capsys.readouterr()
    assert main(["numerics", "compare", str(a), str(b)]) == 1
    said = capsys.readouterr().out
    assert f"first difference at event {k - 1}: backward of {changed['name']}" in said


def test_trace_refuses_what_is_not_a_finished_run_or_a_trace(tmp_path, capsys):
    from thadcr.interfaces.cli import main

    assert main(["numerics", "trace", "--run", str(tmp_path), "--out", str(tmp_path / "t.jsonl")]) == 2
    assert "metrics.json is missing" in capsys.readouterr().err
    (tmp_path / "x.jsonl").write_text('{"i": 0}\n')
    with pytest.raises(UsageError, match="not a thadcr numerics trace"):
        numerics_trace.read(tmp_path / "x.jsonl")
