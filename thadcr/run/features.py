"""A frozen audio encoder's features (``audio_frozen: true``), computed once per split and cached.

A frozen encoder runs in eval mode (no drop path, no dropout, BatchNorm's stored statistics), so
it gives a clip the same output every time, and running it on every training step and at every
evaluation repeats the same work. `AudioFeatureCache` runs it once over a split's clips (their
centre crop, as evaluation reads them) and keeps, per clip, what the heads read:

* ``stages``: HTS-AT's stages 2-4 (Sec. 2.1), each already pooled as THA pools it
  (`thadcr.model.alignment.pool_audio_tokens` with ``tha_max_audio_tokens``; pooling twice changes
  nothing), so THA's projections see exactly what they would see from the encoder;
* ``pooled``: the global feature a_bar that DP and the DCR factors project.

As SCAN-style image-text models train on precomputed region features, a run then trains only the
projections, THA, the DCR factors and CA. The file lives in the log-mel cache's folder (so its
numerics and front end are those of the log-mels it was computed from), named by a hash of the
encoder's class and every weight, the crop length, the pooling and each clip's log-mel entry,
so that every run with the same encoder shares it and any change computes a fresh one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from thadcr.model.alignment import pool_audio_tokens
from thadcr.model.htsat import HTSATOutput
from thadcr.data.datasets import ClipDataset, data_loader
from thadcr.data.logmel import LogMelCache
from thadcr.data.readers import Split
from thadcr.files import atomic_save, sha256

log = logging.getLogger(__name__)

BATCH = 64  # clips per forward pass; fixed, so that the stored bits do not depend on a setting
VERSION = 1  # bump when the stored format changes


def weights_digest(encoder: nn.Module) -> str:
    """sha256 of an encoder's class and every parameter and buffer (names, shapes, bytes)."""
    digest = hashlib.sha256(type(encoder).__name__.encode())
    for name, tensor in encoder.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class AudioFeatureCache:
    """Every clip of `split` through the frozen `encoder`: calling it with clip indices (B,)
    gives their `HTSATOutput` (stages (B, M'_l, C_l) pooled to at most ``max_tokens`` tokens,
    pooled (B, C)) on `device`."""

    def __init__(self, encoder: nn.Module, split: Split, cache: LogMelCache, n_frames: int,
                 device: torch.device, max_tokens: int = 0, progress: bool = False):
        self.device = device
        key = json.dumps([VERSION, weights_digest(encoder), int(n_frames), int(max_tokens),
                          [cache.entry(path).name for path in split.audio_paths]])
        self.path = cache.folder / f"audio-{sha256(key, length=20)}.pt"
        stored = self._load(self.path, split.n_clips)
        if stored is None:
            stored = self._compute(encoder, split, cache, n_frames, max_tokens, progress)
            atomic_save(stored, self.path)
        self.stages: list[torch.Tensor] = stored["stages"]  # [(N_clips, M'_l, C_l)]
        self.pooled: torch.Tensor = stored["pooled"]  # (N_clips, C)

    @staticmethod
    def _load(path: Path, n_clips: int) -> dict | None:
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
            log.warning("audio feature cache %s is unusable (%s); recomputing it", path, error)
            return None
        if not isinstance(stored, dict) or stored.get("pooled") is None or len(stored["pooled"]) != n_clips:
            log.warning("audio feature cache %s does not hold %d clips; recomputing it", path, n_clips)
            return None
        return stored

    @staticmethod
    @torch.no_grad()
    def _compute(encoder: nn.Module, split: Split, cache: LogMelCache, n_frames: int, max_tokens: int,
                 progress: bool) -> dict:
        was_training = encoder.training
        encoder.eval()
        device = next(encoder.parameters()).device
        loader = data_loader(ClipDataset(split, cache, n_frames), 0, False, batch_size=BATCH)
        stages, pooled = [], []
        for batch in tqdm(loader, desc="audio features", disable=not progress, leave=False):
            out = encoder(batch["logmel"].to(device))
            stages.append([pool_audio_tokens(level, max_tokens).float().cpu() for level in out.stages])
            pooled.append(out.pooled.float().cpu())
        encoder.train(was_training)
        return {"stages": [torch.cat([block[i] for block in stages]) for i in range(len(stages[0]))],
                "pooled": torch.cat(pooled)}

    def __len__(self) -> int:
        return len(self.pooled)

    def __call__(self, index: torch.Tensor) -> HTSATOutput:
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        return HTSATOutput(stages=[level[index].to(self.device) for level in self.stages],
                           pooled=self.pooled[index].to(self.device))
