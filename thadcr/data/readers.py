"""Clotho and AudioCaps readers: the caption CSVs, caption normalisation, audio-file location and
the flat :class:`Split` every other module uses.

Section 3.1 of the paper: AudioCaps (49,274 training clips with one caption each, 494
validation and 957 test clips with five captions) and Clotho v2 (3,839 / 1,045 / 1,045 clips,
five captions each), trained with the pipeline of its ref [8]. A :class:`Split` is the flat
form: one audio file per clip, captions in one list, and ``caption_audio[j]`` the clip of
caption ``j``. Missing audio is never silent: it is listed in ``Split.missing``, and refused
above ``max_missing_share``. Choices are in ``docs/decisions/datasets.md``.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from thadcr.data.audio_io import show_path
from thadcr.config import LAYOUTS, SPLITS
from thadcr.errors import ThadcrError
from thadcr.files import AUDIO_SUFFIXES

log = logging.getLogger(__name__)

DEFAULT_AUDIO_PATTERN = "{youtube_id}_{start_time}.wav"
CLOTHO_FOLDERS = {"train": "development", "val": "validation", "test": "evaluation"}
CLOTHO_CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))
CLOTHO_COLUMNS = ("file_name", *CLOTHO_CAPTIONS)
AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
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
    """One finding of the readers or of :func:`~thadcr.data.check.check_dataset`; ``str()`` is a
    single line with ``file`` shown by :func:`~thadcr.data.audio_io.show_path`.

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


@dataclass
class Clip:
    """A clip as a split's CSV lists it: its id, audio file, first row and normalised captions."""

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


def _parse_clotho(csv_path: Path, audio_dir: Path) -> tuple[list[Clip], list[Problem]]:
    """Clotho v2 rows (file_name, caption_1..caption_5) -> clips; empty cells are absent captions."""
    clips: dict[str, Clip] = {}
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
        clip = Clip(name, audio_dir / name, row)
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


def _parse_audiocaps(csv_path: Path, audio_dir: Path, pattern: str) -> tuple[list[Clip], list[Problem]]:
    """AudioCaps rows (one caption each) grouped by youtube_id, in first-appearance order."""
    clips: dict[str, Clip] = {}
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
        clip = clips.setdefault(yid, Clip(yid, audio_dir / name, row))
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


def split_files(root: Path, layout: str, split: str) -> tuple[Path, Path]:
    """(CSV path, audio folder) of one split."""
    if layout == "clotho":
        folder = CLOTHO_FOLDERS[split]
        return root / f"clotho_captions_{folder}.csv", root / folder
    return root / f"{split}.csv", _audiocaps_audio_dir(root, split)


def parse_split(root: Path, layout: str, split: str, pattern: str) -> tuple[Path, Path, list[Clip], list[Problem]]:
    """(CSV path, audio folder, clips, problems of its rows) of one split; a DatasetError for an
    unknown layout or split, or a CSV that cannot be read."""
    if layout not in LAYOUTS:
        raise DatasetError(f"layout {layout!r} is not one of {', '.join(map(repr, LAYOUTS))}")
    if split not in SPLITS:
        raise DatasetError(f"split {split!r} is not one of {', '.join(map(repr, SPLITS))}")
    csv_path, audio_dir = split_files(root, layout, split)
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


def locate_audio(clips: list[Clip], csv_path: Path) -> tuple[dict[str, str], dict[str, Problem]]:
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
    csv_path, audio_dir, clips, problems = parse_split(root, layout, split, audio_pattern)
    _raise_errors(csv_path, root, problems)
    if not clips:
        raise DatasetError(f"{show_path(csv_path)}: no clips in the {split} split. Fill the CSV")
    absent, ambiguous = locate_audio(clips, csv_path)
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


# ----------------------------------------------------------------------------- layout
def detect_layout(root: str | Path) -> str:
    """"clotho" when ``clotho_captions_*.csv`` exist, "audiocaps" when ``{train,val,test}.csv`` do."""
    root = Path(root)
    found = [
        layout
        for layout in LAYOUTS
        if any(split_files(root, layout, split)[0].is_file() for split in SPLITS)
    ]
    if len(found) != 1:
        what = "both Clotho and AudioCaps caption files" if found else "no caption CSV"
        raise DatasetError(
            f"{root}: {what} found, cannot tell the layout. Expected clotho_captions_"
            f"{{development,validation,evaluation}}.csv or {{train,val,test}}.csv; pass the layout explicitly"
        )
    return found[0]
