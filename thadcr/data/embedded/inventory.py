"""The curated inventory: which recordings are kept, their audio prepared, and their splits.

:func:`inventory` matches every audio file of the packages against the curated table
``embedded_sources.csv`` (kept: an event or background class; dropped: a reason such as jingle,
interface beep, music loop); ``embedded_classes.csv`` holds each class's caption phrases
(:func:`load_classes`). :func:`prepare_audio` resamples, trims, loudness-normalises and drops
silent recordings (:func:`load_recordings`). :func:`assign_splits` keeps source recordings
disjoint between development / validation / evaluation, stratified by class, from the seed.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from thadcr import portable
from thadcr.data.embedded.packages import PACKAGES, EmbeddedDataError, licence_for, package_files, parse_copyright
from thadcr.files import sha256

TABLE_DIR = Path(__file__).parent
SOURCES_TABLE = TABLE_DIR / "embedded_sources.csv"
CLASSES_TABLE = TABLE_DIR / "embedded_classes.csv"

TARGET_DB = -20.0  # active RMS level every source is normalised to (dBFS)
SILENT_DB = -60.0  # active RMS below this (or all zeros) = silent, dropped
TRIM_DB = 40.0  # leading/trailing frames this far below the loudest frame are trimmed
MAX_SOURCE_SECONDS = 20.0  # longer recordings (ambiences) are cut to this


# ----------------------------------------------------------------------------------------------
# The curated inventory
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhraseSet:
    """How captions name one class: a clause, an ongoing (progressive) clause and a noun phrase."""

    name: str
    kind: str  # "event" or "background"
    repeat: int  # >1: the recording is one hit/step, repeated up to this many times in a scene
    clause: tuple[str, ...]  # "a dog barks"
    ongoing: tuple[str, ...]  # "a dog is barking"
    noun: tuple[str, ...]  # "a dog barking"

    def variants(self) -> tuple[str, ...]:
        return self.clause + self.ongoing + self.noun


@dataclass(frozen=True)
class Recording:
    """A kept source recording: its class, split group, label text and licence."""

    key: str  # "<package>:<path>"
    package: str
    path: str
    cls: str
    kind: str
    group: str  # recordings of one group never cross splits
    text: str
    licence: str
    credit: str


def load_classes(path: str | Path = CLASSES_TABLE) -> dict[str, PhraseSet]:
    """The class table: class -> PhraseSet; errors name the row and what is wrong."""
    classes = {}
    for line, row in _read_table(path, ("class", "kind", "repeat", "clause", "ongoing", "noun")):
        forms = {f: tuple(v.strip() for v in row[f].split(";") if v.strip()) for f in ("clause", "ongoing", "noun")}
        if row["kind"] not in ("event", "background") or not all(forms.values()) or row["class"] in classes:
            raise EmbeddedDataError(
                f"{path} line {line}: class {row['class']!r} needs a unique name, kind event|background and "
                "at least one ';'-separated phrase in each of clause, ongoing, noun"
            )
        classes[row["class"]] = PhraseSet(row["class"], row["kind"], int(row["repeat"] or 1), **forms)
    return classes


def load_sources(path: str | Path = SOURCES_TABLE, classes: dict[str, PhraseSet] | None = None) -> list[dict]:
    """The source table rows (package, path, class, group, note), checked against the class table."""
    classes = load_classes() if classes is None else classes
    rows = []
    for line, row in _read_table(path, ("package", "path", "class", "group", "note")):
        if row["package"] not in PACKAGES:
            raise EmbeddedDataError(f"{path} line {line}: unknown package {row['package']!r}; use one of {', '.join(PACKAGES)}")
        if row["class"] and row["class"] not in classes:
            raise EmbeddedDataError(f"{path} line {line}: class {row['class']!r} is not in {CLASSES_TABLE.name}; add it there")
        if not row["class"] and not row["note"]:
            raise EmbeddedDataError(f"{path} line {line}: a dropped row needs the reason in 'note'")
        rows.append(row)
    groups: dict[str, set[str]] = {}
    for row in rows:
        if row["group"]:
            groups.setdefault(row["group"], set()).add(row["class"])
    for group, members in groups.items():
        if len(members) > 1:
            raise EmbeddedDataError(f"{path}: group {group!r} spans classes {sorted(members)}; a group must be one class")
    return rows


def _read_table(path: str | Path, columns: tuple[str, ...]):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != columns:
            raise EmbeddedDataError(f"{path}: header must be {','.join(columns)}, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            yield line, {k: (v or "").strip() for k, v in row.items()}


def _match_row(rows: list[dict], path: str) -> dict | None:
    """The exact row for ``path``, else the first glob row that matches it (table order)."""
    for row in rows:
        if row["path"] == path:
            return row
    for row in rows:
        if any(c in row["path"] for c in "*?[") and fnmatch.fnmatch(path, row["path"]):
            return row
    return None


def inventory(trees: dict[str, Path], classes: dict[str, PhraseSet] | None = None, rows: list[dict] | None = None,
              ) -> tuple[list[Recording], dict[str, Callable], list[tuple[str, str]], list[str]]:
    """Match every package audio file to the curated table.

    Returns (recordings, readers {key: read()}, drops [(key, reason)], missing [keys of table
    rows absent from the packages]). Unlisted files are dropped as "not in the curated table".
    """
    classes = load_classes() if classes is None else classes
    rows = load_sources(classes=classes) if rows is None else rows
    recordings, readers, drops, seen = [], {}, [], set()
    for package, tree in trees.items():
        package_rows = [r for r in rows if r["package"] == package]
        stanzas = _copyright_stanzas(tree, package)
        for source in package_files(package, tree):
            key = f"{package}:{source.path}"
            seen.add(key)
            row = _match_row(package_rows, source.path)
            if row is None or not row["class"]:
                drops.append((key, row["note"] if row else "not in the curated table"))
                continue
            licence, holders = licence_for(stanzas, source.installed_path)
            if package == "openttd-opensfx":  # each entry names its own licence; the set is CC-BY-SA-3.0
                entry = re.search(r"License: (.*?)\.?$", source.credit)
                licence = f"CC-BY-SA-3.0 (collection); entry: {entry.group(1) if entry else 'see credit'}"
            recordings.append(Recording(key, package, source.path, row["class"], classes[row["class"]].kind,
                                        row["group"] or key, source.text, licence, source.credit or holders))
            readers[key] = source.read
    missing = [f"{r['package']}:{r['path']}" for r in rows
               if r["class"] and r["package"] in trees and f"{r['package']}:{r['path']}" not in seen]
    return recordings, readers, drops, missing


def _copyright_stanzas(tree: Path, package: str) -> list[tuple[list[str], str, str]]:
    copyright_file = tree / f"usr/share/doc/{package}/copyright"
    return parse_copyright(copyright_file.read_text(encoding="utf-8", errors="replace")) if copyright_file.is_file() else []


# ----------------------------------------------------------------------------------------------
# Audio preparation
# ----------------------------------------------------------------------------------------------


def _frame_db(wave: np.ndarray, frame: int) -> np.ndarray:
    """Mean power in dB of consecutive frames of ``frame`` samples (the last one may be short)."""
    n = -(-len(wave) // frame)
    padded = np.zeros(n * frame, np.float64)
    padded[: len(wave)] = wave
    power = (padded.reshape(n, frame) ** 2).mean(axis=1)
    power[-1] *= frame / (len(wave) - (n - 1) * frame)  # the short last frame: mean over its samples
    return 10.0 * np.log10(np.maximum(power, 1e-20))


def active_rms_db(wave: np.ndarray, sample_rate: int) -> float:
    """RMS level (dBFS) over the 50 ms frames within 30 dB of the loudest one (-inf for zeros)."""
    if not np.any(wave):
        return -np.inf
    levels = _frame_db(wave, max(1, sample_rate // 20))
    power = 10.0 ** (levels[levels >= levels.max() - 30.0] / 10.0)
    return float(10.0 * np.log10(power.mean()))


def prepare_audio(wave: np.ndarray, rate: int, sample_rate: int, max_seconds: float = MAX_SOURCE_SECONDS) -> np.ndarray | None:
    """Mono ``wave`` resampled to ``sample_rate``, trimmed, cut to ``max_seconds``, normalised.

    Leading/trailing 10 ms frames more than 40 dB below the loudest are trimmed (so that event
    onsets in the scene timeline are where the sound is); the active RMS is set to -20 dBFS,
    then scaled down if the peak would exceed 0.99. Returns None for silent audio (all zeros or
    active RMS below -60 dBFS) and for audio shorter than 20 ms.
    """
    wave = np.asarray(wave, np.float32)
    if wave.size == 0 or not np.any(wave) or active_rms_db(wave, rate) < SILENT_DB:
        return None
    if rate != sample_rate:
        with torch.no_grad():
            wave = portable.resample(torch.from_numpy(wave.copy()), rate, sample_rate).numpy()
    frame = max(1, sample_rate // 100)
    loud = np.flatnonzero(_frame_db(wave, frame) >= _frame_db(wave, frame).max() - TRIM_DB)
    wave = wave[loud[0] * frame : (loud[-1] + 1) * frame][: int(max_seconds * sample_rate)]
    if len(wave) < sample_rate // 50:
        return None
    wave = wave * np.float32(10.0 ** ((TARGET_DB - active_rms_db(wave, sample_rate)) / 20.0))
    peak = float(np.abs(wave).max())
    if peak > 0.99:
        wave = wave * np.float32(0.99 / peak)
    return wave.astype(np.float32)


def load_recordings(recordings: list[Recording], readers: dict[str, Callable], sample_rate: int, progress: bool = True,
                    ) -> tuple[dict[str, np.ndarray], list[Recording], list[tuple[str, str]]]:
    """Prepared audio {key: (samples,)} plus the updated recordings and [(key, reason)] drops.

    Silent recordings are dropped; duplicates (identical samples once prepared: resampled,
    trimmed, normalised, so that two files differing only in leading silence or gain count) of the
    same class join the first one's group, hence its split; duplicates across classes are dropped
    (ambiguous label). Without this, one recording could be heard in training and in the test set.
    """
    audio, kept, drops, first_of = {}, [], [], {}
    for recording in tqdm(recordings, desc="recordings", disable=not progress):
        raw, rate = readers[recording.key]()
        wave = prepare_audio(raw, rate, sample_rate)
        if wave is None:
            drops.append((recording.key, "silent: all zeros or below -60 dBFS"))
            continue
        digest = sha256(wave.tobytes())
        if digest in first_of:
            original = first_of[digest]
            if original.cls != recording.cls:
                drops.append((recording.key, f"duplicate audio of {original.key} with another class"))
                continue
            recording = dataclasses.replace(recording, group=original.group)
        else:
            first_of[digest] = recording
        audio[recording.key] = wave
        kept.append(recording)
    return audio, kept, drops


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------


def split_counts(n_groups: int, cls: str) -> tuple[int, int]:
    """(validation, evaluation) group counts for a class with ``n_groups`` source groups.

    1 group: training only; 2: one for training, one for validation or evaluation (alternating
    by class name); 3+: evaluation ~20 %, validation ~15 %, each at least one.
    """
    if n_groups <= 1:
        return 0, 0
    if n_groups == 2:
        return (1, 0) if zlib.crc32(cls.encode()) % 2 else (0, 1)
    return max(1, round(0.15 * n_groups)), max(1, round(0.2 * n_groups))


def assign_splits(recordings: list[Recording], seed: int) -> dict[str, str]:
    """{recording key: split}: whole source groups go to one split, stratified by class.

    Each class shuffles its groups with its own generator (seed, crc32 of the class name), so a
    class's split does not change when another class is added or removed.
    """
    groups_of: dict[str, set[str]] = {}
    for recording in recordings:
        groups_of.setdefault(recording.cls, set()).add(recording.group)
    split_of_group = {}
    for cls, groups in sorted(groups_of.items()):
        groups = sorted(groups)  # the input order does not matter
        order = [groups[i] for i in np.random.default_rng([seed, zlib.crc32(cls.encode())]).permutation(len(groups))]
        n_val, n_test = split_counts(len(order), cls)
        for i, group in enumerate(order):
            split_of_group[group] = "evaluation" if i < n_test else "validation" if i < n_test + n_val else "development"
    return {r.key: split_of_group[r.group] for r in recordings}

