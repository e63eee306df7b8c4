"""A small synthetic data set in the Clotho v2 layout, written with soundfile, for fast tests.

Each clip holds 1-2 tones whose pitch and order are named in its captions, so that a model
can learn something in a few steps; nothing here pretends to be real audio (the embedded data
set is the real one). Optionally the files look like a real download: file names as Clotho
publishes them (a leading space, a double space), and formats and sample rates that vary from
file to file while the CSV lists ``.wav`` names.
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
