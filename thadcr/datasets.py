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
import hashlib
import io
import json
import logging
import os
import pickle
import unicodedata
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch
from torch import nn

from thadcr.audio_io import AudioError, check_crop_mode, crop_offset, is_silent, load_audio, read_audio
from thadcr.config import LAYOUTS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_AUDIO_PATTERN = "{youtube_id}_{start_time}.wav"
CLOTHO_FOLDERS = {"train": "development", "val": "validation", "test": "evaluation"}
CLOTHO_CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))
CLOTHO_COLUMNS = ("file_name", *CLOTHO_CAPTIONS)
AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
PAD_DB = -100.0  # log-mel of digital silence: 10*log10(amin=1e-10), the HTS-AT/PANNs floor
MAX_LISTED = 20  # missing files named in an error message


class DatasetError(ValueError):
    """A data set file is malformed or incomplete; the message names it and says what to do."""


# ----------------------------------------------------------------------------- captions
def _strip_punctuation(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("'", "").replace("\u2019", "")  # "dog's" -> "dogs"
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def normalise_caption(text: str, file: str | Path = "<caption>", row: int | None = None) -> str:
    """Lower-case, apostrophes dropped, other punctuation replaced by a space, spaces collapsed.

    The caption pre-processing of ref [8] (peers.md). An empty result is a DatasetError naming
    ``file`` and ``row`` (1 = the first row after the CSV header).
    """
    clean = _strip_punctuation(text)
    if not clean:
        where = f"{file} row {row}" if row is not None else str(file)
        raise DatasetError(f"{where}: caption {text!r} is empty after normalisation. Write a caption with words")
    return clean


# ----------------------------------------------------------------------------- problems
@dataclass
class Problem:
    """One finding of :func:`check_dataset`; ``str()`` is a single line.

    ``severity`` is "error" (the data set cannot be used as is), "warning" (usable, but
    look at it) or "info" (facts such as sample rates).
    """

    file: str
    row: int | None
    what: str
    fix: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file} row {self.row}" if self.row is not None else self.file
        text = f"{self.severity.upper()}: {where}: {self.what}" + (f" -> {self.fix}" if self.fix else "")
        return " ".join(text.split())  # one line


@dataclass
class _Clip:
    clip_id: str
    path: Path
    row: int  # first CSV row (1-based, header excluded) naming the clip
    captions: list[str] = field(default_factory=list)


def _read_csv(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of stripped strings; DatasetError names missing columns."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found. Put the split's CSV there (see docs: data sets)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in rec.items() if isinstance(k, str)} for rec in reader]
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text ({error}). Re-save the CSV as UTF-8") from error
    except csv.Error as error:
        raise DatasetError(f"{path}: malformed CSV ({error}). Fix the quoting on that line") from error
    absent = [c for c in needed if c not in columns]
    if absent:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(absent)} (found: {', '.join(columns) or 'none'}). "
            f"The file needs the columns {', '.join(needed)}"
        )
    return rows


def _parse_clotho(csv_path: Path, audio_dir: Path) -> tuple[list[_Clip], list[Problem]]:
    """Clotho v2 rows (file_name, caption_1..caption_5) -> clips; empty cells are absent captions."""
    clips: dict[str, _Clip] = {}
    problems: list[Problem] = []
    for row, rec in enumerate(_read_csv(csv_path, CLOTHO_COLUMNS), start=1):
        name = rec["file_name"]
        if not name:
            problems.append(Problem(str(csv_path), row, "empty file_name", "give the audio file's name"))
            continue
        if name in clips:
            problems.append(
                Problem(str(csv_path), row, f"duplicate file_name {name!r} (first in row {clips[name].row})",
                        "keep one row per audio file, with up to five captions")
            )
            continue
        if not any(rec[c] for c in CLOTHO_CAPTIONS):
            problems.append(Problem(str(csv_path), row, f"{name!r} has no caption at all",
                                    "fill caption_1 (at least) or remove the row"))
            continue
        clip = _Clip(name, audio_dir / name, row)
        for column in CLOTHO_CAPTIONS:
            if not rec[column]:
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
                f"{csv_path}: audio_pattern {pattern!r} cannot be filled from row {row} ({error!r}); "
                f"it may use the columns {', '.join(rec)}. Fix audio_pattern"
            ) from error
        yid, cap_id = rec["youtube_id"], rec["audiocap_id"]
        if not yid:
            problems.append(Problem(str(csv_path), row, "empty youtube_id", "fill it or remove the row"))
            continue
        if cap_id and cap_id in ids:
            what = f"duplicate audiocap_id {cap_id} (first in row {ids[cap_id]})"
            problems.append(Problem(str(csv_path), row, what, "remove the repeated row"))
            continue
        ids[cap_id] = row
        caption = _strip_punctuation(rec["caption"])
        if not caption:
            problems.append(Problem(str(csv_path), row, f"caption {rec['caption']!r} is empty after normalisation",
                                    "write a caption with words or remove the row"))
            continue
        clip = clips.setdefault(yid, _Clip(yid, audio_dir / name, row))
        if clip.path.name != name:
            what = f"youtube_id {yid} names audio {name!r} but row {clip.row} names {clip.path.name!r}"
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
    missing: list[str] = field(default_factory=list)  # "path: reason" of each excluded clip

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

    Any malformed CSV row is a DatasetError listing the problems. Audio files are checked by
    their headers: missing or unreadable ones are listed in ``Split.missing``; when their share
    of the clips exceeds ``max_missing_share`` a DatasetError names up to 20 of them, otherwise
    those clips and their captions are left out with a logged warning.
    """
    root = Path(root)
    csv_path, audio_dir, clips, problems = _parse(root, layout, split, audio_pattern)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        lines = "\n".join(f"  {p}" for p in errors[:MAX_LISTED])
        more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise DatasetError(
            f"{csv_path}: {len(errors)} problem(s):\n{lines}{more}\n"
            f"Fix the CSV (`thadcr data check {root}` lists every problem)"
        )
    if not clips:
        raise DatasetError(f"{csv_path}: no clips in the {split} split. Fill the CSV")

    missing = [(clip, reason) for clip in clips if (reason := _probe(clip.path)) is not None]
    share = len(missing) / len(clips)
    listed = [f"{clip.path}: {reason}" for clip, reason in missing]
    if share > max_missing_share:
        more = f"\n  ... and {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else ""
        raise DatasetError(
            f"{split} split of {root}: {len(missing)} of {len(clips)} audio files ({share:.2%}) are missing or "
            f"unreadable, more than max_missing_share={max_missing_share}:\n"
            + "\n".join(f"  {line}" for line in listed[:MAX_LISTED]) + more
            + f"\nFix: put the audio files under {audio_dir} (names from {csv_path.name}"
            + (f" via audio_pattern {audio_pattern!r}" if layout == "audiocaps" else "")
            + f"), or set max_missing_share to at least {share:.4f} to train without them"
        )
    if missing:
        gone = {clip.clip_id for clip, _ in missing}  # clip ids are unique within a split
        n_captions = sum(len(clip.captions) for clip, _ in missing)
        log.warning(
            "%s split of %s: leaving out %d of %d clips (%d captions) whose audio is missing or unreadable "
            "(max_missing_share=%s): %s",
            split, root, len(missing), len(clips), n_captions, max_missing_share,
            "; ".join(listed[:MAX_LISTED]) + (" ..." if len(listed) > MAX_LISTED else ""),
        )
        clips = [clip for clip in clips if clip.clip_id not in gone]

    captions = [c for clip in clips for c in clip.captions]
    caption_audio = np.array([i for i, clip in enumerate(clips) for _ in clip.captions], dtype=np.int64)
    return Split(split, [c.path for c in clips], [c.clip_id for c in clips], captions, caption_audio, listed)


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
) -> list[Problem]:
    """Every problem of a data set folder, one :class:`Problem` each (nothing is raised).

    Checks CSV columns, empty captions, duplicate names, every audio file in full (missing,
    unreadable, empty, zero-length, NaN/Inf: errors; silence: warning), clips named in two
    splits and audio files no CSV lists (warnings), and reports the sample rates (info).
    """
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), None, "not a folder", "pass the data set's root folder")]
    try:
        layout = layout or detect_layout(root)
        if layout not in LAYOUTS:
            raise DatasetError(f"layout {layout!r} is not one of {', '.join(map(repr, LAYOUTS))}")
    except DatasetError as error:
        return [Problem(str(root), None, str(error), "pass --layout clotho or --layout audiocaps")]

    problems: list[Problem] = []
    owners: dict[str, str] = {}  # clip id -> first split naming it
    for split in SPLITS:
        csv_path, audio_dir = _split_files(root, layout, split)
        if not csv_path.is_file():
            problems.append(Problem(str(csv_path), None, f"no {split} split", "add the CSV to use this split",
                                    "warning"))
            continue
        try:
            _, _, clips, found = _parse(root, layout, split, audio_pattern)
        except DatasetError as error:
            problems.append(Problem(str(csv_path), None, str(error), "fix the CSV"))
            continue
        problems += found
        problems += _check_audio(split, csv_path, audio_dir, clips, owners)
    return problems


def _check_audio(
    split: str, csv_path: Path, audio_dir: Path, clips: list[_Clip], owners: dict[str, str]
) -> list[Problem]:
    """Read every clip of one split in full and report what is wrong with it."""
    problems: list[Problem] = []
    rates: Counter = Counter()
    channels: Counter = Counter()
    silent = 0
    for clip in clips:
        source = f"(listed in {csv_path.name} row {clip.row})"
        if clip.clip_id in owners:
            problems.append(Problem(str(csv_path), clip.row,
                                    f"clip {clip.clip_id!r} is also in the {owners[clip.clip_id]} split",
                                    "keep the splits disjoint (a shared clip inflates the scores)", "warning"))
        owners.setdefault(clip.clip_id, split)
        try:
            data, rate = read_audio(clip.path)
        except AudioError as error:
            problems.append(Problem(str(clip.path), None, f"{error.reason} {source}",
                                    "get a valid copy of the file, or remove its row"))
            continue
        rates[rate] += 1
        channels[data.shape[1]] += 1
        if is_silent(torch.from_numpy(data)):
            silent += 1
            problems.append(Problem(str(clip.path), None, f"silent (RMS below -80 dBFS) {source}",
                                    "check the recording; it is kept but carries no sound", "warning"))
    if audio_dir.is_dir():
        listed = {clip.path.name for clip in clips}
        extra = [p for p in audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.name not in listed]
        if extra:
            problems.append(Problem(str(audio_dir), None,
                                    f"{len(extra)} audio file(s) not listed in {csv_path.name} (e.g. {extra[0].name})",
                                    "they are ignored; remove them or add rows", "warning"))
    if rates:
        summary = ", ".join(f"{r} Hz x {n}" for r, n in sorted(rates.items()))
        chans = ", ".join(f"{c} channel(s) x {n}" for c, n in sorted(channels.items()))
        problems.append(Problem(str(audio_dir), None,
                                f"{split}: {len(clips)} clips, sample rates {summary}; {chans}; {silent} silent",
                                "audio is downmixed to mono and resampled when loaded", "info"))
    return problems


# ----------------------------------------------------------------------------- log-mel cache
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class LogMelCache:
    """Whole-clip log-mels (frames, n_mels), computed once per audio file and kept on disk.

    Entries live in ``cache_dir/logmel-<hash of settings and sample rate>/``, so changing the
    front end starts a fresh folder; each file is named by a hash of the audio file's absolute
    path, size and mtime, so an edited file is recomputed. Writes are atomic (tmp + os.replace).
    The most recently used entries are also kept in memory, up to ``memory_bytes`` (0: none), so a
    training epoch over a small data set reads each file once; `get` returns the kept tensor itself,
    which callers must not modify in place (the datasets crop and `collate` copies).
    """

    VERSION = 1  # bump when the stored format changes
    DEFAULT_MEMORY_BYTES = 512 * 2**20  # holds all 3,950 clips of the tiny profile's AudioCaps-like set (483 MiB)

    def __init__(
        self, cache_dir: str | Path, logmel: nn.Module, sample_rate: int, settings: dict,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        if memory_bytes < 0:
            raise ValueError(f"memory_bytes must be 0 (no in-memory copies) or positive, got {memory_bytes}")
        self.memory_bytes = int(memory_bytes)
        self._memory: OrderedDict[Path, torch.Tensor] = OrderedDict()  # cache file -> tensor, oldest first
        self._memory_used = 0
        self.logmel = logmel
        self.sample_rate = int(sample_rate)
        self.settings = {**settings, "sample_rate": self.sample_rate, "cache_version": self.VERSION}
        try:
            text = json.dumps(self.settings, sort_keys=True)
        except TypeError as error:
            raise ValueError(f"LogMelCache settings must be JSON values, got {settings!r}") from error
        self.folder = Path(cache_dir) / f"logmel-{_digest(text)}"
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
        return self.folder / f"{_digest(f'{path}|{stat.st_size}|{stat.st_mtime_ns}')}.pt"

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
            log.warning("log-mel cache entry %s of %s is unusable (%s); recomputing it", entry, path,
                        cached if isinstance(cached, Exception) else "not a (frames, n_mels) tensor")
        value = self.compute(path)
        atomic_write_bytes(entry, _tensor_bytes(value))
        return value

    @torch.no_grad()
    def compute(self, path: str | Path) -> torch.Tensor:
        """Log-mel (frames, n_mels) of the whole file, without touching the cache."""
        wave = load_audio(path, self.sample_rate)  # (samples,)
        device = next(iter([*self.logmel.parameters(), *self.logmel.buffers()]), torch.empty(0)).device
        out = self.logmel(wave[None].to(device))  # (1, frames, n_mels)
        assert out.dim() == 3 and out.shape[0] == 1, f"LogMel must return (B, frames, n_mels), got {tuple(out.shape)}"
        return out[0].float().cpu().contiguous()


def _tensor_bytes(value: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then move tmp to ``path`` with os.replace, so ``path`` is never half-written.

    The temporary name is unique per call (``<name>.<pid>.<random>.partial``), so concurrent
    writers never share one; it is removed if ``write`` or the move fails.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see `atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


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
    """One item per caption: dict(logmel (n_frames, F), caption, clip_index, caption_index).

    Training draws a random crop, then the SpecAugment masks of ``spec_augment`` (time masks,
    time width, frequency masks, frequency width; zeros: none), from a per-item generator seeded
    by (seed, epoch, index); call :meth:`set_epoch` before each epoch (before creating DataLoader
    workers). Otherwise the crop is the deterministic centre crop and nothing is masked.
    """

    def __init__(
        self, split: Split, cache: LogMelCache, n_frames: int, train: bool, seed: int = 0,
        spec_augment: tuple[int, int, int, int] = (0, 0, 0, 0),
    ) -> None:
        self.split, self.cache, self.n_frames = split, cache, int(n_frames)
        self.train, self.seed, self.epoch = bool(train), int(seed), 0
        self.spec_augment = tuple(int(v) for v in spec_augment)  # (time_masks, time_width, freq_masks, freq_width)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.split.captions)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"caption index {index} out of range for {len(self)} captions")
        clip = int(self.split.caption_audio[index])
        whole = self.cache.get(self.split.audio_paths[clip])  # (T, F)
        if self.train:
            generator = item_generator(self.seed, self.epoch, index)
            logmel = crop_frames(whole, self.n_frames, "random", generator)
            time_masks, _, freq_masks, _ = self.spec_augment
            if time_masks or freq_masks:
                logmel = spec_augment(logmel, generator, *self.spec_augment)
        else:
            logmel = crop_frames(whole, self.n_frames, "center")
        return {"logmel": logmel, "caption": self.split.captions[index], "clip_index": clip, "caption_index": index}


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
    """Items of either dataset -> dict: ``logmel`` (B, n_frames, F), ``captions`` / ``clip_ids``
    lists, ``clip_index`` / ``caption_index`` LongTensors (B,)."""
    if not batch:
        raise ValueError("collate got an empty batch")
    keys = set(batch[0])
    unknown = keys - {"logmel", *_LIST_KEYS, *_INDEX_KEYS}
    if unknown or any(set(item) != keys for item in batch):
        raise ValueError(f"collate: items must share the keys of CaptionDataset/ClipDataset, got {sorted(keys)}")
    out: dict = {"logmel": torch.stack([item["logmel"] for item in batch])}
    for key, plural in _LIST_KEYS.items():
        if key in keys:
            out[plural] = [item[key] for item in batch]
    for key in _INDEX_KEYS:
        if key in keys:
            out[key] = torch.tensor([item[key] for item in batch], dtype=torch.long)
    assert out["logmel"].dim() == 3 and out["logmel"].shape[0] == len(batch)
    return out
