"""Files: atomic writes, content digests, and what torch raises on a file it cannot read.

Every result, checkpoint, cache entry and table of thadcr is written through these helpers: the
content goes to a temporary file beside the target, which then replaces it with one `os.replace`.
Every hash thadcr takes (cache keys, build keys, checkpoint and manifest checksums) is `sha256`
or `sha256_file`. The module imports torch only inside the helpers that need it, so that the
torch-free modules (`thadcr.config`) can use it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import uuid
from pathlib import Path
from typing import Any, Callable

# The audio files thadcr reads (data sets, `thadcr search --audio-dir`, the embedded builder's
# sources), by suffix in any case: what soundfile decodes.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# What ``torch.load`` raises on a file that is not one ``torch.save`` wrote, or a damaged one
# (README.md: UnpicklingError; an empty file: EOFError; another zip archive: RuntimeError).
TORCH_LOAD_ERRORS = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then move tmp to ``path`` with os.replace, so ``path`` is never half-written.

    The temporary name is unique per call (``<name>.<pid>.<random>.partial``), so concurrent
    writers never share one; it is removed if ``write`` or the move fails.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see `atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON (values JSON cannot hold are written as strings), atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())


def write_if_changed(path: str | Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically unless the file already holds exactly these bytes (then
    it is left alone, its time stamp too); True when it was written."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def torch_bytes(obj: Any) -> bytes:
    """What ``torch.save(obj)`` writes, as bytes."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, atomically."""
    atomic_write_bytes(path, torch_bytes(obj))


def sha256(*parts: str | bytes, length: int | None = None) -> str:
    """The SHA-256 of ``parts`` one after the other (text as UTF-8), as hex; its first ``length``
    characters when given (file names and cache keys take 20)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:length]


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's content, as hex, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
