"""The log-mel cache: whole-clip log-mels computed once per audio file, kept on disk and, for the
most recently used, in memory (:class:`LogMelCache`)."""

from __future__ import annotations

import json
import logging
import pickle
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from thadcr.data.audio_io import AudioError, load_audio, show_path
from thadcr import numerics
from thadcr.files import atomic_write_bytes, sha256, torch_bytes

log = logging.getLogger(__name__)


class LogMelCache:
    """Whole-clip log-mels (frames, n_mels), computed once per audio file and kept on disk.

    ``logmel`` is the front end (e.g. :class:`thadcr.model.audio.LogMel`): a module with a
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

