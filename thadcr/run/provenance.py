"""What a result was made with: the code's commit, the package versions, the machine.

Recorded in every run's metrics.json and in the reproduction's summary, so a reader can tell
whether a figure is theirs to repeat.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("thadcr", "torch", "torchaudio", "transformers", "numpy", "soundfile", "pandas", "papermill", "jupytext")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str | None:
    """The checkout's HEAD commit (None outside a git checkout)."""
    out = _git("rev-parse", "HEAD")
    return out.strip() or None if out else None


def git_changes() -> list[str] | None:
    """The tracked files that differ from HEAD (None outside a git checkout)."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else [line[3:] for line in out.splitlines() if line.strip()]


def git_dirty() -> bool | None:
    """Whether tracked files differ from HEAD, i.e. the code that ran is not exactly `git_commit()`."""
    changes = git_changes()
    return None if changes is None else bool(changes)


def code_state() -> dict:
    """Which code a run executes, read when it starts (edits made while it runs do not change what
    it imported): HEAD, whether tracked files differed from it, and which."""
    changes = git_changes()
    return {"git_commit": git_commit(), "git_dirty": None if changes is None else bool(changes),
            "git_changes": changes}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Python's version and each installed package's (None when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict[str, Any]:
    """The platform, processor architecture and number of CPUs of this machine."""
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count()}
