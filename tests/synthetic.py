"""Synthetic inputs for fast tests: small data sets in the Clotho v2 and AudioCaps layouts, written
with soundfile; finished runs of `thadcr reproduce` (``write_fake_run``, behind the ``rendered``
fixture of tests/conftest.py), a run's ``log.csv`` alone (``write_log``), a claims table
(``synthetic_claims``) and a stub train notebook (``STUB_TRAIN_NOTEBOOK``).

Each clip holds 1-2 tones whose pitch and order are named in its captions, so that a model
can learn something in a few steps; nothing here pretends to be real audio (the embedded data
set is the real one). Optionally the files look like a real download: file names as Clotho
publishes them (a leading space, a double space), and formats and sample rates that vary from
file to file while the CSV lists ``.wav`` names.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from thadcr.experiments.plan import EXTRA_METRICS, METRICS, Run

PITCHES = {"low": 220.0, "middle": 660.0, "high": 1980.0, "very high": 5000.0}
SPLIT_FOLDERS = {"train": "development", "val": "validation", "test": "evaluation"}
ALL_METRICS = METRICS + EXTRA_METRICS
SEEDS = {"seeds": 3, "tha_seeds": 3}  # a smaller tiny plan for the synthetic results: 19 settings x 3 seeds
VALIDATION_RECALLS = ("val_t2a_R1", "val_t2a_R5", "val_t2a_R10", "val_a2t_R1", "val_a2t_R5", "val_a2t_R10")


def _clip(rng: np.random.Generator, seconds: float, sr: int) -> tuple[np.ndarray, str, str]:
    names = list(PITCHES)
    first, second = rng.choice(names, size=2, replace=False)
    t = np.arange(int(seconds * sr)) / sr
    half = len(t) // 2
    wave = 0.02 * rng.standard_normal(len(t))
    wave[:half] += 0.5 * np.sin(2 * np.pi * PITCHES[first] * t[:half])
    wave[half:] += 0.5 * np.sin(2 * np.pi * PITCHES[second] * t[half:])
    return wave.astype(np.float32), first, second


def _name(split: str, i: int, published_names: bool) -> str:
    """``train_000.wav``; with ``published_names`` every other name begins with a space and every
    third holds a double space, as some Clotho v2.1 file names do."""
    if not published_names:
        return f"{split}_{i:03d}.wav"
    return (" " if i % 2 else "") + f"{split}{'  ' if i % 3 == 0 else ' '}clip {i:03d}.wav"


def write_clotho(root: Path, counts=(16, 8, 8), seconds: float = 1.0, sr: int | tuple[int, ...] = 16000,
                 seed: int = 0, captions_per_clip: int = 5, formats: tuple[str, ...] = (".wav",),
                 published_names: bool = False) -> Path:
    """Write `root` in the Clotho v2 layout; returns root.

    Clip ``i`` of a split is written at rate ``sr[i % len(sr)]`` (``sr`` may be one rate) in the
    format of extension ``formats[i % len(formats)]`` (".wav", ".flac", ".ogg", ".mp3"); the CSV
    lists it under its ``.wav`` name, so the reader must find the file by its stem.
    """
    rng = np.random.default_rng(seed)
    rates = (sr,) if isinstance(sr, int) else tuple(sr)
    templates = [
        "a {a} tone then a {b} tone",
        "a {a} beep followed by a {b} beep",
        "{a} pitch first and {b} pitch after",
        "first a {a} sound then a {b} sound",
        "a {a} note is followed by a {b} note",
    ]
    for (split, folder), count in zip(SPLIT_FOLDERS.items(), counts):
        (root / folder).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            rate = rates[i % len(rates)]
            wave, a, b = _clip(rng, seconds, rate)
            name = _name(split, i, published_names)
            sf.write(root / folder / (name[: -len(".wav")] + formats[i % len(formats)]), wave, rate)
            caps = [t.format(a=a, b=b) for t in templates[:captions_per_clip]]
            rows.append([name] + caps + [""] * (5 - len(caps)))
        with open(root / f"clotho_captions_{folder}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name"] + [f"caption_{k}" for k in range(1, 6)])
            writer.writerows(rows)
    return root


def write_audiocaps(root: Path, counts=(8, 4, 4), seconds: float = 1.0, sr: int | tuple[int, ...] = 16000,
                    seed: int = 0, formats: tuple[str, ...] = (".wav",), audio_folder: str = "audio") -> Path:
    """Write `root` in the AudioCaps layout (``{train,val,test}.csv`` with audiocap_id, youtube_id,
    start_time, caption; audio in ``<audio_folder>/<split>/<youtube_id>_<start_time>.<ext>``); returns root.

    As published: one caption per training clip, five per validation and test clip (one row each).
    Rates and formats vary per clip as in `write_clotho`; the files are found by their stem.
    """
    rng = np.random.default_rng(seed)
    rates = (sr,) if isinstance(sr, int) else tuple(sr)
    templates = ["a {a} tone then a {b} tone", "a {a} beep followed by a {b} beep", "{a} pitch first and {b} pitch after",
                 "first a {a} sound then a {b} sound", "a {a} note is followed by a {b} note"]
    cap_id = 100
    for split, count in zip(SPLIT_FOLDERS, counts):
        folder = root / audio_folder / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            rate = rates[i % len(rates)]
            wave, a, b = _clip(rng, seconds, rate)
            youtube_id, start = f"{split[:2]}{i:03d}-Yx_{i}", 30 * i
            sf.write(folder / f"{youtube_id}_{start}{formats[i % len(formats)]}", wave, rate)
            for template in templates[: 1 if split == "train" else 5]:
                cap_id += 1
                rows.append([cap_id, youtube_id, start, template.format(a=a, b=b)])
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
            writer.writerows(rows)
    return root


def metric_value(run: Run, metric: str) -> float:
    """A distinct, seed-dependent synthetic value per run and metric."""
    settings = len(run.variant) + run.n_factors / 10 + 100 * (run.alpha + run.beta)
    return 10.0 + 3.0 * ALL_METRICS.index(metric) + 0.7 * run.seed**2 + settings


def write_fake_run(root: Path, run: Run, wall: float = 100.0, name: str | None = None) -> Path:
    """A finished run folder as thadcr.run.train writes it (metrics.json, log.csv, factors.npz)."""
    folder = root / (name or run.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(run.run_id) + run.seed)
    test = {m: metric_value(run, m) for m in ALL_METRICS}
    epochs = np.arange(1, 4)
    pd.DataFrame({
        "epoch": epochs, "loss": 3.0 / epochs, "loss_S": 2.9 / epochs, "loss_D": 0.1 / epochs, "loss_A": 0.0,
        "lr": 1e-3, **{f"val_{m}": 10.0 * epochs for m in METRICS}, "seconds": 1.0,
    }).to_csv(folder / "log.csv", index=False)  # fmt: skip
    if "DCR" in run.variant:
        k = run.n_factors
        np.savez(folder / "factors.npz", C_initial=rng.normal(0, 0.3, (k, k)), C_trained=np.eye(k),
                 g_positive=rng.normal(1, 0.2, (20, k)), g_negative=rng.normal(0, 0.2, (20, k)))  # fmt: skip
    metrics = {
        "test": test, "best_epoch": 3, "val_best": 60.0, "seed": run.seed, "wall_time_s": wall,
        "config": run.config().to_dict(), "device": "cpu",
        "data": {"test": {"clips": 200, "captions": 1000}},
        "machine": {"platform": "test", "cpus": 2}, "versions": {"torch": "x"}, "git_commit": None,
    }  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def write_log(root: Path, method: str, seed: int, losses, rsums) -> Path:
    """A run's log.csv under ``root/runs`` with the given loss and R-sum per epoch (the
    R-sum split evenly over the six validation recalls)."""
    from thadcr.interfaces.notebook.method import table1_run_id

    path = root / "runs" / table1_run_id(method, seed=seed) / "log.csv"
    path.parent.mkdir(parents=True)
    frame = pd.DataFrame({"epoch": range(1, len(losses) + 1), "loss": losses,
                          "loss_S": losses, "loss_D": 0.0, "loss_A": 0.0})  # fmt: skip
    for name in VALIDATION_RECALLS:
        frame[name] = [r / len(VALIDATION_RECALLS) for r in rsums]
    frame.to_csv(path, index=False)
    return path


def synthetic_claims():
    """A claims file as `thadcr reproduce` might write it later: three tables, a fourth verdict, a
    claim without runs, a column the pages do not know."""
    rows = [  # claim, table, basis, paper_effect, effect, ci_low, ci_high, verdict, n_seeds
        ("A > B", 1, "3.2: A beats B", 23.1, -3.3, -21.11, 14.51, "undecided", 3),
        ("A > C", 1, "3.2: A beats B", 9.1, 10.37, 2.05, 23.78, "holds", 3),
        ("C > B", 1, "3.3: C is best", 10.2, -16.67, -44.96, -11.62, "contradicted", 3),
        ("K=8 > K=6", 4, "3.3: K = 8 is optimal", 2.0, 0.4, 0.1, 0.7, "smaller than the paper's", 1),
        ("x=1 > x=2", 5, "3.3: x = 1 is best", 1.3, float("nan"), float("nan"), float("nan"), "missing", 0),
        ("x=1 > x=3", 5, "3.3: x = 1 is best", 1.4, -2.4, -39.73, 34.93, "undecided", 1),
    ]
    columns = ["claim", "table", "basis", "paper_effect", "effect", "ci_low", "ci_high", "verdict", "n_seeds"]
    return pd.DataFrame(rows, columns=columns).assign(new_spread=0.5)


# A stand-in for notebooks/train.py: writes the parameters it was given into metrics.json.
STUB_TRAIN_NOTEBOOK = '''# %% tags=["parameters"]
variant = "THA+DCR"
dataset = "audiocaps"
profile = "tiny"
seed = 0
n_factors = 8
alpha = 0.01
beta = 0.005
epochs = None
out_dir = "unset"
device = "auto"
overrides = {}
resume = False

# %%
import json, os
from pathlib import Path
test = {m: float(n_factors) for m in ("t2a_R1", "t2a_R5", "t2a_R10", "a2t_R1", "a2t_R5", "a2t_R10")}
seen = {"variant": variant, "dataset": dataset, "overrides": overrides, "resume": resume, "epochs": epochs,
        "alpha": alpha, "cwd": os.getcwd()}
Path(out_dir, "metrics.json").write_text(json.dumps({"test": test, "seen": seen}))
'''
