"""Evaluation: encode each clip and caption of a split once, score all pairs, compute the metrics.

The protocol of the paper's ref [8] (see `thadcr.run.metrics`): every caption ranks all clips of the
split and every clip ranks all captions. Clips get the deterministic centre crop.

With ``eval_fold_clips`` = n > 0 a split is cut into disjoint galleries ("folds") of n clips in
file order, each with its clips' captions, as image-text retrieval reports MS-COCO's "1K test"
over 5 folds: a caption ranks only the clips of its fold and a clip only its fold's captions. Only
pairs within a fold are scored (`score_split` puts -inf across folds), so the metrics are those
of every query ranked in its own fold, pooled over all queries; with equal folds (the same number
of captions per clip) R@k and mAP@10 are exactly the average of the folds' values. The noise of a
metric then falls with the square root of all clips, while scoring grows only linearly with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from thadcr.model.audio import LogMel
from thadcr.run.features import AudioFeatureCache
from thadcr.config import DEVICE_TEXT, Config
from thadcr.data.datasets import ClipDataset, clip_frames, data_loader
from thadcr.data.logmel import LogMelCache
from thadcr.data.readers import Split, load_split
from thadcr.errors import UsageError
from thadcr.model.factors import factor_correlation
from thadcr.run.metrics import retrieval_metrics
from thadcr.model.retrieval import Embeddings, RetrievalModel, concat_embeddings
from thadcr.model.text import TextFeatureCache


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


@dataclass
class EvalSet:
    """One split's evaluation set: its clips and captions (``split``), how each clip is read (the
    log-mel ``cache``, ``n_frames`` per clip, ``num_workers`` loader processes), how captions are
    encoded (``text_cache``: a frozen text encoder's features, or None; ``audio_cache``: a frozen
    audio encoder's, or None), where and in what batches they are encoded, and the clips per
    gallery (``fold_clips``, 0: the whole split)."""

    split: Split
    cache: LogMelCache
    n_frames: int
    device: torch.device
    batch_size: int = 64
    text_cache: TextFeatureCache | None = None
    num_workers: int = 0
    audio_cache: AudioFeatureCache | None = None
    fold_clips: int = 0

    @classmethod
    def open(cls, config: Config, name: str, model: RetrievalModel, num_workers: int | None = None) -> "EvalSet":
        """Split `name` of the config's data set (`open_split`) for `model` (on its device; a
        frozen audio encoder's features cached, `thadcr.run.features`), encoded in
        ``eval_batch`` batches with ``num_workers`` loader processes (default: the config's)."""
        split, cache = open_split(config, name)
        workers = config.num_workers if num_workers is None else num_workers
        device = next(model.parameters()).device
        n_frames = frames_per_clip(config, cache.logmel)
        audio_cache = audio_feature_cache(model, config, split, cache, n_frames)
        return cls(split, cache, n_frames, device, config.eval_batch, None, workers, audio_cache,
                   config.eval_fold_clips)


def audio_feature_cache(model: RetrievalModel, config: Config, split: Split, cache: LogMelCache,
                        n_frames: int, progress: bool = False) -> AudioFeatureCache | None:
    """The cached features of `split` when the model's audio encoder is frozen; None otherwise.
    The stages are pooled as THA pools them whatever the variant, so that every variant with the
    same encoder shares one cache file."""
    if not model.audio_frozen:
        return None
    device = next(model.parameters()).device
    return AudioFeatureCache(model.audio_encoder, split, cache, n_frames, device, config.tha_max_audio_tokens,
                             progress)


def fold_ranges(n_clips: int, fold_clips: int, where: str = "the split") -> list[range]:
    """The clip ranges of the galleries: [0, n), [n, 2n), ... for ``fold_clips`` = n; one range
    of every clip for 0 or a split of at most n clips. A larger split whose clip count n does not
    divide is refused."""
    if fold_clips == 0 or n_clips <= fold_clips:
        return [range(n_clips)]
    if n_clips % fold_clips:
        raise UsageError(f"{where} has {n_clips} clips, not a multiple of eval_fold_clips={fold_clips}: set "
                         f"eval_fold_clips to a divisor of {n_clips}, or 0 for one gallery")
    return [range(start, start + fold_clips) for start in range(0, n_clips, fold_clips)]


@torch.no_grad()
def encode_clips(model: RetrievalModel, data: EvalSet, progress: bool = False) -> Embeddings:
    """Encode every clip of a split once (deterministic crop), reading them with `num_workers` processes."""
    model.eval()
    if data.audio_cache is not None:  # a frozen encoder's cached features
        blocks = [torch.arange(start, min(start + data.batch_size, data.split.n_clips))
                  for start in range(0, data.split.n_clips, data.batch_size)]
        return concat_embeddings([model.encode_audio(data.audio_cache(block)) for block in blocks])
    dataset = ClipDataset(data.split, data.cache, data.n_frames)
    loader = data_loader(dataset, data.num_workers, data.device.type == "cuda", batch_size=data.batch_size)
    parts = [model.encode_audio(batch["logmel"].to(data.device, non_blocking=True))
             for batch in tqdm(loader, desc="encode clips", disable=not progress, leave=False)]
    return concat_embeddings(parts)


@torch.no_grad()
def encode_captions(model: RetrievalModel, data: EvalSet, progress: bool = False) -> Embeddings:
    """Encode every caption once (from the frozen-encoder cache when the set has one)."""
    model.eval()
    captions, batch_size, text_cache = data.split.captions, data.batch_size, data.text_cache
    parts = []
    for start in tqdm(range(0, len(captions), batch_size), desc="encode captions", disable=not progress, leave=False):
        stop = min(start + batch_size, len(captions))
        parts.append(model.encode_text(text_cache(torch.arange(start, stop)) if text_cache else captions[start:stop]))
    return concat_embeddings(parts)


def encode_split(model: RetrievalModel, data: EvalSet, progress: bool = False) -> tuple[Embeddings, Embeddings]:
    """(clip embeddings, caption embeddings) of a split, each item encoded once."""
    return encode_clips(model, data, progress), encode_captions(model, data, progress)


@torch.no_grad()
def score_all(model: RetrievalModel, audio: Embeddings, text: Embeddings, block: int = 64) -> torch.Tensor:
    """All-pairs similarity (Na, Nt) in blocks of clips."""
    rows = [model.similarity(audio.select(slice(i, i + block)), text).float().cpu() for i in range(0, len(audio), block)]
    return torch.cat(rows)


@torch.no_grad()
def score_split(model: RetrievalModel, audio: Embeddings, text: Embeddings, data: EvalSet) -> torch.Tensor:
    """(Na, Nt) similarities of the pairs within each gallery of the set (``fold_clips``), -inf
    across galleries, so that `thadcr.run.metrics` ranks every query within its own fold."""
    owner = torch.as_tensor(np.asarray(data.split.caption_audio))
    folds = fold_ranges(data.split.n_clips, data.fold_clips, f"the {data.split.name} split")
    if len(folds) == 1:
        return score_all(model, audio, text)
    sim = torch.full((len(audio), len(text)), -math.inf)
    for fold in folds:
        clips = torch.arange(fold.start, fold.stop)
        captions = ((owner >= fold.start) & (owner < fold.stop)).nonzero().flatten()  # (Nt_f,)
        sim[clips[:, None], captions[None, :]] = score_all(model, audio.select(clips), text.select(captions))
    return sim


def evaluate_split(model: RetrievalModel, data: EvalSet, progress: bool = False) -> dict:
    """The retrieval metrics of `model` on the set's split (its galleries: ``fold_clips``)."""
    audio, text = encode_split(model, data, progress)
    return retrieval_metrics(score_split(model, audio, text, data), data.split.caption_audio)


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
    """`thadcr evaluate`: encode each clip and caption of a split once, score all pairs in blocks.

    ``overrides`` (``key=value`` texts) change keys of the checkpoint's config; ``device=...``
    among them is where to evaluate, the same as ``device`` (giving two different devices is a
    UsageError)."""
    from thadcr.run.checkpoint import load_trained
    from thadcr.config import parse_override

    changes = dict(parse_override(o) for o in overrides)
    if "device" in changes:
        asked = changes.pop("device")
        if not isinstance(asked, str):
            raise UsageError(f"device={asked!r}: give {DEVICE_TEXT}")
        if device not in ("auto", asked):
            raise UsageError(f"device={asked} and --device {device} ask for two devices: give one of them")
        device = asked
    model, config = load_trained(checkpoint, device=device, **changes)
    data = EvalSet.open(config, split, model)
    return evaluate_split(model, data, progress=True)
