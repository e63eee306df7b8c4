"""Evaluation: encode each clip and caption of a split once, score all pairs, compute the metrics.

The protocol of the paper's ref [8] (see `thadcr.metrics`): every caption ranks all clips of the
split and every clip ranks all captions. Clips get the deterministic centre crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from thadcr.audio import LogMel
from thadcr.config import Config
from thadcr.datasets import ClipDataset, LogMelCache, Split, clip_frames, data_loader, load_split
from thadcr.factors import factor_correlation
from thadcr.metrics import retrieval_metrics
from thadcr.model import Embeddings, RetrievalModel, concat_embeddings
from thadcr.text import TextFeatureCache


def front_end(config: Config) -> LogMel:
    """The log-mel front end of a run (HTS-AT's recipe at the config's sample rate)."""
    return LogMel(sample_rate=config.sample_rate)


def open_split(config: Config, name: str) -> tuple[Split, LogMelCache]:
    """Split `name` ("train", "val", "test") of the config's data set and its log-mel cache
    (``cache_dir``, or ``<data_root>/.cache``)."""
    root = Path(config.data_root)
    split = load_split(root, config.layout, name, config.audio_pattern, config.max_missing_share)
    cache_dir = Path(config.cache_dir) if config.cache_dir else root / ".cache"
    return split, LogMelCache(cache_dir, front_end(config))


def frames_per_clip(config: Config, logmel: LogMel) -> int:
    """Log-mel frames of one clip of the config from `logmel` (10 s at 32 kHz, hop 320 -> 1001)."""
    return clip_frames(config.clip_seconds, logmel.sample_rate, logmel.hop)


@torch.no_grad()
def encode_clips(
    model: RetrievalModel, split: Split, cache: LogMelCache, n_frames: int, device: torch.device,
    batch_size: int = 64, progress: bool = False, num_workers: int = 0,
) -> Embeddings:
    """Encode every clip of a split once (deterministic crop), reading them with `num_workers` processes."""
    model.eval()
    loader = data_loader(ClipDataset(split, cache, n_frames), num_workers, device.type == "cuda", batch_size=batch_size)
    parts = [model.encode_audio(batch["logmel"].to(device, non_blocking=True))
             for batch in tqdm(loader, desc="encode clips", disable=not progress, leave=False)]
    return concat_embeddings(parts)


@torch.no_grad()
def encode_captions(
    model: RetrievalModel, captions: list[str], batch_size: int = 64,
    text_cache: TextFeatureCache | None = None, progress: bool = False,
) -> Embeddings:
    """Encode every caption once (from the frozen-encoder cache when given)."""
    model.eval()
    parts = []
    for start in tqdm(range(0, len(captions), batch_size), desc="encode captions", disable=not progress, leave=False):
        stop = min(start + batch_size, len(captions))
        parts.append(model.encode_text(text_cache(torch.arange(start, stop)) if text_cache else captions[start:stop]))
    return concat_embeddings(parts)


def encode_split(model, split, cache, n_frames, device, batch_size=64, text_cache=None, progress=False, num_workers=0):
    """(clip embeddings, caption embeddings) of a split, each item encoded once."""
    return (
        encode_clips(model, split, cache, n_frames, device, batch_size, progress, num_workers),
        encode_captions(model, split.captions, batch_size, text_cache, progress),
    )


@torch.no_grad()
def score_all(model: RetrievalModel, audio: Embeddings, text: Embeddings, block: int = 64) -> torch.Tensor:
    """All-pairs similarity (Na, Nt) in blocks of clips."""
    rows = [model.similarity(audio.select(slice(i, i + block)), text).float().cpu() for i in range(0, len(audio), block)]
    return torch.cat(rows)


def evaluate_split(model, split, cache, n_frames, device, batch_size=64, text_cache=None, progress=False,
                   num_workers=0) -> dict:
    """The retrieval metrics of `model` on every clip and caption of `split`."""
    audio, text = encode_split(model, split, cache, n_frames, device, batch_size, text_cache, progress, num_workers)
    return retrieval_metrics(score_all(model, audio, text), split.caption_audio)


@torch.no_grad()
def factor_analysis(model: RetrievalModel, audio: Embeddings, text: Embeddings, caption_audio) -> dict:
    """C on matching test pairs and, with CA, the confidence weights of matching/non-matching pairs."""
    index = torch.as_tensor(np.asarray(caption_audio), device=audio.factors.device)
    matched_audio = audio.factors[index]
    result = {"C": factor_correlation(e_audio=matched_audio.float(), e_text=text.factors.float()).cpu().numpy()}
    if model.uses_ca:
        generator = torch.Generator().manual_seed(0)
        shift = torch.randint(1, len(audio), (len(index),), generator=generator).to(index.device)
        other = audio.factors[(index + shift) % len(audio)]
        result["g_positive"] = model.ca(e_audio=matched_audio, e_text=text.factors).float().cpu().numpy()
        result["g_negative"] = model.ca(e_audio=other, e_text=text.factors).float().cpu().numpy()
    return result


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", device: str = "auto", overrides=()) -> dict:
    """`thadcr evaluate`: encode each clip and caption of a split once, score all pairs in blocks."""
    from thadcr.checkpoint import load_trained
    from thadcr.config import parse_override

    model, config = load_trained(checkpoint, device=device, **dict(parse_override(o) for o in overrides))
    data, cache = open_split(config, split)
    device_ = next(model.parameters()).device
    n_frames = frames_per_clip(config, cache.logmel)
    return evaluate_split(model, data, cache, n_frames, device_, config.eval_batch, progress=True,
                          num_workers=config.num_workers)
