"""A small synthetic data set in the Clotho v2 layout, written with soundfile, for fast tests.

Each clip holds 1-2 tones whose pitch and order are named in its captions, so that a model
can learn something in a few steps; nothing here pretends to be real audio (the embedded data
set is the real one).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

PITCHES = {"low": 220.0, "middle": 660.0, "high": 1980.0, "very high": 5000.0}
SPLIT_FOLDERS = {"train": "development", "val": "validation", "test": "evaluation"}


def _clip(rng: np.random.Generator, seconds: float, sr: int) -> tuple[np.ndarray, str, str]:
    names = list(PITCHES)
    first, second = rng.choice(names, size=2, replace=False)
    t = np.arange(int(seconds * sr)) / sr
    half = len(t) // 2
    wave = 0.02 * rng.standard_normal(len(t))
    wave[:half] += 0.5 * np.sin(2 * np.pi * PITCHES[first] * t[:half])
    wave[half:] += 0.5 * np.sin(2 * np.pi * PITCHES[second] * t[half:])
    return wave.astype(np.float32), first, second


def write_clotho(root: Path, counts=(16, 8, 8), seconds: float = 1.0, sr: int = 16000, seed: int = 0,
                 captions_per_clip: int = 5) -> Path:
    """Write `root` in the Clotho v2 layout; returns root."""
    rng = np.random.default_rng(seed)
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
            wave, a, b = _clip(rng, seconds, sr)
            name = f"{split}_{i:03d}.wav"
            sf.write(root / folder / name, wave, sr)
            caps = [t.format(a=a, b=b) for t in templates[:captions_per_clip]]
            rows.append([name] + caps + [""] * (5 - len(caps)))
        with open(root / f"clotho_captions_{folder}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name"] + [f"caption_{k}" for k in range(1, 6)])
            writer.writerows(rows)
    return root
