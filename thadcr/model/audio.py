"""The audio front end and the checkpoint loaders of the audio encoders (paper Sec. 2.1).

- `LogMel`: waveform (B, samples) at 32 kHz -> log-mel (B, frames, 64), the HTS-AT/PANNs recipe;
  both encoders read its output.
- `load_htsat_checkpoint` / `load_resnet38_checkpoint`: the official checkpoints of
  `thadcr.model.htsat.HTSAT` and `thadcr.model.resnet38.ResNet38`, whose parameter names equal
  the encoders' own, so they are read without renaming (only a prefix is stripped).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from thadcr import numerics, portable
from thadcr.errors import ThadcrError
from thadcr.model.htsat import HTSAT
from thadcr.model.resnet38 import ResNet38

__all__ = [
    "LogMel",
    "LoadReport",
    "CheckpointError",
    "load_htsat_checkpoint",
    "load_resnet38_checkpoint",
]


# --------------------------------------------------------------------------------------------
# Front end
# --------------------------------------------------------------------------------------------


class LogMel(nn.Module):
    """Waveform -> log-mel spectrogram, numerically the HTS-AT / PANNs front end.

    Periodic Hann window of ``n_fft``, hop ``hop``, centred frames with reflect padding, power 2,
    Slaney-scale mel filters with Slaney area normalisation, then ``10 log10(max(x, 1e-10))``
    (reference 1, no top_db). 10 s at 32 kHz gives 1 + 320000 // 320 = 1001 frames. In portable
    numerics the DFT is two matrix products and log10 avoids MKL's vector math (`thadcr.portable`), so the
    bits are the same on Intel and AMD CPUs; otherwise torch's FFT.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        hop: int = 320,
        n_mels: int = 64,
        fmin: float = 50.0,
        fmax: float = 14000.0,
    ) -> None:
        super().__init__()
        self.sample_rate, self.n_mels, self.hop = sample_rate, n_mels, hop
        # Everything the output depends on: the log-mel cache is keyed by it (thadcr.data.logmel.LogMelCache).
        self.n_fft, self.exact = n_fft, numerics.is_portable()
        self.settings = {"front_end": "htsat-logmel", "sample_rate": sample_rate, "n_fft": n_fft, "hop": hop,
                         "n_mels": n_mels, "fmin": fmin, "fmax": fmax, "dft": "matmul" if self.exact else "fft"}
        self.register_buffer("window", portable.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", portable.mel_filters(n_fft // 2 + 1, n_mels, sample_rate, fmin, fmax), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, samples) -> log-mel (B, frames, n_mels) in dB, frames = 1 + samples // hop."""
        if wave.dim() != 2:
            raise ValueError(f"LogMel expects a waveform batch (B, samples), got shape {tuple(wave.shape)}")
        if self.exact:  # portable numerics: matrix products, ATen's kernels
            frames = portable.frames(wave, self.n_fft, self.hop) * self.window
            power = portable.power_spectrum(frames)  # (B, frames, n_fft/2 + 1)
            mel = (power @ self.filters).clamp_min(1e-10)  # (B, frames, n_mels)
            return 10.0 * portable.log10(mel)
        spectrum = torch.stft(wave, self.n_fft, self.hop, window=self.window,
                              center=True, pad_mode="reflect", return_complex=True)
        power = spectrum.abs().pow(2).transpose(1, 2)  # (B, frames, n_fft/2 + 1)
        return 10.0 * torch.log10((power @ self.filters).clamp_min(1e-10))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


class CheckpointError(ThadcrError, ValueError):
    """A checkpoint does not fit the encoder; the message names the file, key and what to do."""


@dataclass
class LoadReport:
    """What a checkpoint loader did: keys copied into the encoder and keys it skipped."""

    path: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


HTSAT_IGNORED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "tscam_conv.", "head.")
HTSAT_IGNORED_SUFFIXES = (".attn_mask", ".relative_position_index")
RESNET38_IGNORED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "fc_audioset.")


def _read_state(path: str | Path, container: str, prefix: str) -> dict[str, torch.Tensor]:
    """torch.load (weights only) -> flat state dict; `container` key and `prefix` are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found; download it or fix audio_checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line), "")
        raise CheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True): it holds more than tensors "
            f"({reason.split(' was not')[0]}). If you trust the file, "
            f"re-save its weights once: torch.save(torch.load(p, weights_only=False)['{container}'], 'weights.pt') "
            "and point audio_checkpoint at weights.pt"
        ) from err
    state = ckpt.get(container, ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        other = next((c for c in ("state_dict", "model") if c != container and isinstance(ckpt, dict) and c in ckpt), None)
        hint = (f": it holds {{'{other}': ...}}, the container of the other audio encoder's checkpoints (HTS-AT: "
                "'state_dict', ResNet38: 'model'); point audio_checkpoint at a checkpoint of this encoder, e.g. "
                "checkpoints/tiny/resnet38-tiny.pth or checkpoints/tiny/htsat-tiny.ckpt") if other else ""
        raise CheckpointError(f"{path}: expected a state dict (or {{'{container}': state dict}}) of tensors{hint}")
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _load_checked(
    model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, skip: Callable[[str], bool], what: str
) -> LoadReport:
    """Copy `state` into `model` after checking every key and shape; raise CheckpointError otherwise."""
    expected = model.state_dict()
    for key, target in expected.items():
        if key not in state:
            n_missing = sum(k not in state for k in expected)
            raise CheckpointError(
                f"{path}: key {key!r} (shape {tuple(target.shape)}) needed by the {what} encoder is missing "
                f"({n_missing} missing keys in all). Is this the official {what} checkpoint for this architecture?"
            )
        if tuple(state[key].shape) != tuple(target.shape):
            raise CheckpointError(
                f"{path}: key {key!r} has shape {tuple(state[key].shape)} but the {what} encoder expects "
                f"{tuple(target.shape)}. The checkpoint is for another architecture: use the published "
                "configuration (HTSAT('paper') / ResNet38(width=1.0)) or set audio_checkpoint=null"
            )
    buffers = dict(model.named_buffers())
    ignored = []
    for key in sorted(set(state) - set(expected)):
        if not skip(key):
            raise CheckpointError(
                f"{path}: unexpected key {key!r} is not part of the {what} encoder; "
                "the checkpoint is for another architecture (use the official one)"
            )
        if key in buffers and not torch.equal(buffers[key], state[key].to(buffers[key].dtype)):
            raise CheckpointError(
                f"{path}: buffer {key!r} differs from the one computed here: the window layout disagrees "
                "with the checkpoint's model; please report this as a bug in thadcr.model.audio"
            )
        ignored.append(key)
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    return LoadReport(path=str(path), loaded=sorted(expected), ignored=ignored)


def load_htsat_checkpoint(model: HTSAT, path: str | Path) -> LoadReport:
    """Load an official HTS-AT checkpoint (Lightning {'state_dict': {'sed_model.*': ...}} or a
    bare state dict) into `model`. Front end, classifier and attention buffers are ignored."""
    state = _read_state(path, "state_dict", "sed_model.")

    def skip(key: str) -> bool:
        return key.startswith(HTSAT_IGNORED_PREFIXES) or key.endswith(HTSAT_IGNORED_SUFFIXES)

    return _load_checked(model, state, path, skip, "HTS-AT")


def load_resnet38_checkpoint(model: ResNet38, path: str | Path) -> LoadReport:
    """Load a PANNs ResNet38 checkpoint ({'model': state_dict} or bare) into `model`; the
    torchlibrosa front-end buffers and the `fc_audioset` classifier are ignored."""
    state = _read_state(path, "model", "module.")
    return _load_checked(model, state, path, lambda k: k.startswith(RESNET38_IGNORED_PREFIXES), "ResNet38")
