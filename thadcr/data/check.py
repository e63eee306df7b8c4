"""The data set check behind ``thadcr data check``: every problem of a data set folder, one
:class:`~thadcr.data.readers.Problem` each, from the CSVs to the audio of every clip and the
overlap between splits. Choices are in ``docs/decisions/datasets.md``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from thadcr.data.audio_io import AudioError, is_silent, read_audio, show_path
from thadcr.data.readers import (
    DEFAULT_AUDIO_PATTERN,
    SEVERITIES,
    Clip,
    DatasetError,
    Problem,
    detect_layout,
    locate_audio,
    parse_split,
    split_files,
)
from thadcr.config import LAYOUTS, SPLITS
from thadcr.files import AUDIO_SUFFIXES, sha256


class Problems(list):
    """What :func:`check_dataset` returns: a list of :class:`~thadcr.data.readers.Problem`, with counts by severity."""

    def counts(self) -> dict[str, int]:
        return {severity: sum(p.severity == severity for p in self) for severity in SEVERITIES}

    def summary(self) -> str:
        """The last line of ``thadcr data check``, e.g. "1 error(s), 2 warning(s), 3 info"."""
        counts = self.counts()
        return f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info"


def check_dataset(
    root: str | Path, layout: str | None = None, audio_pattern: str = DEFAULT_AUDIO_PATTERN
) -> Problems:
    """Every problem of a data set folder, one :class:`~thadcr.data.readers.Problem` each (nothing is raised).

    Checks CSV columns, empty captions, duplicate names, clips with two candidate files, every
    audio file in full (missing, unreadable, empty, zero-length, NaN/Inf: errors; silence:
    warning), the same audio in two splits, judged by content (warning; the same name for
    different audio is an info line), audio files no CSV lists (warning), and reports the sample
    rates (info). ``.counts()`` of the result gives the number of each severity.
    """
    root = Path(root)
    if not root.is_dir():
        return Problems([Problem(str(root), None, "not a folder", "pass the data set's root folder")])
    try:
        layout = layout or detect_layout(root)
        if layout not in LAYOUTS:
            raise DatasetError(f"layout {layout!r} is not one of {', '.join(map(repr, LAYOUTS))}")
    except DatasetError as error:
        return Problems([Problem(str(root), None, str(error), "pass --layout clotho or --layout audiocaps")])

    problems = Problems()
    heard: list[_Heard] = []  # the readable, audible clips of every split, for the overlap check
    for split in SPLITS:
        csv_path, audio_dir = split_files(root, layout, split)
        if not csv_path.is_file():
            problems.append(Problem(str(csv_path), None, f"no {split} split", "add the CSV to use this split",
                                    "warning"))
            continue
        try:
            _, _, clips, found = parse_split(root, layout, split, audio_pattern)
        except DatasetError as error:
            problems.append(Problem(str(csv_path), None, str(error).removeprefix(f"{show_path(csv_path)}: "),
                                    "fix the CSV"))
            continue
        problems += found
        absent, ambiguous = locate_audio(clips, csv_path)
        problems += ambiguous.values()
        clips = [clip for clip in clips if clip.clip_id not in ambiguous]
        problems += _check_audio(split, csv_path, audio_dir, clips, absent, heard)
    problems += _check_overlap(heard)
    return problems


@dataclass
class _Heard:
    """A readable, audible clip of one split, for the overlap check."""

    split: str
    csv_path: Path
    clip: Clip
    content: str  # _content_key of its samples


def _content_key(data: np.ndarray, rate: int) -> str:
    """A hash of a clip's decoded samples (frames, channels) and rate: the same for one recording
    whatever its file name or lossless format (WAV, FLAC)."""
    return sha256(f"{rate}:{data.shape}:{data.dtype}|", np.ascontiguousarray(data).tobytes())


def _check_overlap(heard: list[_Heard]) -> list[Problem]:
    """The same audio in two splits (a warning naming both files), and clip names that two splits
    use for different audio (an info line per pair of splits: not an overlap). Silent clips are
    not compared: identical silence says nothing about a shared recording."""
    problems: list[Problem] = []
    by_content: dict[str, _Heard] = {}  # content -> the first clip heard with it
    by_name: dict[str, _Heard] = {}  # clip id -> the first clip with it
    renamed: dict[tuple[str, str, Path], list[str]] = {}  # (split, earlier split, CSV) -> names of other audio
    for item in heard:
        earlier = by_content.setdefault(item.content, item)
        if earlier.split != item.split:
            what = (f"same audio as {show_path(earlier.clip.path)} of the {earlier.split} split "
                    f"(listed in {show_path(item.csv_path.name)} row {item.clip.row})")
            problems.append(Problem(str(item.clip.path), None, what,
                                    "keep the splits disjoint (a clip in two splits inflates the scores)", "warning"))
        named = by_name.setdefault(item.clip.clip_id, item)
        if named.split != item.split and named.content != item.content:
            renamed.setdefault((item.split, named.split, item.csv_path), []).append(item.clip.clip_id)
    for (split, other, csv_path), names in renamed.items():
        what = (f"{len(names)} clip name(s) of the {split} split name different audio in the {other} split "
                f"(e.g. {names[0]!r}); compared by content, that is no overlap")
        problems.append(Problem(str(csv_path), None, what, "", "info"))
    return problems


def _check_audio(
    split: str, csv_path: Path, audio_dir: Path, clips: list[Clip], absent: dict[str, str], heard: list[_Heard]
) -> list[Problem]:
    """Read every clip of one split in full and report what is wrong with it; each readable,
    audible clip is appended to ``heard``. ``absent``: why a clip has no file, by clip id."""
    problems: list[Problem] = []
    rates: Counter = Counter()
    channels: Counter = Counter()
    silent = 0
    for clip in clips:
        source = f"(listed in {show_path(csv_path.name)} row {clip.row})"
        reason = absent.get(clip.clip_id)
        if reason is None:
            try:
                data, rate = read_audio(clip.path)  # (frames, channels)
            except AudioError as error:
                reason = error.reason
        if reason is not None:
            problems.append(Problem(str(clip.path), None, f"{reason} {source}",
                                    "get a valid copy of the file, or remove its row"))
            continue
        rates[rate] += 1
        channels[data.shape[1]] += 1
        if is_silent(torch.from_numpy(data)):
            silent += 1
            problems.append(Problem(str(clip.path), None, f"silent (RMS below -80 dBFS) {source}",
                                    "check the recording; it is kept but carries no sound", "warning"))
        else:
            heard.append(_Heard(split, csv_path, clip, _content_key(data, rate)))
    if audio_dir.is_dir():
        listed = {clip.path.name for clip in clips}
        extra = [p for p in audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.name not in listed]
        if extra:
            what = f"{len(extra)} audio file(s) not listed in {show_path(csv_path.name)} (e.g. {extra[0].name!r})"
            problems.append(Problem(str(audio_dir), None, what, "they are ignored; remove them or add rows", "warning"))
    if rates:
        summary = ", ".join(f"{r} Hz x {n}" for r, n in sorted(rates.items()))
        chans = ", ".join(f"{c} channel(s) x {n}" for c, n in sorted(channels.items()))
        problems.append(Problem(str(audio_dir), None,
                                f"{split}: {len(clips)} clips, sample rates {summary}; {chans}; {silent} silent",
                                "audio is downmixed to mono and resampled when loaded", "info"))
    return problems

