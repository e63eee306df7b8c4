"""Scenes: a timeline of events over a background, mixed to a clip, and captions written from it.

:func:`plan_scene` places 1-3 events in time over a background; :func:`render_scene` mixes them;
:func:`scene_captions` writes 5 distinct captions from the timeline with ordering and overlap
words ("then", "while", "followed by", "in the distance", "... in the background").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from thadcr import portable
from thadcr.data.embedded.inventory import CLASSES_TABLE, PhraseSet
from thadcr.data.embedded.packages import EmbeddedDataError

N_CAPTIONS = 5
PEAK = 0.95  # scenes are scaled down when their peak exceeds this


@dataclass
class Event:
    """One sound event in a scene, in seconds from the clip start."""

    key: str
    cls: str
    onset: float
    duration: float
    gain_db: float
    distant: bool
    repeats: int = 1
    interval: float = 0.0  # seconds between repeats (steps, claps, drips)


@dataclass
class Scene:
    """Events sorted by onset, how each follows the previous one, and the background."""

    events: list[Event]
    relations: list[str]  # len(events) - 1 items: "sequence" (after the end) or "overlap"
    background: str | None = None  # recording key
    background_cls: str | None = None
    background_gain_db: float = 0.0
    background_offset: float = 0.0

    def signature(self) -> tuple:
        return tuple(e.cls for e in self.events), tuple(self.relations), tuple(e.distant for e in self.events), self.background_cls


def plan_scene(rng: np.random.Generator, pool: dict[str, list[str]], background_pool: dict[str, list[str]],
               lengths: dict[str, float], classes: dict[str, PhraseSet], clip_seconds: float) -> Scene:
    """A random scene timeline: 1-3 events of distinct classes over an optional background.

    Each next event either starts 0.1-0.5 s after every earlier event has ended ("sequence") or
    starts 25-60 % into the previous event ("overlap", p = 0.35). Events are cut to 80 % of the
    clip (one event) or 45 % (several); a timeline longer than 95 % of the clip is compressed
    (durations cut) to fit, then shifted by a random offset. An event is "distant" with
    p = 0.15 (-16..-12 dB and low-passed when rendered), else at -4..+2 dB; a background
    (p = 0.85) sits at -22..-12 dB.
    """
    names = sorted(pool)
    k = min(len(names), int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.30])))
    chosen = [names[i] for i in rng.choice(len(names), size=k, replace=False)]
    events, relations = [], []
    end = 0.0
    for i, cls in enumerate(chosen):
        key = pool[cls][int(rng.integers(len(pool[cls])))]
        repeats, interval = 1, 0.0
        if classes[cls].repeat > 1:
            repeats, interval = int(rng.integers(3, classes[cls].repeat + 1)), float(rng.uniform(0.35, 0.6))
        natural = (repeats - 1) * interval + lengths[key]
        duration = min(natural, clip_seconds * (0.8 if k == 1 else 0.45))
        if i == 0:
            onset = 0.0
        elif rng.random() < 0.35:
            relations.append("overlap")
            onset = events[-1].onset + float(rng.uniform(0.25, 0.6)) * events[-1].duration
        else:
            relations.append("sequence")
            onset = end + float(rng.uniform(0.1, 0.5))
        distant = bool(rng.random() < 0.15)
        gain = float(rng.uniform(-16.0, -12.0) if distant else rng.uniform(-4.0, 2.0))
        events.append(Event(key, cls, onset, duration, gain, distant, repeats, interval))
        end = max(end, onset + duration)
    scale = min(1.0, 0.95 * clip_seconds / end)
    shift = float(rng.uniform(0.0, clip_seconds - end * scale))
    for event in events:
        event.onset, event.duration = event.onset * scale + shift, event.duration * scale
    scene = Scene(events, relations)
    if background_pool and rng.random() < 0.85:
        cls = sorted(background_pool)[int(rng.integers(len(background_pool)))]
        key = background_pool[cls][int(rng.integers(len(background_pool[cls])))]
        scene.background, scene.background_cls = key, cls
        scene.background_gain_db = float(rng.uniform(-22.0, -12.0))
        scene.background_offset = float(rng.uniform(0.0, max(0.0, lengths[key] - clip_seconds)))
    return scene


def _event_wave(source: np.ndarray, event: Event, sample_rate: int) -> np.ndarray:
    """The event's samples: the recording (repeated for steps/claps), cut to its duration, faded."""
    n = max(1, int(round(event.duration * sample_rate)))
    wave = np.zeros(n, np.float32)
    for r in range(event.repeats):
        start = int(round(r * event.interval * sample_rate))
        if start >= n:
            break
        piece = source[: n - start]
        wave[start : start + len(piece)] += piece
    fade_in, fade_out = min(n, sample_rate // 200), min(n, sample_rate // 50)  # 5 ms, 20 ms
    wave[:fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)
    wave[n - fade_out :] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)
    if event.distant:
        wave = portable.lowpass_biquad(torch.from_numpy(wave), sample_rate, 1200.0).numpy()
    return wave * np.float32(10.0 ** (event.gain_db / 20.0))


def render_scene(scene: Scene, audio: dict[str, np.ndarray], sample_rate: int, clip_seconds: float) -> np.ndarray:
    """The scene mixed to a mono float32 clip of ``round(clip_seconds * sample_rate)`` samples.

    The background loops from its offset under the whole clip; events are added at their
    onsets; the mix is scaled down if its peak exceeds 0.95.
    """
    n = int(round(clip_seconds * sample_rate))
    mix = np.zeros(n, np.float32)
    if scene.background is not None:
        source = audio[scene.background]
        start = int(round(scene.background_offset * sample_rate))
        mix += source[(start + np.arange(n)) % len(source)] * np.float32(10.0 ** (scene.background_gain_db / 20.0))
    for event in scene.events:
        wave = _event_wave(audio[event.key], event, sample_rate)
        start = int(round(event.onset * sample_rate))
        piece = wave[: max(0, n - start)]
        mix[start : start + len(piece)] += piece
    peak = float(np.abs(mix).max())
    if peak > PEAK:
        mix *= np.float32(PEAK / peak)
    assert mix.shape == (n,) and mix.dtype == np.float32
    return mix


# Connectors between consecutive events: (text, form of the next mention), by chain style.
_SEQUENCE = {
    "clause": ((", then ", "clause"), (" and then ", "clause"), (", followed by ", "noun"), (" before ", "clause")),
    "noun": ((" followed by ", "noun"), (", then ", "noun"), (" and then ", "noun")),
}
_OVERLAP = {
    "clause": ((" while ", "ongoing"), (" as ", "clause")),
    "noun": ((" along with ", "noun"), (" while ", "ongoing"), (" mixed with ", "noun")),
}
_SINGLE = ("{clause}", "{ongoing}", "{noun}", "{noun} can be heard", "you can hear {noun}")
# Background attached after the events: (before, form, after); or before them (clause chains only).
_BACKGROUND_AFTER = ((", as ", "clause", " in the background"), (" with ", "noun", " in the background"),
                     (" over ", "noun", ""), (" while ", "ongoing", " in the background"))
_BACKGROUND_BEFORE = (("", "noun", " in the background as "), ("while ", "ongoing", ", "))


def _mention(phrases: PhraseSet, form: str, distant: bool, rng: np.random.Generator) -> str:
    options = getattr(phrases, form)
    return options[int(rng.integers(len(options)))] + (" in the distance" if distant else "")


def _pick(options: tuple, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def _chain(scene: Scene, classes: dict[str, PhraseSet], rng: np.random.Generator) -> tuple[str, str]:
    """The events in words, in time order, and the style used ("clause", "noun", "single")."""
    events = scene.events
    if len(events) == 1:
        event = events[0]
        if scene.background is None:
            template = _pick(_SINGLE, rng)
            form = re.search(r"\{(\w+)\}", template).group(1)
            return template.replace("{" + form + "}", _mention(classes[event.cls], form, event.distant, rng)), "single"
        form = _pick(("clause", "ongoing", "noun"), rng)
        return _mention(classes[event.cls], form, event.distant, rng), "clause" if form == "clause" else "noun"
    style = _pick(("clause", "noun", "first", "after"), rng)
    if style == "after" and (len(events) != 2 or scene.relations[0] != "sequence"):
        style = "clause"
    if style == "first" and scene.relations[0] != "sequence":
        style = "clause"
    if style == "after":  # reversed order, explicit: "B after A"
        first, second = (_mention(classes[e.cls], "clause", e.distant, rng) for e in events)
        return f"{second} after {first}", "clause"
    base = "noun" if style == "noun" else "clause"
    text = _mention(classes[events[0].cls], base, events[0].distant, rng)
    for event, relation in zip(events[1:], scene.relations):
        joiner, form = _pick((_SEQUENCE if relation == "sequence" else _OVERLAP)[base], rng)
        if style == "first" and relation == "sequence":
            joiner, form = ", then ", "clause"
        text += joiner + _mention(classes[event.cls], form, event.distant, rng)
    return ("first " + text if style == "first" else text), base


def scene_caption(scene: Scene, classes: dict[str, PhraseSet], rng: np.random.Generator) -> str:
    """One caption of the scene: every event in time order (or "B after A"), then the background."""
    text, style = _chain(scene, classes, rng)
    if scene.background_cls is not None:
        background = classes[scene.background_cls]
        if style == "clause" and rng.random() < 0.3:
            before, form, after = _pick(_BACKGROUND_BEFORE, rng)
            text = before + _mention(background, form, False, rng) + after + text
        else:
            before, form, after = _pick(_BACKGROUND_AFTER, rng)
            text = text + before + _mention(background, form, False, rng) + after
    return text[0].upper() + text[1:] + "."


def scene_captions(scene: Scene, classes: dict[str, PhraseSet], rng: np.random.Generator, n: int = N_CAPTIONS) -> list[str]:
    """``n`` distinct captions of the scene (distinct ignoring case)."""
    captions, seen = [], set()
    for _ in range(50 * n):
        caption = scene_caption(scene, classes, rng)
        if caption.lower() not in seen:
            seen.add(caption.lower())
            captions.append(caption)
            if len(captions) == n:
                return captions
    raise EmbeddedDataError(
        f"only {len(captions)} distinct captions for a scene of {[e.cls for e in scene.events]}: "
        f"add phrase variants for these classes in {CLASSES_TABLE.name}"
    )

