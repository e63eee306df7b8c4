"""Clotho and AudioCaps readers, the data set check, the log-mel cache and the torch datasets.

Section 3.1 of the paper: AudioCaps (49,274 training clips with one caption each, 494
validation and 957 test clips with five captions) and Clotho v2 (3,839 / 1,045 / 1,045 clips,
five captions each), trained with the pipeline of its ref [8]. A :class:`Split` is the flat
form every other module uses: one audio file per clip, captions in one list, and
``caption_audio[j]`` the clip of caption ``j``. Missing audio is never silent: it is listed in
``Split.missing``, and refused above ``max_missing_share``. Choices are in
``docs/decisions/datasets.md``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import re
import unicodedata
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from thadcr.audio_io import (
    AudioError,
    check_crop_mode,
    crop_offset,
    is_silent,
    load_audio,
    read_audio,
    show_path,
)
from thadcr import numerics
from thadcr.config import LAYOUTS, SPLITS
from thadcr.errors import ThadcrError
from thadcr.files import AUDIO_SUFFIXES, atomic_write_bytes, sha256, torch_bytes

log = logging.getLogger(__name__)

DEFAULT_AUDIO_PATTERN = "{youtube_id}_{start_time}.wav"
CLOTHO_FOLDERS = {"train": "development", "val": "validation", "test": "evaluation"}
CLOTHO_CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))
CLOTHO_COLUMNS = ("file_name", *CLOTHO_CAPTIONS)
AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
PAD_DB = -100.0  # log-mel of digital silence: 10*log10(amin=1e-10), the HTS-AT/PANNs floor
MAX_LISTED = 20  # missing files named in an error message


class DatasetError(ThadcrError, ValueError):
    """A data set file is malformed or incomplete; the message names it and says what to do."""


# ----------------------------------------------------------------------------- captions
def _strip_punctuation(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("'", "").replace("\u2019", "")  # "dog's" -> "dogs"
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def normalise_caption(text: str, file: str | Path = "<caption>", row: int | None = None) -> str:
    """Lower-case, apostrophes dropped, other punctuation replaced by a space, spaces collapsed.

    The caption pre-processing of ref [8]'s public code. An empty result is a DatasetError naming
    ``file`` and ``row`` (1 = the first row after the CSV header).
    """
    clean = _strip_punctuation(text)
    if not clean:
        where = f"{show_path(file)} row {row}" if row is not None else show_path(file)
        raise DatasetError(f"{where}: caption {text!r} is empty after normalisation. Write a caption with words")
    return clean


# ----------------------------------------------------------------------------- problems
SEVERITIES = ("error", "warning", "info")
_LINE_BREAK = re.compile(r"\s*[\r\n\t\f\v]\s*")  # a break and the indentation around it


@dataclass
class Problem:
    """One finding of :func:`check_dataset`; ``str()`` is a single line with ``file`` shown by
    :func:`~thadcr.audio_io.show_path`.

    ``severity`` is "error" (the data set cannot be used as is), "warning" (usable, but
    look at it) or "info" (facts such as sample rates).
    """

    file: str
    row: int | None
    what: str
    fix: str = ""
    severity: str = "error"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"Problem severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")

    def __str__(self) -> str:
        where = show_path(self.file) + (f" row {self.row}" if self.row is not None else "")
        text = f"{self.severity.upper()}: {where}: {self.what}" + (f" -> {self.fix}" if self.fix else "")
        return _LINE_BREAK.sub(" ", text).strip()  # one line; runs of spaces inside names are kept


class Problems(list):
    """What :func:`check_dataset` returns: a list of :class:`Problem`, with counts by severity."""

    def counts(self) -> dict[str, int]:
        return {severity: sum(p.severity == severity for p in self) for severity in SEVERITIES}

    def summary(self) -> str:
        """The last line of ``thadcr data check``, e.g. "1 error(s), 2 warning(s), 3 info"."""
        counts = self.counts()
        return f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info"


@dataclass
class _Clip:
    clip_id: str
    path: Path
    row: int  # first CSV row (1-based, header excluded) naming the clip
    captions: list[str] = field(default_factory=list)


def _read_csv(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of its cells exactly as written (published file names can begin
    with a space or hold two); only the header names are stripped (and a BOM dropped).
    DatasetError names missing columns and a row with more non-empty cells than the header."""
    where = show_path(path)
    if not path.is_file():
        raise DatasetError(f"{where}: file not found. Put the split's CSV there (see docs: data sets)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            records = list(reader)
    except UnicodeDecodeError as error:
        raise DatasetError(f"{where}: not UTF-8 text ({error}). Re-save the CSV as UTF-8") from error
    except csv.Error as error:
        raise DatasetError(f"{where}: malformed CSV ({error}). Fix the quoting on that line") from error
    absent = [c for c in needed if c not in columns]
    if absent:
        raise DatasetError(
            f"{where}: missing column(s) {', '.join(absent)} (found: {', '.join(columns) or 'none'}). "
            f"The file needs the columns {', '.join(needed)}"
        )
    rows = []
    for row, rec in enumerate(records, start=1):
        extra = [cell for cell in rec.pop(None, None) or [] if cell.strip()]  # cells beyond the header
        if extra:
            raise DatasetError(
                f"{where} row {row}: {len(extra)} cell(s) more than the header ({', '.join(map(repr, extra[:3]))}). "
                'Put a cell that holds commas in double quotes ("a, b"), or remove the extra cells'
            )
        rows.append({k.strip(): v or "" for k, v in rec.items()})
    return rows


def _parse_clotho(csv_path: Path, audio_dir: Path) -> tuple[list[_Clip], list[Problem]]:
    """Clotho v2 rows (file_name, caption_1..caption_5) -> clips; empty cells are absent captions."""
    clips: dict[str, _Clip] = {}
    problems: list[Problem] = []
    for row, rec in enumerate(_read_csv(csv_path, CLOTHO_COLUMNS), start=1):
        name = rec["file_name"]  # byte for byte: the file on disk is named exactly so
        if not name.strip():
            problems.append(Problem(str(csv_path), row, f"empty file_name {name!r}", "give the audio file's name"))
            continue
        if name in clips:
            problems.append(
                Problem(str(csv_path), row, f"duplicate file_name {name!r} (first in row {clips[name].row})",
                        "keep one row per audio file, with up to five captions")
            )
            continue
        if not any(rec[c].strip() for c in CLOTHO_CAPTIONS):
            problems.append(Problem(str(csv_path), row, f"{name!r} has no caption at all",
                                    "fill caption_1 (at least) or remove the row"))
            continue
        clip = _Clip(name, audio_dir / name, row)
        for column in CLOTHO_CAPTIONS:
            if not rec[column].strip():
                continue  # absent caption (the AudioCaps-like flavour fills caption_1 only)
            caption = _strip_punctuation(rec[column])
            if caption:
                clip.captions.append(caption)
            else:
                problems.append(Problem(str(csv_path), row, f"{column} {rec[column]!r} is empty after normalisation",
                                        "write a caption with words, or clear the cell"))
        clips[name] = clip
    return list(clips.values()), problems


def _parse_audiocaps(csv_path: Path, audio_dir: Path, pattern: str) -> tuple[list[_Clip], list[Problem]]:
    """AudioCaps rows (one caption each) grouped by youtube_id, in first-appearance order."""
    clips: dict[str, _Clip] = {}
    ids: dict[str, int] = {}
    problems: list[Problem] = []
    for row, rec in enumerate(_read_csv(csv_path, AUDIOCAPS_COLUMNS), start=1):
        try:
            name = pattern.format(**rec)
        except (KeyError, IndexError, ValueError) as error:
            raise DatasetError(
                f"{show_path(csv_path)}: audio_pattern {pattern!r} cannot be filled from row {row} ({error!r}); "
                f"it may use the columns {', '.join(rec)}. Fix audio_pattern"
            ) from error
        yid, cap_id = rec["youtube_id"], rec["audiocap_id"].strip()  # the id kept as written: it names the file
        if not yid.strip():
            problems.append(Problem(str(csv_path), row, f"empty youtube_id {yid!r}", "fill it or remove the row"))
            continue
        if cap_id and cap_id in ids:
            what = f"duplicate audiocap_id {cap_id!r} (first in row {ids[cap_id]})"
            problems.append(Problem(str(csv_path), row, what, "remove the repeated row"))
            continue
        ids[cap_id] = row
        caption = _strip_punctuation(rec["caption"])
        if not caption:
            problems.append(Problem(str(csv_path), row, f"caption {rec['caption']!r} is empty after normalisation",
                                    "write a caption with words or remove the row"))
            continue
        clip = clips.setdefault(yid, _Clip(yid, audio_dir / name, row))
        if clip.path != audio_dir / name:
            what = (f"youtube_id {yid!r} names audio {name!r} but row {clip.row} names "
                    f"{str(clip.path.relative_to(audio_dir))!r}")
            problems.append(Problem(str(csv_path), row, what, "give every row of one youtube_id the same start_time"))
            continue
        clip.captions.append(caption)
    return list(clips.values()), problems


def _audiocaps_audio_dir(root: Path, split: str) -> Path:
    """``<root>/audio/<split>/``, else ``<root>/<split>/`` (the first when neither exists)."""
    for candidate in (root / "audio" / split, root / split):
        if candidate.is_dir():
            return candidate
    return root / "audio" / split


def _split_files(root: Path, layout: str, split: str) -> tuple[Path, Path]:
    """(CSV path, audio folder) of one split."""
    if layout == "clotho":
        folder = CLOTHO_FOLDERS[split]
        return root / f"clotho_captions_{folder}.csv", root / folder
    return root / f"{split}.csv", _audiocaps_audio_dir(root, split)


def _parse(root: Path, layout: str, split: str, pattern: str) -> tuple[Path, Path, list[_Clip], list[Problem]]:
    if layout not in LAYOUTS:
        raise DatasetError(f"layout {layout!r} is not one of {', '.join(map(repr, LAYOUTS))}")
    if split not in SPLITS:
        raise DatasetError(f"split {split!r} is not one of {', '.join(map(repr, SPLITS))}")
    csv_path, audio_dir = _split_files(root, layout, split)
    if layout == "clotho":
        clips, problems = _parse_clotho(csv_path, audio_dir)
    else:
        clips, problems = _parse_audiocaps(csv_path, audio_dir, pattern)
    return csv_path, audio_dir, clips, problems


def _audio_stem(name: str) -> str:
    """``name`` without its audio extension (any case); unchanged when it has none."""
    stem, suffix = os.path.splitext(name)
    return stem if suffix.lower() in AUDIO_SUFFIXES else name


def _loose(name: str) -> str:
    """A file name's stem without case, Unicode-form and whitespace differences (for hints only)."""
    return " ".join(unicodedata.normalize("NFC", _audio_stem(name)).casefold().split())


class _AudioFiles:
    """Finds the audio file of a clip: the name the CSV gives, else the same stem with another
    audio extension (AUDIO_SUFFIXES, either case), since a download keeps the format it got.

    Each folder is listed once (``os.scandir``), so 50,000 clips cost one listing, not a search
    each. Names are compared exactly: nothing is stripped, collapsed or Unicode-normalised.
    """

    def __init__(self) -> None:
        # folder -> (file names, audio stem -> names, loose stem -> names, why it cannot be listed)
        self._folders: dict[Path, tuple[set[str], dict[str, list[str]], dict[str, list[str]], str]] = {}

    def _folder(self, folder: Path) -> tuple[set[str], dict[str, list[str]], dict[str, list[str]], str]:
        if folder not in self._folders:
            names: set[str] = set()
            failure = ""
            try:
                with os.scandir(folder) as entries:
                    names = {entry.name for entry in entries if entry.is_file()}
            except FileNotFoundError:
                failure = f"file not found (there is no folder {show_path(folder)})"
            except OSError as error:
                failure = f"file not found (folder {show_path(folder)} cannot be listed: {error.strerror or error})"
            stems: dict[str, list[str]] = {}
            loose: dict[str, list[str]] = {}
            for name in sorted(names):
                if os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES:
                    stems.setdefault(_audio_stem(name), []).append(name)
                    loose.setdefault(_loose(name), []).append(name)
            self._folders[folder] = names, stems, loose, failure
        return self._folders[folder]

    def candidates(self, path: Path) -> list[Path]:
        """``[path]`` when that file exists, else the files of its folder with its stem and an
        audio extension (sorted by name)."""
        names, stems, _, _ = self._folder(path.parent)
        if path.name in names:
            return [path]
        return [path.parent / name for name in stems.get(_audio_stem(path.name), [])]

    def why_missing(self, path: Path) -> str:
        """The reason for a clip without a candidate, naming files whose names differ only in
        spaces, case or Unicode form (shown with ascii(), so that the difference is visible)."""
        _, _, loose, failure = self._folder(path.parent)
        near = loose.get(_loose(path.name), [])
        if failure or not near:
            return failure or "file not found"
        return (f"file not found ({', '.join(map(ascii, near[:3]))} differ{'s' if len(near) == 1 else ''} only in "
                "spaces, case or Unicode form: rename the file or fix the CSV)")


def _locate(clips: list[_Clip], csv_path: Path) -> tuple[dict[str, str], dict[str, Problem]]:
    """Point each clip at its audio file (see :class:`_AudioFiles`). Returns, by clip id, why each
    clip without one has none, and an error for each clip with two or more candidates."""
    files = _AudioFiles()
    absent: dict[str, str] = {}
    ambiguous: dict[str, Problem] = {}
    for clip in clips:
        found = files.candidates(clip.path)
        if len(found) == 1:
            clip.path = found[0]
        elif found:
            what = (f"{clip.path.name!r} matches {len(found)} audio files: {', '.join(repr(p.name) for p in found)} "
                    f"(in {show_path(clip.path.parent)})")
            fix = "keep one file per clip: move the others away"
            ambiguous[clip.clip_id] = Problem(str(csv_path), clip.row, what, fix)
        else:
            absent[clip.clip_id] = files.why_missing(clip.path)
    return absent, ambiguous


def _probe(path: Path) -> str | None:
    """Why ``path`` cannot be used (from its header only), or None when it looks fine."""
    if not path.is_file():
        return "file not found"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as error:
        return f"unreadable ({error})"
    return "zero-length audio" if info.frames == 0 else None


# ----------------------------------------------------------------------------- splits
@dataclass
class Split:
    """One split in flat form: clip ``i`` is ``audio_paths[i]``; caption ``j`` belongs to clip
    ``caption_audio[j]`` (the ground truth of the retrieval metrics)."""

    name: str
    audio_paths: list[Path]  # (Na,)
    clip_ids: list[str]  # (Na,)
    captions: list[str]  # (Nt,) normalised
    caption_audio: np.ndarray  # (Nt,) int64 clip index of each caption
    missing: list[str] = field(default_factory=list)  # "'path': reason" of each excluded clip (show_path)

    def __post_init__(self) -> None:
        assert len(self.audio_paths) == len(self.clip_ids)
        assert self.caption_audio.shape == (len(self.captions),)

    @property
    def n_clips(self) -> int:
        return len(self.audio_paths)


def load_split(
    root: str | Path,
    layout: str,
    split: str,
    audio_pattern: str = DEFAULT_AUDIO_PATTERN,
    max_missing_share: float = 0.0,
) -> Split:
    """Read one split ("train", "val", "test") of a Clotho- or AudioCaps-layout folder.

    Any malformed CSV row, and a clip with two candidate audio files, is a DatasetError listing
    the problems. Each clip's file is the listed name, else its stem with another audio
    extension (:class:`_AudioFiles`); files are checked by their headers. Missing or unreadable
    ones are listed in ``Split.missing``; when their share of the clips exceeds
    ``max_missing_share`` a DatasetError names up to 20 of them and the least share that would
    accept them, otherwise those clips and their captions are left out and one warning line
    says how many clips and captions the split lost.
    """
    root = Path(root)
    csv_path, audio_dir, clips, problems = _parse(root, layout, split, audio_pattern)
    _raise_errors(csv_path, root, problems)
    if not clips:
        raise DatasetError(f"{show_path(csv_path)}: no clips in the {split} split. Fill the CSV")
    absent, ambiguous = _locate(clips, csv_path)
    _raise_errors(csv_path, root, list(ambiguous.values()))

    missing = [(clip, reason) for clip in clips if (reason := absent.get(clip.clip_id) or _probe(clip.path))]
    listed = [f"{show_path(clip.path)}: {reason}" for clip, reason in missing]
    n_captions = sum(len(clip.captions) for clip in clips)
    lost_captions = sum(len(clip.captions) for clip, _ in missing)
    share = len(missing) / len(clips)
    if share > max_missing_share:
        least = -(-len(missing) * 10_000 // len(clips)) / 10_000  # rounded UP: passing it accepts this split
        more = f"\n  ... and {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else ""
        raise DatasetError(
            f"{split} split of {show_path(root)}: {len(missing)} of {len(clips)} audio files ({share:.2%}) are missing "
            f"or unreadable, more than max_missing_share={max_missing_share}:\n"
            + "\n".join(f"  {line}" for line in listed[:MAX_LISTED]) + more
            + f"\nFix: put the audio files under {show_path(audio_dir)} (names from {show_path(csv_path.name)}"
            + (f" via audio_pattern {audio_pattern!r}" if layout == "audiocaps" else "")
            + f"; any of {', '.join(AUDIO_SUFFIXES)}), or pass max_missing_share={least:g} (the least that accepts "
            f"them) to go on without these clips and their {lost_captions} of {n_captions} captions"
        )
    if missing:
        gone = {clip.clip_id for clip, _ in missing}  # clip ids are unique within a split
        shown = "; ".join(listed[:MAX_LISTED])
        shown += f"; ... and {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else ""
        log.warning(_LINE_BREAK.sub(" ", (
            f"{split} split of {show_path(root)}: left out {len(missing)} of {len(clips)} clips ({share:.2%}) and "
            f"{lost_captions} of {n_captions} captions, their audio missing or unreadable (max_missing_share="
            f"{max_missing_share}; Split.missing and `thadcr data check` name them all): {shown}")))
        clips = [clip for clip in clips if clip.clip_id not in gone]

    captions = [c for clip in clips for c in clip.captions]
    caption_audio = np.array([i for i, clip in enumerate(clips) for _ in clip.captions], dtype=np.int64)
    return Split(split, [c.path for c in clips], [c.clip_id for c in clips], captions, caption_audio, listed)


def _raise_errors(csv_path: Path, root: Path, problems: list[Problem]) -> None:
    """A DatasetError listing up to 20 of the errors among ``problems``, if there are any."""
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        lines = "\n".join(f"  {p}" for p in errors[:MAX_LISTED])
        more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise DatasetError(
            f"{show_path(csv_path)}: {len(errors)} problem(s):\n{lines}{more}\n"
            f"Fix them (`thadcr data check {show_path(root)}` lists every problem)"
        )


# ----------------------------------------------------------------------------- data set check
def detect_layout(root: str | Path) -> str:
    """"clotho" when ``clotho_captions_*.csv`` exist, "audiocaps" when ``{train,val,test}.csv`` do."""
    root = Path(root)
    found = [
        layout
        for layout in LAYOUTS
        if any(_split_files(root, layout, split)[0].is_file() for split in SPLITS)
    ]
    if len(found) != 1:
        what = "both Clotho and AudioCaps caption files" if found else "no caption CSV"
        raise DatasetError(
            f"{root}: {what} found, cannot tell the layout. Expected clotho_captions_"
            f"{{development,validation,evaluation}}.csv or {{train,val,test}}.csv; pass the layout explicitly"
        )
    return found[0]


def check_dataset(
    root: str | Path, layout: str | None = None, audio_pattern: str = DEFAULT_AUDIO_PATTERN
) -> Problems:
    """Every problem of a data set folder, one :class:`Problem` each (nothing is raised).

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
        csv_path, audio_dir = _split_files(root, layout, split)
        if not csv_path.is_file():
            problems.append(Problem(str(csv_path), None, f"no {split} split", "add the CSV to use this split",
                                    "warning"))
            continue
        try:
            _, _, clips, found = _parse(root, layout, split, audio_pattern)
        except DatasetError as error:
            problems.append(Problem(str(csv_path), None, str(error).removeprefix(f"{show_path(csv_path)}: "),
                                    "fix the CSV"))
            continue
        problems += found
        absent, ambiguous = _locate(clips, csv_path)
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
    clip: _Clip
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
    split: str, csv_path: Path, audio_dir: Path, clips: list[_Clip], absent: dict[str, str], heard: list[_Heard]
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


# ----------------------------------------------------------------------------- log-mel cache
class LogMelCache:
    """Whole-clip log-mels (frames, n_mels), computed once per audio file and kept on disk.

    ``logmel`` is the front end (e.g. :class:`thadcr.audio.LogMel`): a module with a
    ``sample_rate`` and a ``settings`` dict of everything its output depends on. Entries live in
    ``cache_dir/logmel-<hash of those settings and the numerics (thadcr.numerics.cache_tag)>/``,
    so changing the front end or the numerics starts a fresh
    folder; each file is named by a hash of the audio file's absolute path, size and mtime, so an
    edited file is recomputed. Writes are atomic (tmp + os.replace), so several processes (DataLoader
    workers, concurrent runs) can fill one cache.
    The most recently used entries are also kept in memory, up to ``memory_bytes`` (0: none), so a
    training epoch over a small data set reads each file once; `get` returns the kept tensor itself,
    which callers must not modify in place (the datasets crop and `collate` copies).
    """

    VERSION = 1  # bump when the stored format changes
    DEFAULT_MEMORY_BYTES = 512 * 2**20  # holds all 3,950 clips of the tiny profile's AudioCaps-like set (483 MiB)

    def __init__(
        self, cache_dir: str | Path, logmel: nn.Module, memory_bytes: int = DEFAULT_MEMORY_BYTES
    ) -> None:
        if memory_bytes < 0:
            raise ValueError(f"memory_bytes must be 0 (no in-memory copies) or positive, got {memory_bytes}")
        self.memory_bytes = int(memory_bytes)
        self._memory: OrderedDict[Path, torch.Tensor] = OrderedDict()  # cache file -> tensor, oldest first
        self._memory_used = 0
        self.logmel = logmel
        self.sample_rate = int(logmel.sample_rate)
        self.settings = {**logmel.settings, "sample_rate": self.sample_rate, "cache_version": self.VERSION,
                         "numerics": numerics.cache_tag()}
        try:
            text = json.dumps(self.settings, sort_keys=True)
        except TypeError as error:
            raise ValueError(f"the front end's settings must be JSON values, got {logmel.settings!r}") from error
        self.folder = Path(cache_dir) / f"logmel-{sha256(text, length=20)}"
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "settings.json"
        if not info.exists():
            atomic_write_bytes(info, (json.dumps(self.settings, indent=2, sort_keys=True) + "\n").encode())

    def entry(self, path: str | Path) -> Path:
        """The cache file of an audio file (which need not exist yet)."""
        path = Path(path).resolve()
        if not path.is_file():
            raise AudioError.at(path, "file not found", "Download it, or remove it from the data set's CSV")
        stat = path.stat()
        return self.folder / f"{sha256(f'{path}|{stat.st_size}|{stat.st_mtime_ns}', length=20)}.pt"

    def get(self, path: str | Path) -> torch.Tensor:
        """Log-mel (frames, n_mels) float32 of the whole file, from memory, the disk cache or computed now."""
        entry = self.entry(path)
        if entry in self._memory:
            self._memory.move_to_end(entry)
            return self._memory[entry]
        value = self._load_or_compute(entry, path)
        self._remember(entry, value)
        return value

    def _remember(self, entry: Path, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.memory_bytes:
            return
        self._memory[entry] = value
        self._memory_used += size
        while self._memory_used > self.memory_bytes:
            _, old = self._memory.popitem(last=False)
            self._memory_used -= old.numel() * old.element_size()

    def _load_or_compute(self, entry: Path, path: str | Path) -> torch.Tensor:
        if entry.exists():
            try:
                cached = torch.load(entry, map_location="cpu", weights_only=True)
            except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
                cached = error
            if isinstance(cached, torch.Tensor) and cached.dim() == 2:
                return cached
            log.warning("log-mel cache entry %s of %s is unusable (%s); recomputing it", show_path(entry),
                        show_path(path), cached if isinstance(cached, Exception) else "not a (frames, n_mels) tensor")
        value = self.compute(path)
        atomic_write_bytes(entry, torch_bytes(value))
        return value

    @torch.no_grad()
    def compute(self, path: str | Path) -> torch.Tensor:
        """Log-mel (frames, n_mels) of the whole file, without touching the cache."""
        wave = load_audio(path, self.sample_rate)  # (samples,)
        device = next(iter([*self.logmel.parameters(), *self.logmel.buffers()]), torch.empty(0)).device
        out = self.logmel(wave[None].to(device))  # (1, frames, n_mels)
        assert out.dim() == 3 and out.shape[0] == 1, f"LogMel must return (B, frames, n_mels), got {tuple(out.shape)}"
        return out[0].float().cpu().contiguous()


# ----------------------------------------------------------------------------- cropping, datasets
def crop_frames(
    logmel: torch.Tensor, n_frames: int, mode: str, generator: torch.Generator | None = None, pad_value: float = PAD_DB
) -> torch.Tensor:
    """``logmel`` (T, F) cropped or padded at the end with ``pad_value`` to (n_frames, F).

    ``pad_value`` defaults to -100 dB, the log-mel the HTS-AT front end gives to zero samples,
    so padding frames matches the waveform zero-padding of ref [8]. Crop modes as in
    :func:`thadcr.audio_io.crop_offset`.
    """
    if logmel.dim() != 2:
        raise ValueError(f"crop_frames expects a log-mel (frames, mels), got shape {tuple(logmel.shape)}")
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    check_crop_mode(mode)
    length, mels = logmel.shape
    if length < n_frames:
        pad = logmel.new_full((n_frames - length, mels), pad_value)
        out = torch.cat([logmel, pad])
    else:
        start = crop_offset(length, n_frames, mode, generator)
        out = logmel[start : start + n_frames]
    assert out.shape == (n_frames, mels)
    return out


def spec_augment(
    logmel: torch.Tensor,
    generator: torch.Generator,
    time_masks: int,
    time_width: int,
    freq_masks: int,
    freq_width: int,
) -> torch.Tensor:
    """SpecAugment masking of a training log-mel (T, F), as PANNs and HTS-AT train with it.

    ``time_masks`` stripes of 0 to ``time_width - 1`` frames and ``freq_masks`` stripes of 0 to
    ``freq_width - 1`` mel bins, each at a uniform start, are set to the clip's mean per mel bin.
    PANNs and HTS-AT set them to 0 after their per-bin BatchNorm ``bn0``, i.e. to the per-bin mean
    of the data; here the masking runs before the model, so the clip's own per-bin mean stands in
    for it. Returns a new tensor; ``logmel`` is not modified.
    """
    if logmel.dim() != 2:
        raise ValueError(f"spec_augment expects a log-mel (frames, mels), got shape {tuple(logmel.shape)}")
    for name, value in (("time_masks", time_masks), ("time_width", time_width),
                        ("freq_masks", freq_masks), ("freq_width", freq_width)):
        if value < 0:
            raise ValueError(f"spec_augment: {name} must be >= 0, got {value}")
    out = logmel.clone()
    fill = logmel.mean(dim=0)  # (F,)
    for axis, n_masks, width in ((0, time_masks, time_width), (1, freq_masks, freq_width)):
        size = out.shape[axis]
        for _ in range(n_masks):
            span = int(torch.randint(0, max(width, 1), (1,), generator=generator))
            span = min(span, size)
            start = int(torch.randint(0, size - span + 1, (1,), generator=generator))
            if axis == 0:
                out[start : start + span] = fill
            else:
                out[:, start : start + span] = fill[start : start + span]
    return out


def clip_frames(clip_seconds: float, sample_rate: int = 32000, hop: int = 320) -> int:
    """Log-mel frames of a clip with centre padding: 10 s at 32 kHz, hop 320 -> 1001."""
    return int(round(clip_seconds * sample_rate)) // hop + 1


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index) alone: crops do not depend on the order
    items are drawn in, the worker that draws them, or what ran before (resumable)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class CaptionDataset(torch.utils.data.Dataset):
    """One item per caption: dict(logmel (n_frames, F), caption, clip_index, caption_index);
    without ``logmel`` when ``with_audio`` is False (a frozen audio encoder's cached features are
    looked up by clip_index instead, `thadcr.audio_features`).

    Training draws a random crop, then the SpecAugment masks of ``spec_augment`` (time masks,
    time width, frequency masks, frequency width; zeros: none), from a per-item generator seeded
    by (seed, epoch, index). The key of an item is its caption index (the epoch is the one of
    :meth:`set_epoch`) or an ``(epoch, index)`` pair, as `GlobalBatchSampler` yields them, so that
    DataLoader workers, which hold their own copy of the dataset, need no epoch state. Otherwise
    the crop is the deterministic centre crop and nothing is masked.
    """

    def __init__(
        self, split: Split, cache: LogMelCache, n_frames: int, train: bool, seed: int = 0,
        spec_augment: tuple[int, int, int, int] = (0, 0, 0, 0), with_audio: bool = True,
    ) -> None:
        self.split, self.cache, self.n_frames = split, cache, int(n_frames)
        self.train, self.seed, self.epoch = bool(train), int(seed), 0
        self.with_audio = bool(with_audio)
        self.spec_augment = tuple(int(v) for v in spec_augment)  # (time_masks, time_width, freq_masks, freq_width)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.split.captions)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        if not 0 <= index < len(self):
            raise IndexError(f"caption index {index} out of range for {len(self)} captions")
        clip = int(self.split.caption_audio[index])
        item = {"caption": self.split.captions[index], "clip_index": clip, "caption_index": index}
        if not self.with_audio:
            return item
        whole = self.cache.get(self.split.audio_paths[clip])  # (T, F)
        if self.train:
            generator = item_generator(self.seed, epoch, index)
            logmel = crop_frames(whole, self.n_frames, "random", generator)
            time_masks, _, freq_masks, _ = self.spec_augment
            if time_masks or freq_masks:
                logmel = spec_augment(logmel, generator, *self.spec_augment)
        else:
            logmel = crop_frames(whole, self.n_frames, "center")
        return {"logmel": logmel, **item}


class ClipDataset(torch.utils.data.Dataset):
    """One item per clip (evaluation encodes each clip once): dict(logmel, clip_id, clip_index),
    centre-cropped."""

    def __init__(self, split: Split, cache: LogMelCache, n_frames: int) -> None:
        self.split, self.cache, self.n_frames = split, cache, int(n_frames)

    def __len__(self) -> int:
        return self.split.n_clips

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        logmel = crop_frames(self.cache.get(self.split.audio_paths[index]), self.n_frames, "center")
        return {"logmel": logmel, "clip_id": self.split.clip_ids[index], "clip_index": index}


_LIST_KEYS = {"caption": "captions", "clip_id": "clip_ids"}
_INDEX_KEYS = ("clip_index", "caption_index")


def collate(batch: list[dict]) -> dict:
    """Items of either dataset -> dict: ``logmel`` (B, n_frames, F) when the items have one, ``captions`` / ``clip_ids``
    lists, ``clip_index`` / ``caption_index`` LongTensors (B,)."""
    if not batch:
        raise ValueError("collate got an empty batch")
    keys = set(batch[0])
    unknown = keys - {"logmel", *_LIST_KEYS, *_INDEX_KEYS}
    if unknown or any(set(item) != keys for item in batch):
        raise ValueError(f"collate: items must share the keys of CaptionDataset/ClipDataset, got {sorted(keys)}")
    out: dict = {"logmel": torch.stack([item["logmel"] for item in batch])} if "logmel" in keys else {}
    for key, plural in _LIST_KEYS.items():
        if key in keys:
            out[plural] = [item[key] for item in batch]
    for key in _INDEX_KEYS:
        if key in keys:
            out[key] = torch.tensor([item[key] for item in batch], dtype=torch.long)
    assert "logmel" not in out or (out["logmel"].dim() == 3 and out["logmel"].shape[0] == len(batch))
    return out


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Shuffled global batches of one epoch (deterministic from seed and epoch; last partial dropped)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_items, generator=generator)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n_items // batch_size)]


class GlobalBatchSampler(torch.utils.data.Sampler):
    """This process's share of each global batch of an epoch, as ``(epoch, caption index)`` keys.

    Global batch b of epoch e is ``epoch_batches(n_items, batch_size, seed, e)[b]`` whatever the
    number of processes; process ``rank`` of ``world`` takes its rows ``rank * B / world`` to
    ``(rank + 1) * B / world``, so the processes together see exactly the batches of one process.
    ``max_steps`` > 0 keeps only the first batches of each epoch. Call :meth:`set_epoch` before
    each epoch; one DataLoader (and its persistent workers) then serves every epoch.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 max_steps: int = 0) -> None:
        if batch_size % world:
            raise ValueError(f"batch_size={batch_size} is not divisible by the {world} processes")
        if n_items < batch_size:
            raise ValueError(f"{n_items} items are fewer than one batch of {batch_size}")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.per_rank, self.max_steps = rank, batch_size // world, max_steps
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.n_items // self.batch_size
        return min(n, self.max_steps) if self.max_steps else n

    def __iter__(self):
        batches = epoch_batches(self.n_items, self.batch_size, self.seed, self.epoch)[: len(self)]
        for batch in batches:
            mine = batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
            yield [(self.epoch, int(i)) for i in mine]


def data_loader(dataset: torch.utils.data.Dataset, num_workers: int, pin_memory: bool, batch_size: int | None = None,
                batch_sampler: torch.utils.data.Sampler | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader of `collate`d batches in order: `batch_sampler`'s batches, or consecutive
    batches of ``batch_size`` items. With workers, they stay alive between epochs.

    Items draw their randomness from per-item generators (`item_generator`), so the loader gets a
    generator of its own: starting an epoch then leaves the global random state (dropout) alone,
    and a resumed run draws exactly what an uninterrupted one does.
    """
    return torch.utils.data.DataLoader(
        dataset, batch_size=1 if batch_sampler else batch_size, batch_sampler=batch_sampler, shuffle=False,
        num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory,
        persistent_workers=num_workers > 0 and batch_sampler is not None, generator=torch.Generator().manual_seed(0),
    )
