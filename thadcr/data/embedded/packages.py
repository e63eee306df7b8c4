"""Debian packages: download and extraction, versions and licences, and reading their audio.

:func:`fetch_packages` runs ``apt-get download`` (never install) into a cache, or takes a folder
of ``.deb`` files / extracted trees, and extracts only their audio and text (:func:`extract_deb`);
:func:`package_version` and :func:`parse_copyright` / :func:`licence_for` read what the packages
say about themselves; :func:`package_files` lists every audio file of a package (including the
entries of OpenTTD's ``opensfx.cat`` and UFO:AI's ``0snd.pk3``) with a reader for its samples.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import os
import re
import shutil
import struct
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from thadcr.errors import ThadcrError
from thadcr.files import AUDIO_SUFFIXES

# Package -> the folder (or container file) inside its tree that holds the audio.
PACKAGES = {
    "qabcs-data": "usr/share/qabcs/abcs/all/noises",
    "openttd-opensfx": "usr/share/games/openttd/baseset/opensfx/opensfx.cat",
    "scratch": "usr/share/scratch/Media/Sounds",
    "tuxpaint-stamps-default": "usr/share/tuxpaint/stamps",
    "ufoai-sound": "usr/share/games/ufoai/base/0snd.pk3",
}

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
# Debian packages: download, extract, versions, licences
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
            extract_deb(deb, tree, keep=lambda name, p=package: keep_member(p, name))
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
    result = run_command([apt, "download", *packages], dest)
    if result.returncode != 0 and "Unable to locate package" in result.stderr:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            run_command([apt, "update"], dest)
            result = run_command([apt, "download", *packages], dest)
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


def run_command(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command`` in ``cwd``, capturing its output as text (apt_download's one way to run apt-get)."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def keep_member(package: str, name: str) -> bool:
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
# Reading the packages' audio
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

