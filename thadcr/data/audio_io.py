"""Reading audio files for training and evaluation: mono, resampled, padded or cropped.

The pipeline of the paper's ref [8] (which the paper follows, section 3.1): mono audio at
32 kHz, padded with zeros or cropped to a fixed length (10 s for HTS-AT), random crop in
training and a deterministic crop at test. Files are read with soundfile (never
``torchaudio.load``, which needs FFmpeg); bad files raise :class:`AudioError` naming the file
and saying what to do. See ``docs/decisions/datasets.md`` for the choices made here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from thadcr import portable
from thadcr.errors import ThadcrError

CROP_MODES = ("random", "start", "center")
SILENCE_DB = -80.0  # RMS level (dB re full scale 1.0) below which a clip counts as silent


def show_path(path: str | Path) -> str:
    """A path as messages print it: ``repr(str(path))``, so that leading, trailing and double
    spaces and control characters of published file names are visible."""
    return repr(str(path))


class AudioError(ThadcrError, ValueError):
    """An audio file cannot be used; the message names the file and says what to do.

    ``path`` and ``reason`` are kept as attributes so that callers (the dataset check, the
    missing-file report) can print them separately.
    """

    path: str = ""
    reason: str = ""

    @classmethod
    def at(cls, path: str | Path, reason: str, fix: str) -> "AudioError":
        error = cls(f"{show_path(path)}: {reason}. {fix}")
        error.path, error.reason = str(path), reason
        return error


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The samples of ``path`` as float32 (frames, channels) in [-1, 1] and the file's rate.

    Raises AudioError for a missing, empty, corrupt or non-audio file, zero-length audio and
    NaN/Inf samples. Silence is not an error here (see :func:`is_silent`).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError.at(path, "file not found", "Download it, or remove it from the data set's CSV")
    if path.stat().st_size == 0:
        raise AudioError.at(path, "empty file (0 bytes)", "Download it again (the copy is truncated)")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError.at(
            path,
            f"not readable as audio by soundfile ({error})",
            "Replace it with a valid WAV/FLAC/OGG/MP3 file (it is corrupt or not an audio file)",
        ) from error
    # data: (frames, channels)
    if data.shape[0] == 0:
        raise AudioError.at(path, "zero-length audio (0 samples)", "Replace it with a non-empty recording")
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise AudioError.at(
            path, f"{bad} NaN/Inf sample(s)", "Re-export or replace the file; NaN/Inf would poison the log-mel"
        )
    return data, int(rate)


def load_audio(path: str | Path, sample_rate: int = 32000) -> torch.Tensor:
    """Mono float32 waveform (samples,) of ``path`` at ``sample_rate`` Hz.

    Channels are averaged (downmix); any other file rate is converted with
    `thadcr.portable.resample` (windowed sinc, torchaudio's method), giving ceil(n * sample_rate / rate)
    samples.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    data, rate = read_audio(path)
    wave = torch.from_numpy(data.mean(axis=1, dtype=np.float32))  # (frames,)
    if rate != sample_rate:
        wave = portable.resample(wave, rate, sample_rate)
    assert wave.dim() == 1 and wave.dtype == torch.float32
    return wave


def rms_db(wave: torch.Tensor) -> float:
    """RMS level of a waveform in dB relative to full scale 1.0 (-inf for digital silence)."""
    if wave.numel() == 0:
        raise ValueError("rms_db of an empty waveform")
    rms = math.sqrt(float(wave.detach().double().pow(2).mean()))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def is_silent(wave: torch.Tensor, threshold_db: float = SILENCE_DB) -> bool:
    """True when the clip is all zeros or its RMS level is below ``threshold_db`` dBFS.

    Silent clips are kept by the loaders (they are valid audio) and counted by
    ``thadcr.data.check.check_dataset``.
    """
    return rms_db(wave) < threshold_db


def check_crop_mode(mode: str) -> None:
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode {mode!r} is not one of {', '.join(map(repr, CROP_MODES))}")


def crop_offset(length: int, n: int, mode: str, generator: torch.Generator | None = None) -> int:
    """Start index of a window of ``n`` out of ``length`` items (``length >= n``).

    "random": uniform over all ``length - n + 1`` starts (training); "start": 0;
    "center": ``(length - n) // 2`` (the deterministic evaluation crop).
    """
    check_crop_mode(mode)
    if length < n:
        raise ValueError(f"cannot take {n} items out of {length}")
    if mode == "start":
        return 0
    if mode == "center":
        return (length - n) // 2
    return int(torch.randint(0, length - n + 1, (1,), generator=generator))


def fit_length(wave: torch.Tensor, n_samples: int, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``wave`` (samples,) padded with zeros at the end or cropped to (n_samples,).

    Cropping follows ``mode`` (see :func:`crop_offset`); padding is always at the end, as in
    the zero-padding of ref [8].
    """
    if wave.dim() != 1:
        raise ValueError(f"fit_length expects a mono waveform (samples,), got shape {tuple(wave.shape)}")
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    check_crop_mode(mode)
    length = wave.shape[0]
    if length < n_samples:
        out = torch.nn.functional.pad(wave, (0, n_samples - length))
    else:
        start = crop_offset(length, n_samples, mode, generator)
        out = wave[start : start + n_samples]
    assert out.shape == (n_samples,)
    return out
