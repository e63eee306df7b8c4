"""The embedded data set: real recordings from Debian packages, mixed into captioned scenes.

AudioCaps and Clotho (paper section 3.1) cannot be downloaded where this project is built, so
``thadcr data build`` makes a small stand-in from real recordings that Debian packages ship:

1. :func:`fetch_packages` runs ``apt-get download`` (never install) into a cache, or takes a
   folder of ``.deb`` files / extracted trees, and extracts only their audio and text.
2. :func:`inventory` matches every audio file against the curated table
   ``embedded_sources.csv`` (kept: an event or background class; dropped: a reason such as
   jingle, interface beep, music loop); :func:`prepare_audio` resamples, trims,
   loudness-normalises and drops silent recordings.
3. :func:`assign_splits` keeps source recordings disjoint between development / validation /
   evaluation, stratified by class, from the seed.
4. :func:`plan_scene` places 1-3 events in time over a background; :func:`render_scene` mixes
   them; :func:`scene_captions` writes 5 distinct captions from the timeline with ordering and
   overlap words ("then", "while", "followed by", "in the distance", "... in the background").
5. :func:`build` writes the flavours ``audiocaps``, ``clotho`` and ``labels`` in the Clotho v2
   layout with a README (sources, licences) and ``manifest.json`` (sha256 of every file).

Choices are listed in ``docs/decisions/data.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import gzip
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from thadcr import numerics, portable
from thadcr.datasets import CLOTHO_FOLDERS
from thadcr.errors import ThadcrError
from thadcr.files import AUDIO_SUFFIXES, atomic_write, sha256, sha256_file

# Package -> the folder (or container file) inside its tree that holds the audio.
PACKAGES = {
    "qabcs-data": "usr/share/qabcs/abcs/all/noises",
    "openttd-opensfx": "usr/share/games/openttd/baseset/opensfx/opensfx.cat",
    "scratch": "usr/share/scratch/Media/Sounds",
    "tuxpaint-stamps-default": "usr/share/tuxpaint/stamps",
    "ufoai-sound": "usr/share/games/ufoai/base/0snd.pk3",
}
FLAVOURS = ("audiocaps", "clotho", "labels")
SPLITS = tuple(CLOTHO_FOLDERS.values())  # development, validation, evaluation: the Clotho folders of train, val, test
DEFAULT_SIZES = {"audiocaps": (3600, 400, 2000), "clotho": (1200, 400, 2000)}  # (train, val, test) clips: val 2, test 10 folds of 200
N_CAPTIONS = 5
TABLE_DIR = Path(__file__).parent
SOURCES_TABLE = TABLE_DIR / "embedded_sources.csv"
CLASSES_TABLE = TABLE_DIR / "embedded_classes.csv"

TARGET_DB = -20.0  # active RMS level every source is normalised to (dBFS)
SILENT_DB = -60.0  # active RMS below this (or all zeros) = silent, dropped
TRIM_DB = 40.0  # leading/trailing frames this far below the loudest frame are trimmed
MAX_SOURCE_SECONDS = 20.0  # longer recordings (ambiences) are cut to this
PEAK = 0.95  # scenes are scaled down when their peak exceeds this

NO_APT = (
    "apt-get was not found, so the Debian packages {packages} cannot be downloaded. "
    "Either run `thadcr data build` on a Debian/Ubuntu machine with apt, or download the .deb "
    "files yourself (https://packages.debian.org/bookworm/all/<package>/download) into one folder "
    "and pass it with `--packages DIR` (a folder of already extracted trees <DIR>/<package>/usr/... "
    "works too)."
)


class EmbeddedDataError(ThadcrError, RuntimeError):
    """The embedded data set cannot be built; the message says what is wrong and what to do."""


# ----------------------------------------------------------------------------------------------
# 1. Debian packages: download, extract, versions, licences
# ----------------------------------------------------------------------------------------------


def fetch_packages(packages_dir: str | Path, progress: bool = True) -> dict[str, Path]:
    """Extracted package trees ``{package: <packages_dir>/<package>}``, downloading what is missing.

    A package counts as present when ``<packages_dir>/<package>/usr`` exists (an extracted tree)
    or a ``<package>_*.deb`` lies in ``packages_dir``; missing ones are fetched with
    ``apt-get download``. Extraction keeps only audio and text and is atomic (a ``.partial``
    folder renamed at the end), so an interrupted run is redone, never half-used.
    """
    packages_dir = Path(packages_dir)
    packages_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PACKAGES if not _is_tree(packages_dir / p) and _find_deb(packages_dir, p) is None]
    if missing:
        apt_download(missing, packages_dir)
    trees = {}
    for package in tqdm(PACKAGES, desc="packages", disable=not progress):
        tree = packages_dir / package
        if not _is_tree(tree):
            deb = _find_deb(packages_dir, package)
            if deb is None:
                raise EmbeddedDataError(f"{packages_dir}: no {package}_*.deb after apt-get download; pass --packages DIR")
            extract_deb(deb, tree, keep=lambda name, p=package: _keep_member(p, name))
        trees[package] = tree
    return trees


def _is_tree(path: Path) -> bool:
    return (path / "usr").is_dir()


def _find_deb(folder: Path, package: str) -> Path | None:
    debs = sorted(folder.glob(f"{package}_*.deb"))
    return debs[-1] if debs else None


def apt_download(packages: list[str], dest: Path) -> None:
    """``apt-get download`` the packages into ``dest``; ``apt-get update`` once if lists are missing.

    Raises EmbeddedDataError naming what to install or how to use ``--packages`` when apt-get
    is absent, lists are missing and we are not root, or the download fails.
    """
    apt = shutil.which("apt-get")
    if apt is None:
        raise EmbeddedDataError(NO_APT.format(packages=", ".join(packages)))
    result = _run([apt, "download", *packages], dest)
    if result.returncode != 0 and "Unable to locate package" in result.stderr:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            _run([apt, "update"], dest)
            result = _run([apt, "download", *packages], dest)
        else:
            raise EmbeddedDataError(
                f"apt-get download {' '.join(packages)} failed: the package lists are missing. "
                "Run `sudo apt-get update` once, or pass --packages DIR with the .deb files."
            )
    if result.returncode != 0:
        raise EmbeddedDataError(
            f"apt-get download {' '.join(packages)} failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}. Pass --packages DIR with the .deb files instead."
        )


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def _keep_member(package: str, name: str) -> bool:
    """Whether a file of the package's data archive is extracted: its audio, text and licence."""
    doc = f"usr/share/doc/{package}/"
    if name in (doc + "copyright", doc + "changelog.Debian.gz"):
        return True
    root = PACKAGES[package]
    if name == root:  # container files (opensfx.cat, 0snd.pk3)
        return True
    if not name.startswith(root + "/") or "_desc" in name:  # Tux Paint: *_desc* are spoken descriptions
        return False
    return name.lower().endswith(AUDIO_SUFFIXES + (".txt",))


def extract_deb(deb: str | Path, dest: str | Path, keep: Callable[[str], bool]) -> int:
    """Extract the regular files of a ``.deb`` whose path passes ``keep`` into ``dest``; returns the count.

    The .deb is read in Python (an ``ar`` archive whose ``data.tar.{xz,gz,bz2}`` member is
    streamed with tarfile); ``data.tar.zst`` goes through ``dpkg-deb --fsys-tarfile``.
    """
    deb, dest = Path(deb), Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with open(deb, "rb") as handle:
        name, offset = _ar_data_member(handle, deb)
        if name.endswith(".zst"):
            if shutil.which("dpkg-deb") is None:
                raise EmbeddedDataError(f"{deb}: data.tar.zst needs dpkg-deb; install dpkg or pass an extracted tree")
            process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            count = _extract_tar(tarfile.open(fileobj=process.stdout, mode="r|"), partial, keep, deb)
            if process.wait() != 0:
                raise EmbeddedDataError(f"{deb}: dpkg-deb --fsys-tarfile failed; download the package again")
        else:
            handle.seek(offset)
            count = _extract_tar(tarfile.open(fileobj=handle, mode="r|*"), partial, keep, deb)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    return count


def _ar_data_member(handle, deb: Path) -> tuple[str, int]:
    """Name and byte offset of the ``data.tar.*`` member of an ``ar`` archive (a .deb)."""
    if handle.read(8) != b"!<arch>\n":
        raise EmbeddedDataError(f"{deb}: not a Debian package (no ar header); download it again")
    while True:
        header = handle.read(60)
        if len(header) < 60:
            raise EmbeddedDataError(f"{deb}: no data.tar member; the file is truncated, download it again")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        if name.startswith("data.tar"):
            return name, handle.tell()
        handle.seek(size + (size & 1), io.SEEK_CUR)


def _extract_tar(archive: tarfile.TarFile, dest: Path, keep: Callable[[str], bool], deb: Path) -> int:
    count = 0
    with archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if not member.isfile() or not keep(name):
                continue
            if name.startswith("/") or ".." in Path(name).parts:
                raise EmbeddedDataError(f"{deb}: unsafe path {member.name!r} in the archive; do not use this file")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
    return count


def package_version(tree: Path, package: str) -> str:
    """The Debian version from ``usr/share/doc/<package>/changelog.Debian.gz`` ("unknown" if absent)."""
    changelog = tree / f"usr/share/doc/{package}/changelog.Debian.gz"
    if not changelog.is_file():
        return "unknown"
    with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as handle:
        match = re.search(r"\(([^)]+)\)", handle.readline())
    return match.group(1) if match else "unknown"


def parse_copyright(text: str) -> list[tuple[list[str], str, str]]:
    """The ``Files`` stanzas of a machine-readable Debian copyright file: (patterns, licence, copyright)."""
    stanzas = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if "Files" in fields and "License" in fields:
            licence = fields["License"].splitlines()[0].strip()
            holders = "; ".join(h.strip() for h in fields.get("Copyright", "").splitlines() if h.strip())
            stanzas.append((fields["Files"].split(), licence, holders))
    return stanzas


def licence_for(stanzas: list[tuple[list[str], str, str]], installed_path: str) -> tuple[str, str]:
    """(licence, copyright holders) of the last stanza whose pattern matches the path (DEP-5 rule).

    Debian patterns are paths in the source tree; they are matched against the end of the
    installed path (``Media/*`` matches ``usr/share/scratch/Media/Sounds/...``).
    """
    found = ("unknown", "")
    for patterns, licence, holders in stanzas:
        if any(p == "*" or fnmatch.fnmatch(installed_path, p) or fnmatch.fnmatch(installed_path, "*/" + p) for p in patterns):
            found = (licence, holders)
    return found


# ----------------------------------------------------------------------------------------------
# 2. Reading the packages' audio
# ----------------------------------------------------------------------------------------------


class SourceFile(NamedTuple):
    """One audio file (or container entry) of a package: its path below the package root."""

    path: str
    text: str  # the human-written label the package gives it
    read: Callable[[], tuple[np.ndarray, int]]  # -> mono float32 (samples,), sample rate
    installed_path: str  # path used to look up the licence
    credit: str  # per-file credit/licence text shipped with the file ("" if none)


def read_opensfx_cat(path: str | Path) -> list[tuple[str, np.ndarray, int]]:
    """Entries of an OpenTTD sound container (``opensfx.cat``): (title text, samples, rate).

    Format (investigated from the file): a table of little-endian uint32 pairs (offset, size),
    the first offset with bit 31 set and ``offset & 0x7fffffff = 8 * entries``; each entry is a
    length byte, that many bytes of NUL-terminated text (the title, authors and licence), then
    a RIFF/WAVE file (PCM, 8 or 16 bit) whose chunk sizes may overrun the entry: they are clamped.
    An entry without RIFF data (an "Unused" placeholder) gives an empty array.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise EmbeddedDataError(f"{path}: too short for an OpenTTD sound container; extract the package again")
    first, _ = struct.unpack_from("<II", data, 0)
    count = (first & 0x7FFFFFFF) // 8
    entries = []
    for index in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * index)
        offset &= 0x7FFFFFFF
        if offset + size > len(data) or size < 1:
            raise EmbeddedDataError(f"{path}: entry {index} points outside the file; extract the package again")
        name_length = data[offset]
        text = data[offset + 1 : offset + 1 + name_length].split(b"\0")[0].decode("utf-8", "replace")
        samples, rate = _parse_riff(data[offset + 1 + name_length : offset + size], f"{path} entry {index}")
        entries.append((text, samples, rate))
    return entries


def _parse_riff(blob: bytes, where: str) -> tuple[np.ndarray, int]:
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        return np.zeros(0, np.float32), 44100
    position, fmt, samples = 12, None, None
    while position + 8 <= len(blob):
        chunk, size = blob[position : position + 4], struct.unpack_from("<I", blob, position + 4)[0]
        body = blob[position + 8 : position + 8 + size]  # clamped to what is there
        if chunk == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", body, 0)  # tag, channels, rate, byte rate, align, bits
        elif chunk == b"data":
            samples = body
        position += 8 + size + (size & 1)
    if fmt is None or samples is None or fmt[0] != 1 or fmt[5] not in (8, 16):
        raise EmbeddedDataError(f"{where}: not 8/16-bit PCM WAVE data; the container is damaged or of a newer format")
    _, channels, rate, _, align, bits = fmt
    samples = samples[: len(samples) // align * align]
    if bits == 16:
        wave = np.frombuffer(samples, "<i2").astype(np.float32) / 32768.0
    else:
        wave = (np.frombuffer(samples, np.uint8).astype(np.float32) - 128.0) / 128.0
    return wave.reshape(-1, channels).mean(axis=1), rate


def _read_sound(source, where: str) -> tuple[np.ndarray, int]:
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as error:
        raise EmbeddedDataError(f"{where}: not readable as audio ({error}); extract the package again") from error
    return data.mean(axis=1), int(rate)


def package_files(package: str, tree: Path) -> list[SourceFile]:
    """Every audio file of the package's audio root (or container), sorted by path."""
    root = tree / PACKAGES[package]
    if package == "openttd-opensfx":
        if not root.is_file():
            return []
        files = []
        for index, (text, wave, rate) in enumerate(read_opensfx_cat(root)):
            title = re.match(r'"([^"]*)"', text)
            files.append(SourceFile(str(index), title.group(1) if title else text, lambda w=wave, r=rate: (w, r),
                                    f"{PACKAGES[package]}#{index}", text))
        return files
    if package == "ufoai-sound":
        if not root.is_file():
            return []
        with zipfile.ZipFile(root) as archive:
            names = sorted(n for n in archive.namelist() if n.lower().endswith(AUDIO_SUFFIXES))

        def read_member(name: str) -> tuple[np.ndarray, int]:
            with zipfile.ZipFile(root) as archive:
                return _read_sound(io.BytesIO(archive.read(name)), f"{root}:{name}")

        base = str(Path(PACKAGES[package]).parent)
        return [SourceFile(n, _path_label(n.removeprefix("sound/")), lambda n=n: read_member(n), f"{base}/{n}", "")
                for n in names]
    if not root.is_dir():
        return []
    files = []
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES):
        relative = file.relative_to(root).as_posix()
        files.append(SourceFile(relative, _label_text(package, file, relative),
                                lambda f=file: _read_sound(str(f), str(f)), f"{PACKAGES[package]}/{relative}", ""))
    return files


def _label_text(package: str, file: Path, relative: str) -> str:
    """The human-written text of a file: Tux Paint's ``<stamp>.txt`` first line, else its name."""
    if package == "tuxpaint-stamps-default":
        text_file = file.with_suffix(".txt")
        if text_file.is_file():
            lines = text_file.read_text(encoding="utf-8", errors="replace").splitlines()
            if lines and lines[0].strip():
                return lines[0].strip()
    return _path_label(relative)


def _path_label(relative: str) -> str:
    """``Animal/WolfHowl.wav`` -> ``Animal Wolf Howl``; ``eagle-owl.ogg`` -> ``eagle owl``."""
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", relative)
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", stem.replace("/", " ").replace("_", " ").replace("-", " "))
    return re.sub(r"\s+", " ", re.sub(r"\d+", "", words)).strip()


# ----------------------------------------------------------------------------------------------
# 3. The curated inventory
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
# 4. Audio preparation
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
# 5. Splits
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


# ----------------------------------------------------------------------------------------------
# 6. Scenes: timeline, mixing, captions
# ----------------------------------------------------------------------------------------------


@dataclass
class Event:
    """One sound event in a scene, in seconds from the clip start."""

    key: str
    cls: str
    onset: float
    duration: float
    gain_db: float
    distant: bool
    repeats: int = 1
    interval: float = 0.0  # seconds between repeats (steps, claps, drips)


@dataclass
class Scene:
    """Events sorted by onset, how each follows the previous one, and the background."""

    events: list[Event]
    relations: list[str]  # len(events) - 1 items: "sequence" (after the end) or "overlap"
    background: str | None = None  # recording key
    background_cls: str | None = None
    background_gain_db: float = 0.0
    background_offset: float = 0.0

    def signature(self) -> tuple:
        return tuple(e.cls for e in self.events), tuple(self.relations), tuple(e.distant for e in self.events), self.background_cls


def plan_scene(rng: np.random.Generator, pool: dict[str, list[str]], background_pool: dict[str, list[str]],
               lengths: dict[str, float], classes: dict[str, PhraseSet], clip_seconds: float) -> Scene:
    """A random scene timeline: 1-3 events of distinct classes over an optional background.

    Each next event either starts 0.1-0.5 s after every earlier event has ended ("sequence") or
    starts 25-60 % into the previous event ("overlap", p = 0.35). Events are cut to 80 % of the
    clip (one event) or 45 % (several); a timeline longer than 95 % of the clip is compressed
    (durations cut) to fit, then shifted by a random offset. An event is "distant" with
    p = 0.15 (-16..-12 dB and low-passed when rendered), else at -4..+2 dB; a background
    (p = 0.85) sits at -22..-12 dB.
    """
    names = sorted(pool)
    k = min(len(names), int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.30])))
    chosen = [names[i] for i in rng.choice(len(names), size=k, replace=False)]
    events, relations = [], []
    end = 0.0
    for i, cls in enumerate(chosen):
        key = pool[cls][int(rng.integers(len(pool[cls])))]
        repeats, interval = 1, 0.0
        if classes[cls].repeat > 1:
            repeats, interval = int(rng.integers(3, classes[cls].repeat + 1)), float(rng.uniform(0.35, 0.6))
        natural = (repeats - 1) * interval + lengths[key]
        duration = min(natural, clip_seconds * (0.8 if k == 1 else 0.45))
        if i == 0:
            onset = 0.0
        elif rng.random() < 0.35:
            relations.append("overlap")
            onset = events[-1].onset + float(rng.uniform(0.25, 0.6)) * events[-1].duration
        else:
            relations.append("sequence")
            onset = end + float(rng.uniform(0.1, 0.5))
        distant = bool(rng.random() < 0.15)
        gain = float(rng.uniform(-16.0, -12.0) if distant else rng.uniform(-4.0, 2.0))
        events.append(Event(key, cls, onset, duration, gain, distant, repeats, interval))
        end = max(end, onset + duration)
    scale = min(1.0, 0.95 * clip_seconds / end)
    shift = float(rng.uniform(0.0, clip_seconds - end * scale))
    for event in events:
        event.onset, event.duration = event.onset * scale + shift, event.duration * scale
    scene = Scene(events, relations)
    if background_pool and rng.random() < 0.85:
        cls = sorted(background_pool)[int(rng.integers(len(background_pool)))]
        key = background_pool[cls][int(rng.integers(len(background_pool[cls])))]
        scene.background, scene.background_cls = key, cls
        scene.background_gain_db = float(rng.uniform(-22.0, -12.0))
        scene.background_offset = float(rng.uniform(0.0, max(0.0, lengths[key] - clip_seconds)))
    return scene


def _event_wave(source: np.ndarray, event: Event, sample_rate: int) -> np.ndarray:
    """The event's samples: the recording (repeated for steps/claps), cut to its duration, faded."""
    n = max(1, int(round(event.duration * sample_rate)))
    wave = np.zeros(n, np.float32)
    for r in range(event.repeats):
        start = int(round(r * event.interval * sample_rate))
        if start >= n:
            break
        piece = source[: n - start]
        wave[start : start + len(piece)] += piece
    fade_in, fade_out = min(n, sample_rate // 200), min(n, sample_rate // 50)  # 5 ms, 20 ms
    wave[:fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)
    wave[n - fade_out :] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)
    if event.distant:
        wave = portable.lowpass_biquad(torch.from_numpy(wave), sample_rate, 1200.0).numpy()
    return wave * np.float32(10.0 ** (event.gain_db / 20.0))


def render_scene(scene: Scene, audio: dict[str, np.ndarray], sample_rate: int, clip_seconds: float) -> np.ndarray:
    """The scene mixed to a mono float32 clip of ``round(clip_seconds * sample_rate)`` samples.

    The background loops from its offset under the whole clip; events are added at their
    onsets; the mix is scaled down if its peak exceeds 0.95.
    """
    n = int(round(clip_seconds * sample_rate))
    mix = np.zeros(n, np.float32)
    if scene.background is not None:
        source = audio[scene.background]
        start = int(round(scene.background_offset * sample_rate))
        mix += source[(start + np.arange(n)) % len(source)] * np.float32(10.0 ** (scene.background_gain_db / 20.0))
    for event in scene.events:
        wave = _event_wave(audio[event.key], event, sample_rate)
        start = int(round(event.onset * sample_rate))
        piece = wave[: max(0, n - start)]
        mix[start : start + len(piece)] += piece
    peak = float(np.abs(mix).max())
    if peak > PEAK:
        mix *= np.float32(PEAK / peak)
    assert mix.shape == (n,) and mix.dtype == np.float32
    return mix


# Connectors between consecutive events: (text, form of the next mention), by chain style.
_SEQUENCE = {
    "clause": ((", then ", "clause"), (" and then ", "clause"), (", followed by ", "noun"), (" before ", "clause")),
    "noun": ((" followed by ", "noun"), (", then ", "noun"), (" and then ", "noun")),
}
_OVERLAP = {
    "clause": ((" while ", "ongoing"), (" as ", "clause")),
    "noun": ((" along with ", "noun"), (" while ", "ongoing"), (" mixed with ", "noun")),
}
_SINGLE = ("{clause}", "{ongoing}", "{noun}", "{noun} can be heard", "you can hear {noun}")
# Background attached after the events: (before, form, after); or before them (clause chains only).
_BACKGROUND_AFTER = ((", as ", "clause", " in the background"), (" with ", "noun", " in the background"),
                     (" over ", "noun", ""), (" while ", "ongoing", " in the background"))
_BACKGROUND_BEFORE = (("", "noun", " in the background as "), ("while ", "ongoing", ", "))


def _mention(phrases: PhraseSet, form: str, distant: bool, rng: np.random.Generator) -> str:
    options = getattr(phrases, form)
    return options[int(rng.integers(len(options)))] + (" in the distance" if distant else "")


def _pick(options: tuple, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def _chain(scene: Scene, classes: dict[str, PhraseSet], rng: np.random.Generator) -> tuple[str, str]:
    """The events in words, in time order, and the style used ("clause", "noun", "single")."""
    events = scene.events
    if len(events) == 1:
        event = events[0]
        if scene.background is None:
            template = _pick(_SINGLE, rng)
            form = re.search(r"\{(\w+)\}", template).group(1)
            return template.replace("{" + form + "}", _mention(classes[event.cls], form, event.distant, rng)), "single"
        form = _pick(("clause", "ongoing", "noun"), rng)
        return _mention(classes[event.cls], form, event.distant, rng), "clause" if form == "clause" else "noun"
    style = _pick(("clause", "noun", "first", "after"), rng)
    if style == "after" and (len(events) != 2 or scene.relations[0] != "sequence"):
        style = "clause"
    if style == "first" and scene.relations[0] != "sequence":
        style = "clause"
    if style == "after":  # reversed order, explicit: "B after A"
        first, second = (_mention(classes[e.cls], "clause", e.distant, rng) for e in events)
        return f"{second} after {first}", "clause"
    base = "noun" if style == "noun" else "clause"
    text = _mention(classes[events[0].cls], base, events[0].distant, rng)
    for event, relation in zip(events[1:], scene.relations):
        joiner, form = _pick((_SEQUENCE if relation == "sequence" else _OVERLAP)[base], rng)
        if style == "first" and relation == "sequence":
            joiner, form = ", then ", "clause"
        text += joiner + _mention(classes[event.cls], form, event.distant, rng)
    return ("first " + text if style == "first" else text), base


def scene_caption(scene: Scene, classes: dict[str, PhraseSet], rng: np.random.Generator) -> str:
    """One caption of the scene: every event in time order (or "B after A"), then the background."""
    text, style = _chain(scene, classes, rng)
    if scene.background_cls is not None:
        background = classes[scene.background_cls]
        if style == "clause" and rng.random() < 0.3:
            before, form, after = _pick(_BACKGROUND_BEFORE, rng)
            text = before + _mention(background, form, False, rng) + after + text
        else:
            before, form, after = _pick(_BACKGROUND_AFTER, rng)
            text = text + before + _mention(background, form, False, rng) + after
    return text[0].upper() + text[1:] + "."


def scene_captions(scene: Scene, classes: dict[str, PhraseSet], rng: np.random.Generator, n: int = N_CAPTIONS) -> list[str]:
    """``n`` distinct captions of the scene (distinct ignoring case)."""
    captions, seen = [], set()
    for _ in range(50 * n):
        caption = scene_caption(scene, classes, rng)
        if caption.lower() not in seen:
            seen.add(caption.lower())
            captions.append(caption)
            if len(captions) == n:
                return captions
    raise EmbeddedDataError(
        f"only {len(captions)} distinct captions for a scene of {[e.cls for e in scene.events]}: "
        f"add phrase variants for these classes in {CLASSES_TABLE.name}"
    )


# ----------------------------------------------------------------------------------------------
# 7. Building the flavours
# ----------------------------------------------------------------------------------------------


def build(out_dir: str | Path = "data/embedded", flavour: str = "all", packages_dir: str | Path | None = None,
          seed: int = 0, n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
          clip_seconds: float = 5.0, sample_rate: int = 32000, progress: bool = True) -> dict:
    """Build (or finish, or confirm up to date) the embedded data set; returns a summary dict.

    ``flavour``: "audiocaps" (one caption per development clip), "clotho" (5 per clip),
    "labels" (single recordings with the packages' own text) or "all". ``n_train/n_val/n_test``
    override the clip counts of the scene flavours (defaults in DEFAULT_SIZES).
    ``packages_dir`` defaults to ``<out_dir>/../packages``. Each flavour folder is skipped when
    its manifest matches the parameters; a partial build of the same parameters is finished.
    Runs in portable numerics (`thadcr.numerics`), so the clips are the same bits on any x86-64 CPU.
    """
    numerics.apply("portable")  # resampling and filtering give the same samples on every x86-64 CPU
    started = time.perf_counter()
    out_dir = Path(out_dir)
    flavours = FLAVOURS if flavour == "all" else (flavour,)
    if any(f not in FLAVOURS for f in flavours):
        raise EmbeddedDataError(f"unknown flavour {flavour!r}; use one of {', '.join(FLAVOURS + ('all',))}")
    if clip_seconds <= 0 or sample_rate <= 0:
        raise EmbeddedDataError(f"clip_seconds ({clip_seconds}) and sample_rate ({sample_rate}) must be positive")
    packages_dir = Path(packages_dir) if packages_dir is not None else out_dir.parent / "packages"
    trees = fetch_packages(packages_dir, progress)
    versions = {p: package_version(t, p) for p, t in trees.items()}
    sources = (Path(__file__), Path(portable.__file__), SOURCES_TABLE, CLASSES_TABLE)
    code = {t.name: sha256_file(t) for t in sources}  # any change rebuilds
    summary = {"out_dir": str(out_dir), "packages_dir": str(packages_dir), "packages": versions, "flavours": {}}
    params = {}
    for name in flavours:
        sizes = dict(zip(SPLITS, DEFAULT_SIZES.get(name, (0, 0, 0))))
        for split, n in zip(SPLITS, (n_train, n_val, n_test)):
            if n is not None and name != "labels":
                sizes[split] = int(n)
        params[name] = {"flavour": name, "seed": seed, "sizes": sizes, "clip_seconds": clip_seconds,
                        "sample_rate": sample_rate, "packages": versions, "code": code, "numerics": "portable"}
    todo = [f for f in flavours if not _up_to_date(out_dir / f, _params_hash(params[f]))]
    for name in flavours:
        if name not in todo:
            summary["flavours"][name] = {"status": "up to date", **_manifest_counts(out_dir / name)}
    if todo:
        classes = load_classes()
        recordings, readers, drops, missing = inventory(trees, classes)
        audio, recordings, load_drops = load_recordings(recordings, readers, sample_rate, progress)
        splits = assign_splits(recordings, seed)
        summary["inventory"] = _inventory_summary(recordings, splits, drops + load_drops, missing)
        summary["inventory"]["minutes"] = round(sum(len(a) for a in audio.values()) / sample_rate / 60.0, 1)
        for name in todo:
            summary["flavours"][name] = _build_flavour(out_dir / name, params[name], recordings, audio, splits,
                                                       classes, trees, progress)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def _params_hash(params: dict) -> str:
    return sha256(json.dumps(params, sort_keys=True))


def _up_to_date(folder: Path, params_hash: str) -> bool:
    """The folder's manifest has these parameters and every listed file exists with its size."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        content = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    if content.get("params_hash") != params_hash:
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == entry["bytes"]
               for name, entry in content.get("files", {}).items())


def _manifest_counts(folder: Path) -> dict:
    return {"clips": json.loads((folder / "manifest.json").read_text())["clips"]}


def _inventory_summary(recordings, splits, drops, missing) -> dict:
    per_split = {}
    for split in SPLITS:
        chosen = [r for r in recordings if splits[r.key] == split]
        per_split[split] = {"recordings": len(chosen),
                            "event_classes": len({r.cls for r in chosen if r.kind == "event"}),
                            "background_classes": len({r.cls for r in chosen if r.kind == "background"})}
    return {
        "recordings": len(recordings),
        "groups": len({r.group for r in recordings}),
        "event_classes": len({r.cls for r in recordings if r.kind == "event"}),
        "background_classes": len({r.cls for r in recordings if r.kind == "background"}),
        "splits": per_split,
        "dropped": dict(sorted(Counter(reason for _, reason in drops).items())),
        "missing_from_packages": missing,
    }


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    atomic_write(path, write)


def _write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    atomic_write(path, lambda tmp: sf.write(str(tmp), wave, sample_rate, subtype="PCM_16", format="WAV"))


def label_file_name(key: str) -> str:
    """The labels flavour's file name of a recording: ``scratch:Animal/Dog1.wav`` -> ``scratch_Animal_Dog1.wav``."""
    package, path = key.split(":", 1)
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{package}_{re.sub(r'[.][A-Za-z0-9]+$', '', path)}").strip("_") + ".wav"


def _plan_items(params: dict, recordings: list[Recording], audio: dict, splits: dict, classes: dict) -> list[dict]:
    """Every clip of the flavour: split, file name, captions and what to render (deterministic)."""
    name, sample_rate = params["flavour"], params["sample_rate"]
    items = []
    if name == "labels":
        for recording in sorted(recordings, key=lambda r: r.key):
            captions = [recording.text]
            original = re.search(r'Original "([^"]+)"', recording.credit)
            title = re.sub(r"\.(wav|aif|mp3|flac|ogg)$", "", original.group(1), flags=re.I) if original else ""
            if " " in title.strip():  # a title ("Corner of a sheep field in summer"), not a file name
                captions.append(title.strip())
            items.append({"split": splits[recording.key], "file_name": label_file_name(recording.key), "captions": captions,
                          "recording": recording})
        return items
    lengths = {k: len(v) / sample_rate for k, v in audio.items()}
    for split_index, split in enumerate(SPLITS):
        pool, background_pool = {}, {}
        for recording in recordings:
            if splits[recording.key] == split:
                target = pool if recording.kind == "event" else background_pool
                target.setdefault(recording.cls, []).append(recording.key)
        count = params["sizes"][split]
        if count and not pool:
            raise EmbeddedDataError(f"no event recordings in the {split} split; check the packages and the source table")
        rng = np.random.default_rng([params["seed"], FLAVOURS.index(name), split_index])
        used = set()
        for index in range(count):
            for _ in range(50):  # avoid repeating a scene's content (classes, order, distance, background)
                scene = plan_scene(rng, pool, background_pool, lengths, classes, params["clip_seconds"])
                if scene.signature() not in used:
                    break
            used.add(scene.signature())
            captions = scene_captions(scene, classes, rng)
            if name == "audiocaps" and split == "development":
                captions = captions[:1]
            items.append({"split": split, "file_name": f"{split}_{index + 1:05d}.wav", "captions": captions, "scene": scene})
    return items


def _build_flavour(folder: Path, params: dict, recordings, audio, splits, classes, trees, progress) -> dict:
    """Write one flavour folder; resumes a partial build with the same parameters."""
    params_hash = _params_hash(params)
    state = folder / ".build.json"
    resumed = state.is_file() and json.loads(state.read_text()).get("params_hash") == params_hash
    if not resumed:  # other parameters (or none): remove what an older build wrote
        for split in SPLITS:
            shutil.rmtree(folder / split, ignore_errors=True)
        (folder / "manifest.json").unlink(missing_ok=True)
    for split in SPLITS:
        (folder / split).mkdir(parents=True, exist_ok=True)
    _write_text(state, json.dumps({"params_hash": params_hash, "params": params}, indent=2))
    sample_rate, clip_seconds = params["sample_rate"], params["clip_seconds"]
    items = _plan_items(params, recordings, audio, splits, classes)
    for item in tqdm(items, desc=f"{params['flavour']} clips", disable=not progress):
        path = folder / item["split"] / item["file_name"]
        if path.is_file():  # written atomically by this very build earlier
            continue
        if "scene" in item:
            wave = render_scene(item["scene"], audio, sample_rate, clip_seconds)
        else:
            wave = audio[item["recording"].key][: int(round(clip_seconds * sample_rate))]
        _write_wav(path, wave, sample_rate)
    by_key = {r.key: r for r in recordings}
    header = ["file_name"] + [f"caption_{i}" for i in range(1, N_CAPTIONS + 1)]
    for split in SPLITS:
        chosen = [i for i in items if i["split"] == split]
        rows = [[i["file_name"]] + i["captions"] + [""] * (N_CAPTIONS - len(i["captions"])) for i in chosen]
        _write_csv(folder / f"clotho_captions_{split}.csv", header, rows)
        if params["flavour"] != "labels":
            _write_csv(folder / f"scenes_{split}.csv", ["file_name", "timeline", "sources", "licences"],
                       [_scene_row(i, by_key) for i in chosen])
    _write_csv(folder / "sources.csv",
               ["key", "package", "path", "class", "kind", "group", "split", "text", "licence", "credit"],
               [[r.key, r.package, r.path, r.cls, r.kind, r.group, splits[r.key], r.text, r.licence, r.credit]
                for r in recordings])
    licences = folder / "LICENSES"
    licences.mkdir(exist_ok=True)
    for package, tree in trees.items():
        copyright_file = tree / f"usr/share/doc/{package}/copyright"
        if copyright_file.is_file():
            atomic_write(licences / f"{package}.copyright", lambda tmp, c=copyright_file: shutil.copyfile(c, tmp))
    clips = {s: sum(i["split"] == s for i in items) for s in SPLITS}
    captions = {s: sum(len(i["captions"]) for i in items if i["split"] == s) for s in SPLITS}
    _write_text(folder / "README.md", _readme(params, recordings, splits, clips, captions, trees))
    files = {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")
             and p.name != "manifest.json" and not p.name.endswith(".partial")}
    manifest = {"params_hash": params_hash, "params": params, "clips": clips, "captions": captions, "files": files}
    _write_text(folder / "manifest.json", json.dumps(manifest, indent=1))
    state.unlink()
    return {"status": "resumed" if resumed else "built", "clips": clips, "captions": captions}


def _scene_row(item: dict, by_key: dict[str, Recording]) -> list[str]:
    scene = item["scene"]
    timeline = {
        "events": [{"class": e.cls, "source": e.key, "onset": round(e.onset, 3), "duration": round(e.duration, 3),
                    "gain_db": round(e.gain_db, 2), "distant": e.distant, "repeats": e.repeats} for e in scene.events],
        "relations": scene.relations,
        "background": None if scene.background is None else {
            "class": scene.background_cls, "source": scene.background, "gain_db": round(scene.background_gain_db, 2)},
    }
    keys = [e.key for e in scene.events] + ([scene.background] if scene.background else [])
    return [item["file_name"], json.dumps(timeline), ";".join(keys), ";".join(sorted({by_key[k].licence for k in keys}))]


def _readme(params: dict, recordings, splits, clips, captions, trees) -> str:
    name = params["flavour"]
    what = {
        "audiocaps": "AudioCaps-like: development clips have ONE caption (caption_1; caption_2..5 are empty "
                     "cells, which the reader treats as absent); validation and evaluation clips have five.",
        "clotho": "Clotho-like: every clip has five distinct captions.",
        "labels": "Single real recordings with the text their package gives them (Tux Paint phrases, "
                  "OpenSFX titles and original recording names, file names). caption_1 is that text, "
                  "caption_2 the original recording's title where OpenSFX names one; empty cells are absent. "
                  "A sanity and zero-shot check set; its splits are the same source splits as the scenes'.",
    }[name]
    lines = [
        f"# thadcr embedded data set: `{name}`",
        "",
        "Made by `thadcr data build` from real recordings shipped in Debian packages (see",
        "`docs/decisions/data.md` of the thadcr repository for how and why).",
        "",
        what,
        "",
        "Layout (Clotho v2): `development/`, `validation/`, `evaluation/` hold 16-bit PCM mono WAV at "
        f"{params['sample_rate']} Hz"
        + (f", {params['clip_seconds']} s per scene" if name != "labels" else f", at most {params['clip_seconds']} s") + ";",
        "`clotho_captions_<split>.csv` has the header `file_name,caption_1,...,caption_5`."
        + (" `scenes_<split>.csv` gives each scene's timeline (classes, sources, onsets, levels)." if name != "labels" else ""),
        "`sources.csv` lists every source recording with its class, split, label text, licence and credit;",
        "`LICENSES/` holds each package's Debian copyright file; `manifest.json` the sha256 of every file.",
        "",
        "| split | clips | captions |",
        "|---|---|---|",
        *[f"| {s} | {clips[s]} | {captions[s]} |" for s in SPLITS],
        "",
        "## Sources, licences and attribution",
        "",
        "Source recordings never cross splits (split by source recording, stratified by class). The audio",
        "is derived from the packages below and keeps their licences (GPL and Creative Commons",
        "attribution / share-alike terms): redistribute it only with this README, `sources.csv` and `LICENSES/`.",
        "",
        "| package | version | recordings used | licences (from usr/share/doc/<package>/copyright) |",
        "|---|---|---|---|",
    ]
    for package in trees:
        used = [r for r in recordings if r.package == package]
        found = sorted({r.licence.split(";")[0] for r in used})
        lines.append(f"| {package} | {params['packages'][package]} | {len(used)} | {', '.join(found) or '-'} |")
    lines += [
        "",
        "Copyright holders per package (Debian copyright files, `Files: *` stanzas and the ones covering",
        "the audio); OpenSFX credits each sound's original author in `sources.csv` (column `credit`).",
        "",
    ]
    for package, tree in trees.items():
        holders = sorted({r.credit for r in recordings if r.package == package and r.credit and package != "openttd-opensfx"})
        if package == "openttd-opensfx":
            holders = ["Janis Lukss, Wuzzy, Richard Wheeler and the freesound authors named per sound in sources.csv"]
        lines.append(f"- **{package}**: {'; '.join(holders)[:600] or 'see LICENSES/' + package + '.copyright'}")
    lines += ["", "## Build parameters", "", "```json", json.dumps(params, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)
