"""Atomic file writes: a file a reader can see is always complete.

Every result, checkpoint, cache entry and table of thadcr is written through these helpers: the
content goes to a temporary file beside the target, which then replaces it with one `os.replace`.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import torch


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


def torch_bytes(obj: Any) -> bytes:
    """What ``torch.save(obj)`` writes, as bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, atomically."""
    atomic_write_bytes(path, torch_bytes(obj))
