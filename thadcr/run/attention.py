"""THA's attention measured: where in a clip the words of a caption look, and how much of that
falls inside the time span of the sound event they name.

* `word_time_attention`: for a trained THA model, one clip and its captions, the audio-enhanced
  weights α'_nm of Eq. 1 (`thadcr.model.alignment.eq1_attention`, each word over the audio
  tokens) at each level, frequency rows summed per time column (`time_bins`): a distribution of
  each word over uniform time bins of the clip.
* `event_items`: the (scene, caption, event span) items of an embedded data set's split, with the
  caption's characters that name the event and its other events (`find_phrase`: the scenes CSV
  says when each event sounds, and the captions are written from the class phrases of
  `thadcr.data.embedded.inventory`).
* `event_shares`: for each item and level, the share of the event words' attention inside the
  event's span (`inside_share`), the same for the words naming the caption's other events (a
  control: attention drawn to where the clip is loud lands in the span whatever the word), and
  the share uniform attention would put there (`chance_share`); `scene_means` averages each
  scene's items.

Which words: the *content words* of the event's phrase (`content_word_mask`; ``FUNCTION_WORDS``
left out: articles, "is", prepositions, "someone"), each word piece of them a query of Eq. 1;
their attention distributions are averaged. A bin counts with the part of it inside the span, so
uniform attention gives exactly the chance share. The choices: docs/decisions/alignment.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from thadcr.data.embedded.build import read_timelines
from thadcr.data.embedded.inventory import PhraseSet, load_classes
from thadcr.data.readers import Split, normalise_caption
from thadcr.model.alignment import eq1_attention
from thadcr.model.htsat import HTSATOutput
from thadcr.model.retrieval import RetrievalModel
from thadcr.model.text import DEFAULT_MAX_LENGTH

# Words of an event phrase that name no sound: articles, auxiliaries, prepositions and particles,
# possessives, indefinite pronouns (the phrases of embedded_classes.csv, normalised).
FUNCTION_WORDS = frozenset({
    "a", "an", "the", "is", "are", "of", "from", "on", "in", "into", "over", "across", "along",
    "through", "by", "to", "up", "off", "away", "past", "and", "with", "its", "their", "someone",
    "something",
})  # fmt: skip


def time_bins(values: np.ndarray, freq_ratio: int) -> np.ndarray:
    """(M, ...) values of one level's G x G token grid -> (r * G, ...) summed per time bin.

    HTS-AT cuts the clip's time axis into r = freq_ratio chunks stacked along frequency, so token
    j sits at row h, column w = divmod(j, G) (patch embedding, merging and THA's 2x2 pooling keep
    row-major order), in time bin floor(h / (G / r)) * G + w of r * G uniform bins over the clip.
    """
    G = math.isqrt(values.shape[0])
    if values.shape[0] != G * G or G % freq_ratio:
        raise ValueError(f"{values.shape[0]} tokens are not a square grid whose side {freq_ratio} divides")
    grid = values.reshape(freq_ratio, G // freq_ratio, G, *values.shape[1:])  # (chunk, row in chunk, column, ...)
    return grid.sum(axis=1).reshape(freq_ratio * G, *values.shape[1:])


@dataclass
class WordTimeAttention:
    """Each word's audio-enhanced attention over time, per THA level.

    words: the caption's word pieces that THA attends with ([CLS], [SEP] left out); offsets:
    their (start, end) characters in the caption; levels: one (words, bins_l) array per level,
    each row a distribution over bins_l uniform time bins of [0, seconds].
    """

    words: list[str]
    offsets: list[tuple[int, int]]
    levels: list[np.ndarray]
    seconds: float


@torch.no_grad()
def word_time_attention(model: RetrievalModel, audio: torch.Tensor | HTSATOutput,
                        captions: list[str]) -> list[WordTimeAttention]:
    """THA's audio-enhanced attention of each caption's words over the time of one clip.

    audio: the clip's log-mel (1, frames, mel bins), or the audio encoder's output for it (e.g.
    from `thadcr.run.features`). Per caption and level, α'_nm of Eq. 1 (the caption's words over
    the projected, pooled audio tokens, normalised over its words) is summed over the frequency
    rows of each time bin (`time_bins`). The captions are encoded as one batch.
    """
    if not model.uses_tha:
        raise ValueError(f"variant {model.config.variant} has no THA: load a THA, THA+DP or THA+DCR model")
    model.eval()
    stages = (audio if isinstance(audio, HTSATOutput) else model.audio_encoder(audio)).stages
    audio_levels = model.tha.project_audio(stages)
    if audio_levels[0].shape[0] != 1:
        raise ValueError(f"give one clip, got audio for {audio_levels[0].shape[0]}")
    tokens = model.text_encoder.tokenize(captions)
    text = model.text_encoder.forward_tokens(**tokens)
    text_levels = model.tha.project_text(text.levels)
    offsets = model.text_encoder.tokenizer(captions, padding="longest", truncation=True, max_length=DEFAULT_MAX_LENGTH,
                                           return_offsets_mapping=True, return_tensors="pt")
    assert torch.equal(offsets["input_ids"], tokens["input_ids"])
    freq_ratio = model.audio_encoder.config.freq_ratio
    found = []
    for row, valid in enumerate(text.mask):  # (N,) the caption's word pieces
        maps = []
        for a, t in zip(audio_levels, text_levels):
            alpha = eq1_attention(t[row][valid].double(), a[0].double(), model.tha.lam)  # (words, M_l)
            maps.append(time_bins(alpha.cpu().numpy().T, freq_ratio).T)  # (words, bins_l)
        valid = valid.cpu()
        pieces = model.text_encoder.tokenizer.convert_ids_to_tokens(tokens["input_ids"][row][valid].tolist())
        found.append(WordTimeAttention(pieces, [tuple(o) for o in offsets["offset_mapping"][row][valid].tolist()],
                                       maps, float(model.config.clip_seconds)))
    return found


def inside_share(attention: np.ndarray, start: float, end: float, seconds: float) -> np.ndarray:
    """The mass of attention (..., bins) over uniform time bins of [0, seconds] that lies in
    [start, end], each bin counted by the part of it inside; (...)."""
    bins = attention.shape[-1]
    edges = np.linspace(0.0, seconds, bins + 1)
    overlap = np.clip(np.minimum(edges[1:], end) - np.maximum(edges[:-1], start), 0.0, None)  # (bins,) seconds
    return attention @ (overlap * bins / seconds)


def chance_share(start: float, end: float, seconds: float) -> float:
    """The share of [0, seconds] inside [start, end]: what uniform attention puts there."""
    return max(0.0, min(end, seconds) - max(start, 0.0)) / seconds


def content_word_mask(attention: WordTimeAttention, caption: str, spans: list[tuple[int, int]]) -> np.ndarray:
    """(words,) True on the word pieces of the content words (not ``FUNCTION_WORDS``) inside any
    of the character `spans` of the caption."""
    words = [m.span() for m in re.finditer(r"\w+", caption) if m.group().lower() not in FUNCTION_WORDS
             and any(start <= m.start() and m.end() <= end for start, end in spans)]
    return np.array([any(a <= s and e <= b for a, b in words) for s, e in attention.offsets], dtype=bool)


@dataclass(frozen=True)
class EventItem:
    """One sound event of a scene and a caption of the scene that names it: the clip's index in
    its split, the caption, the characters of the caption naming the event (`span`) and its
    other events (`others`), and when the event sounds (seconds from the clip's start)."""

    clip: int
    caption: str
    span: tuple[int, int]
    others: tuple[tuple[int, int], ...]
    start: float
    end: float
    cls: str


def find_phrase(caption: str, phrases: PhraseSet) -> tuple[int, int] | None:
    """The characters of the longest of the class's phrases (normalised as captions are) that the
    caption holds as whole words, the first of equal ones; None when it holds none."""
    found = []
    for phrase in phrases.variants():
        match = re.search(rf"\b{re.escape(normalise_caption(phrase))}\b", caption)
        if match:
            found.append((match.start() - match.end(), match.start(), match.end()))
    return min(found)[1:] if found else None


def event_items(split: Split, scenes_csv: str | Path, clips: list[int] | None = None,
                captions: int | None = None) -> list[EventItem]:
    """Every (caption, event) of the split's `clips` (default: all; the first `captions` of each,
    default all) whose scene `scenes_csv` describes (the embedded data's ``scenes_<split>.csv``),
    in clip, caption and event order. Backgrounds are left out: they last the whole clip. A
    caption that does not name one of its scene's events is an error (the build writes every
    event into every caption)."""
    timelines = read_timelines(scenes_csv)
    classes = load_classes()
    items = []
    for clip in range(split.n_clips) if clips is None else clips:
        name = split.audio_paths[clip].name
        if name not in timelines:
            raise ValueError(f"{scenes_csv} has no scene for {name}: give the scenes CSV of the split's data set")
        events = timelines[name]["events"]
        for j in np.flatnonzero(split.caption_audio == clip)[:captions]:
            caption = split.captions[j]
            spans = [find_phrase(caption, classes[event["class"]]) for event in events]
            for event, span in zip(events, spans):
                if span is None:
                    raise ValueError(f"caption {caption!r} of {name} does not name its event {event['class']!r}")
                others = tuple(other for other in spans if other != span)
                items.append(EventItem(clip, caption, span, others, event["onset"],
                                       event["onset"] + event["duration"], event["class"]))
    return items


@dataclass
class EventShares:
    """Per item (rows): its clip; the share inside the event's span, at each level (items,
    levels), of the attention of the event's content words (`inside`) and of the content words
    naming the caption's other events (`others`, NaN for a scene of one event); the chance share
    (items,)."""

    clips: np.ndarray
    inside: np.ndarray
    others: np.ndarray
    chance: np.ndarray


def event_shares(model: RetrievalModel, items: list[EventItem],
                 audio_of: Callable[[int], torch.Tensor | HTSATOutput]) -> EventShares:
    """`inside_share` of the mean attention of each item's content words (`content_word_mask`) at
    every level, the same for its other events' words, and `chance_share`; audio_of(clip) gives
    a clip's audio for `word_time_attention`, read once per clip, and a clip's captions are
    encoded together."""
    by_clip: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        by_clip.setdefault(item.clip, []).append(i)
    inside, others = np.zeros((2, len(items), len(model.tha.audio_proj)))
    others[:] = np.nan
    for clip, rows in by_clip.items():
        captions = list(dict.fromkeys(items[i].caption for i in rows))
        maps = dict(zip(captions, word_time_attention(model, audio_of(clip), captions)))
        for i in rows:
            item, attention = items[i], maps[items[i].caption]
            for spans, out in (([item.span], inside), (item.others, others)):
                if not spans:  # no other event
                    continue
                words = content_word_mask(attention, item.caption, list(spans))
                if not words.any():
                    phrases = [item.caption[slice(*span)] for span in spans]
                    raise ValueError(f"no content word in {phrases} of {item.caption!r}")
                out[i] = [inside_share(level[words].mean(axis=0), item.start, item.end, attention.seconds)
                          for level in attention.levels]
    seconds = float(model.config.clip_seconds)
    return EventShares(np.array([item.clip for item in items], dtype=np.int64), inside, others,
                       np.array([chance_share(item.start, item.end, seconds) for item in items], dtype=np.float64))


def scene_means(clips: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-item values (items, ...) averaged over each scene's items, NaN left out (a scene with
    none gives NaN): (scenes, ...), scenes in the order of ``np.unique(clips)``."""
    index = np.unique(clips, return_inverse=True)[1].reshape(-1)
    flat = values.reshape(len(values), -1)
    known = ~np.isnan(flat)
    total, count = np.zeros((2, index.max() + 1, flat.shape[1]))
    np.add.at(total, index, np.where(known, flat, 0.0))
    np.add.at(count, index, known)
    with np.errstate(invalid="ignore"):
        return (total / count).reshape(-1, *values.shape[1:])
