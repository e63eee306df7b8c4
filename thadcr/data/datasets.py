"""The torch datasets: frame cropping, SpecAugment, one item per caption (training) or per clip
(evaluation), collation, the global batches of an epoch and the DataLoader.

Items are cropped from the whole-clip log-mels of :class:`~thadcr.data.logmel.LogMelCache` for
the clips of a :class:`~thadcr.data.readers.Split`. Choices are in ``docs/decisions/datasets.md``.
"""

from __future__ import annotations

import numpy as np
import torch

from thadcr.data.audio_io import check_crop_mode, crop_offset
from thadcr.data.logmel import LogMelCache
from thadcr.data.readers import Split

PAD_DB = -100.0  # log-mel of digital silence: 10*log10(amin=1e-10), the HTS-AT/PANNs floor


def crop_frames(
    logmel: torch.Tensor, n_frames: int, mode: str, generator: torch.Generator | None = None, pad_value: float = PAD_DB
) -> torch.Tensor:
    """``logmel`` (T, F) cropped or padded at the end with ``pad_value`` to (n_frames, F).

    ``pad_value`` defaults to -100 dB, the log-mel the HTS-AT front end gives to zero samples,
    so padding frames matches the waveform zero-padding of ref [8]. Crop modes as in
    :func:`thadcr.data.audio_io.crop_offset`.
    """
    if logmel.dim() != 2:
        raise ValueError(f"crop_frames expects a log-mel (frames, mels), got shape {tuple(logmel.shape)}")
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    check_crop_mode(mode)
    length, mels = logmel.shape
    if length < n_frames:
        pad = logmel.new_full((n_frames - length, mels), pad_value)
        out = torch.cat([logmel, pad])
    else:
        start = crop_offset(length, n_frames, mode, generator)
        out = logmel[start : start + n_frames]
    assert out.shape == (n_frames, mels)
    return out


def spec_augment(
    logmel: torch.Tensor,
    generator: torch.Generator,
    time_masks: int,
    time_width: int,
    freq_masks: int,
    freq_width: int,
) -> torch.Tensor:
    """SpecAugment masking of a training log-mel (T, F), as PANNs and HTS-AT train with it.

    ``time_masks`` stripes of 0 to ``time_width - 1`` frames and ``freq_masks`` stripes of 0 to
    ``freq_width - 1`` mel bins, each at a uniform start, are set to the clip's mean per mel bin.
    PANNs and HTS-AT set them to 0 after their per-bin BatchNorm ``bn0``, i.e. to the per-bin mean
    of the data; here the masking runs before the model, so the clip's own per-bin mean stands in
    for it. Returns a new tensor; ``logmel`` is not modified.
    """
    if logmel.dim() != 2:
        raise ValueError(f"spec_augment expects a log-mel (frames, mels), got shape {tuple(logmel.shape)}")
    for name, value in (("time_masks", time_masks), ("time_width", time_width),
                        ("freq_masks", freq_masks), ("freq_width", freq_width)):
        if value < 0:
            raise ValueError(f"spec_augment: {name} must be >= 0, got {value}")
    out = logmel.clone()
    fill = logmel.mean(dim=0)  # (F,)
    for axis, n_masks, width in ((0, time_masks, time_width), (1, freq_masks, freq_width)):
        size = out.shape[axis]
        for _ in range(n_masks):
            span = int(torch.randint(0, max(width, 1), (1,), generator=generator))
            span = min(span, size)
            start = int(torch.randint(0, size - span + 1, (1,), generator=generator))
            if axis == 0:
                out[start : start + span] = fill
            else:
                out[:, start : start + span] = fill[start : start + span]
    return out


def clip_frames(clip_seconds: float, sample_rate: int = 32000, hop: int = 320) -> int:
    """Log-mel frames of a clip with centre padding: 10 s at 32 kHz, hop 320 -> 1001."""
    return int(round(clip_seconds * sample_rate)) // hop + 1


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index) alone: crops do not depend on the order
    items are drawn in, the worker that draws them, or what ran before (resumable)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class CaptionDataset(torch.utils.data.Dataset):
    """One item per caption: dict(logmel (n_frames, F), caption, clip_index, caption_index);
    without ``logmel`` when ``with_audio`` is False (a frozen audio encoder's cached features are
    looked up by clip_index instead, `thadcr.run.features`).

    Training draws a random crop, then the SpecAugment masks of ``spec_augment`` (time masks,
    time width, frequency masks, frequency width; zeros: none), from a per-item generator seeded
    by (seed, epoch, index). The key of an item is its caption index (the epoch is the one of
    :meth:`set_epoch`) or an ``(epoch, index)`` pair, as `GlobalBatchSampler` yields them, so that
    DataLoader workers, which hold their own copy of the dataset, need no epoch state. Otherwise
    the crop is the deterministic centre crop and nothing is masked.
    """

    def __init__(
        self, split: Split, cache: LogMelCache, n_frames: int, train: bool, seed: int = 0,
        spec_augment: tuple[int, int, int, int] = (0, 0, 0, 0), with_audio: bool = True,
    ) -> None:
        self.split, self.cache, self.n_frames = split, cache, int(n_frames)
        self.train, self.seed, self.epoch = bool(train), int(seed), 0
        self.with_audio = bool(with_audio)
        self.spec_augment = tuple(int(v) for v in spec_augment)  # (time_masks, time_width, freq_masks, freq_width)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.split.captions)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        if not 0 <= index < len(self):
            raise IndexError(f"caption index {index} out of range for {len(self)} captions")
        clip = int(self.split.caption_audio[index])
        item = {"caption": self.split.captions[index], "clip_index": clip, "caption_index": index}
        if not self.with_audio:
            return item
        whole = self.cache.get(self.split.audio_paths[clip])  # (T, F)
        if self.train:
            generator = item_generator(self.seed, epoch, index)
            logmel = crop_frames(whole, self.n_frames, "random", generator)
            time_masks, _, freq_masks, _ = self.spec_augment
            if time_masks or freq_masks:
                logmel = spec_augment(logmel, generator, *self.spec_augment)
        else:
            logmel = crop_frames(whole, self.n_frames, "center")
        return {"logmel": logmel, **item}


class ClipDataset(torch.utils.data.Dataset):
    """One item per clip (evaluation encodes each clip once): dict(logmel, clip_id, clip_index),
    centre-cropped."""

    def __init__(self, split: Split, cache: LogMelCache, n_frames: int) -> None:
        self.split, self.cache, self.n_frames = split, cache, int(n_frames)

    def __len__(self) -> int:
        return self.split.n_clips

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        logmel = crop_frames(self.cache.get(self.split.audio_paths[index]), self.n_frames, "center")
        return {"logmel": logmel, "clip_id": self.split.clip_ids[index], "clip_index": index}


_LIST_KEYS = {"caption": "captions", "clip_id": "clip_ids"}
_INDEX_KEYS = ("clip_index", "caption_index")


def collate(batch: list[dict]) -> dict:
    """Items of either dataset -> dict: ``logmel`` (B, n_frames, F) when the items have one, ``captions`` / ``clip_ids``
    lists, ``clip_index`` / ``caption_index`` LongTensors (B,)."""
    if not batch:
        raise ValueError("collate got an empty batch")
    keys = set(batch[0])
    unknown = keys - {"logmel", *_LIST_KEYS, *_INDEX_KEYS}
    if unknown or any(set(item) != keys for item in batch):
        raise ValueError(f"collate: items must share the keys of CaptionDataset/ClipDataset, got {sorted(keys)}")
    out: dict = {"logmel": torch.stack([item["logmel"] for item in batch])} if "logmel" in keys else {}
    for key, plural in _LIST_KEYS.items():
        if key in keys:
            out[plural] = [item[key] for item in batch]
    for key in _INDEX_KEYS:
        if key in keys:
            out[key] = torch.tensor([item[key] for item in batch], dtype=torch.long)
    assert "logmel" not in out or (out["logmel"].dim() == 3 and out["logmel"].shape[0] == len(batch))
    return out


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Shuffled global batches of one epoch (deterministic from seed and epoch; last partial dropped)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_items, generator=generator)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n_items // batch_size)]


class GlobalBatchSampler(torch.utils.data.Sampler):
    """This process's share of each global batch of an epoch, as ``(epoch, caption index)`` keys.

    Global batch b of epoch e is ``epoch_batches(n_items, batch_size, seed, e)[b]`` whatever the
    number of processes; process ``rank`` of ``world`` takes its rows ``rank * B / world`` to
    ``(rank + 1) * B / world``, so the processes together see exactly the batches of one process.
    ``max_steps`` > 0 keeps only the first batches of each epoch. Call :meth:`set_epoch` before
    each epoch; one DataLoader (and its persistent workers) then serves every epoch.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 max_steps: int = 0) -> None:
        if batch_size % world:
            raise ValueError(f"batch_size={batch_size} is not divisible by the {world} processes")
        if n_items < batch_size:
            raise ValueError(f"{n_items} items are fewer than one batch of {batch_size}")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.per_rank, self.max_steps = rank, batch_size // world, max_steps
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.n_items // self.batch_size
        return min(n, self.max_steps) if self.max_steps else n

    def __iter__(self):
        batches = epoch_batches(self.n_items, self.batch_size, self.seed, self.epoch)[: len(self)]
        for batch in batches:
            mine = batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
            yield [(self.epoch, int(i)) for i in mine]


def data_loader(dataset: torch.utils.data.Dataset, num_workers: int, pin_memory: bool, batch_size: int | None = None,
                batch_sampler: torch.utils.data.Sampler | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader of `collate`d batches in order: `batch_sampler`'s batches, or consecutive
    batches of ``batch_size`` items. With workers, they stay alive between epochs.

    Items draw their randomness from per-item generators (`item_generator`), so the loader gets a
    generator of its own: starting an epoch then leaves the global random state (dropout) alone,
    and a resumed run draws exactly what an uninterrupted one does.
    """
    return torch.utils.data.DataLoader(
        dataset, batch_size=1 if batch_sampler else batch_size, batch_sampler=batch_sampler, shuffle=False,
        num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory,
        persistent_workers=num_workers > 0 and batch_sampler is not None, generator=torch.Generator().manual_seed(0),
    )
