"""thadcr.run.attention: THA's attention of words over time, and its share inside an event's span,
checked against literal loops on tiny examples."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from thadcr.config import make_config
from thadcr.data.readers import Split
from thadcr.model.retrieval import build_model
from thadcr.run import attention as attention_module
from thadcr.run.attention import (
    EventItem,
    WordTimeAttention,
    chance_share,
    content_word_mask,
    event_items,
    event_shares,
    inside_share,
    scene_means,
    time_bins,
    word_time_attention,
)

SECONDS = 5.0


def literal_alpha(queries: np.ndarray, context: np.ndarray, lam: float) -> np.ndarray:
    """Eq. 1's weights with loops: cosine, hinge, normalised over the queries, softmax over the context."""
    M, N = len(queries), len(context)
    s = np.array([[queries[m] @ context[n] / (np.linalg.norm(queries[m]) * np.linalg.norm(context[n]))
                   for n in range(N)] for m in range(M)])
    hinge = np.maximum(s, 0.0)
    columns = [math.sqrt(sum(hinge[m, n] ** 2 for m in range(M))) for n in range(N)]
    s_bar = np.array([[hinge[m, n] / columns[n] if columns[n] > 0 else 0.0 for n in range(N)] for m in range(M)])
    alpha = np.zeros((M, N))
    for m in range(M):
        weights = [math.exp(lam * s_bar[m, n]) for n in range(N)]
        alpha[m] = [w / sum(weights) for w in weights]
    return alpha


def literal_time_bins(values: np.ndarray, freq_ratio: int) -> np.ndarray:
    """Token j of a G x G grid at (h, w) = divmod(j, G) goes to bin (h // (G / r)) * G + w."""
    G = math.isqrt(len(values))
    out = np.zeros((freq_ratio * G, *values.shape[1:]))
    for j in range(len(values)):
        h, w = divmod(j, G)
        out[(h // (G // freq_ratio)) * G + w] += values[j]
    return out


def literal_inside(attention: np.ndarray, start: float, end: float) -> float:
    """Each bin's mass times the part of the bin inside [start, end]."""
    width = SECONDS / len(attention)
    total = 0.0
    for b, mass in enumerate(attention):
        low, high = b * width, (b + 1) * width
        total += mass * max(0.0, min(high, end) - max(low, start)) / width
    return total


@pytest.mark.parametrize("M,r", [(64, 2), (16, 2), (16, 4), (4, 1)])
def test_time_bins_sums_each_time_column_like_the_loop(M, r):
    values = np.random.default_rng(0).random((M, 3))
    binned = time_bins(values, r)
    assert binned.shape == (r * math.isqrt(M), 3)
    np.testing.assert_allclose(binned, literal_time_bins(values, r), rtol=0, atol=1e-12)
    np.testing.assert_allclose(binned.sum(0), values.sum(0))
    with pytest.raises(ValueError, match="square grid"):
        time_bins(np.zeros((12, 2)), 2)


def test_inside_share_weighs_each_bin_by_its_part_inside_the_span():
    rng = np.random.default_rng(1)
    attention = rng.dirichlet(np.ones(16), size=(2, 3))  # (2, 3, bins)
    for start, end in [(0.4, 2.2), (1.25, 3.125), (-1.0, 0.1), (4.9, 7.0), (2.0, 2.0)]:
        got = inside_share(attention, start, end, SECONDS)
        assert got.shape == (2, 3)
        want = [[literal_inside(row, start, end) for row in block] for block in attention]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_one_hot_attention_on_the_span_gives_share_one_and_off_it_zero():
    bins = 8  # 0.625 s each
    for b in (2, 3, 4):  # inside [1.25, 3.125]
        assert inside_share(np.eye(bins)[b], 1.25, 3.125, SECONDS) == pytest.approx(1.0, abs=1e-12)
    assert inside_share(np.eye(bins)[6], 1.25, 3.125, SECONDS) == 0.0
    assert inside_share(np.eye(bins)[5], 1.25, 3.4375, SECONDS) == pytest.approx(0.5)  # half of bin 5


def test_uniform_attention_gives_the_chance_share():
    for bins in (8, 16, 32):
        uniform = np.full(bins, 1.0 / bins)
        for start, end in [(0.4, 2.2), (0.0, SECONDS), (-1.0, 0.7), (3.3, 9.0)]:
            chance = chance_share(start, end, SECONDS)
            assert chance == pytest.approx((min(end, SECONDS) - max(start, 0.0)) / SECONDS)
            assert inside_share(uniform, start, end, SECONDS) == pytest.approx(chance, abs=1e-12)
    assert chance_share(6.0, 7.0, SECONDS) == 0.0


def test_content_word_mask_keeps_the_content_words_of_the_spans_and_their_pieces():
    caption = "a dog barks then someone plays a violin"
    # word pieces with their character offsets; "barks" is split in two
    pieces = [("a", (0, 1)), ("dog", (2, 5)), ("bark", (6, 10)), ("##s", (10, 11)), ("then", (12, 16)),
              ("someone", (17, 24)), ("plays", (25, 30)), ("a", (31, 32)), ("violin", (33, 39))]
    attention = WordTimeAttention([p for p, _ in pieces], [o for _, o in pieces], [], SECONDS)
    dog = content_word_mask(attention, caption, [(0, 11)])
    assert dog.tolist() == [False, True, True, True, False, False, False, False, False]
    violin = content_word_mask(attention, caption, [(17, 39)])  # "someone" and "a" are function words
    assert violin.tolist() == [False] * 6 + [True, False, True]
    both = content_word_mask(attention, caption, [(0, 11), (17, 39)])
    assert both.tolist() == (dog | violin).tolist()


@pytest.fixture(scope="module")
def tiny_model():
    config = make_config("tiny", {"variant": "THA+DP", "joint_dim": 16, "device": "cpu", "clip_seconds": SECONDS})
    torch.manual_seed(0)
    return build_model(config, load_weights=False).eval()


def test_word_time_attention_is_eq1_over_the_valid_words_binned_in_time(tiny_model):
    model = tiny_model
    logmel = torch.randn(1, 101, 64, generator=torch.Generator().manual_seed(0))
    captions = ["a dog barks then a bell rings far away in the distance", "rain"]
    maps = word_time_attention(model, logmel, captions)
    assert len(maps) == 2
    with torch.no_grad():
        audio = model.tha.project_audio(model.audio_encoder(logmel).stages)
    r = model.audio_encoder.config.freq_ratio
    for caption, found in zip(captions, maps):
        ids = model.text_encoder.tokenize([caption])["input_ids"][0]
        pieces = model.text_encoder.tokenizer.convert_ids_to_tokens(ids)[1:-1]  # no [CLS], [SEP], no padding
        assert found.words == pieces and found.seconds == SECONDS
        assert [caption[s:e].lower() for s, e in found.offsets] == [p.removeprefix("##") for p in pieces]
        with torch.no_grad():
            text = model.text_encoder([caption])
            words = model.tha.project_text(text.levels)
        assert [level.shape for level in found.levels] == [(len(pieces), 16), (len(pieces), 16), (len(pieces), 8)]
        for level, a, t in zip(found.levels, audio, words):
            alpha = literal_alpha(t[0][text.mask[0]].double().numpy(), a[0].double().numpy(), model.tha.lam)
            want = literal_time_bins(alpha.T, r).T  # (words, bins)
            np.testing.assert_allclose(level, want, rtol=0, atol=1e-5)  # batch of 2 vs alone: float32 noise
            np.testing.assert_allclose(level.sum(axis=1), 1.0, atol=1e-12)
    alone = word_time_attention(model, logmel, captions[1:])[0]  # padded in the batch, not alone
    assert alone.words == maps[1].words
    for level, padded in zip(alone.levels, maps[1].levels):
        np.testing.assert_allclose(level, padded, rtol=0, atol=1e-5)


def test_word_time_attention_needs_tha(tiny_model):
    config = make_config("tiny", {"variant": "DCR", "joint_dim": 16, "device": "cpu"})
    with pytest.raises(ValueError, match="has no THA"):
        word_time_attention(build_model(config, load_weights=False), torch.zeros(1, 101, 64), ["a dog"])


def write_scenes(folder: Path, timelines: dict[str, list[tuple[str, float, float]]]) -> Path:
    """A scenes CSV in the embedded data's format: file name -> [(class, onset, duration)]."""
    path = folder / "scenes_evaluation.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "timeline", "sources", "licences"])
        for name, events in timelines.items():
            timeline = {"events": [{"class": c, "onset": o, "duration": d} for c, o, d in events],
                        "relations": [], "background": {"class": "water"}}
            writer.writerow([name, json.dumps(timeline), "", ""])
    return path


def small_split(captions: list[tuple[int, str]]) -> Split:
    return Split("test", [Path("evaluation_00001.wav"), Path("evaluation_00002.wav")], ["1", "2"],
                 [c for _, c in captions], np.array([clip for clip, _ in captions]))


def test_event_items_find_each_events_phrase_and_the_others(tmp_path):
    scenes = write_scenes(tmp_path, {"evaluation_00001.wav": [("dog", 0.5, 1.0), ("bell", 2.0, 1.5)],
                                     "evaluation_00002.wav": [("ship_horn", 1.0, 2.0)]})
    split = small_split([(0, "a dog barks then a bell tolls over running water"),
                         (0, "the toll of a bell after a dog barking"),
                         (1, "a ships horn blowing in the distance")])
    items = event_items(split, scenes)
    assert [(i.clip, i.cls, i.caption[slice(*i.span)], i.start, i.end) for i in items] == [
        (0, "dog", "a dog barks", 0.5, 1.5), (0, "bell", "a bell tolls", 2.0, 3.5),
        (0, "dog", "a dog barking", 0.5, 1.5), (0, "bell", "the toll of a bell", 2.0, 3.5),
        (1, "ship_horn", "a ships horn blowing", 1.0, 3.0)]  # the caption normalised "ship's"
    assert items[0].others == (items[1].span,) and items[1].others == (items[0].span,)
    assert items[4].others == ()
    assert [i.clip for i in event_items(split, scenes, clips=[1])] == [1]
    assert len(event_items(split, scenes, captions=1)) == 3
    wrong = small_split([(0, "a cat meows"), (1, "a ships horn blowing")])
    with pytest.raises(ValueError, match="does not name its event 'dog'"):
        event_items(wrong, scenes)


def test_event_shares_measure_the_event_words_against_chance(monkeypatch, tiny_model):
    """With attention set by hand: the event's words all on one bin inside its span, every other
    word on a bin outside it; padding never enters (the maps hold the valid words only)."""
    caption = "a dog barks then a bell tolls"
    offsets = [(0, 1), (2, 5), (6, 11), (12, 16), (17, 18), (19, 23), (24, 29)]
    bins = [16, 16, 8]

    def fake(model, audio, captions):
        assert captions == [caption] and audio == "audio of 0"
        levels = []
        for n in bins:  # dog, barks at 1.0 s; every other word at 4.0 s
            maps = np.zeros((len(offsets), n))
            maps[:, int(4.0 / SECONDS * n)] = 1.0
            maps[1:3] = 0.0
            maps[1:3, int(1.0 / SECONDS * n)] = 1.0
            levels.append(maps)
        return [WordTimeAttention(caption.split(), offsets, levels, SECONDS)]

    monkeypatch.setattr(attention_module, "word_time_attention", fake)
    items = [EventItem(0, caption, (0, 11), ((17, 29),), 0.5, 1.5, "dog"),
             EventItem(0, caption, (17, 29), ((0, 11),), 3.5, 4.5, "bell")]
    shares = event_shares(tiny_model, items, lambda clip: f"audio of {clip}")
    np.testing.assert_allclose(shares.inside, 1.0)
    np.testing.assert_allclose(shares.others, 0.0)
    np.testing.assert_allclose(shares.chance, [0.2, 0.2])
    assert shares.clips.tolist() == [0, 0]
    alone = [EventItem(0, caption, (0, 11), (), 0.5, 1.5, "dog")]  # a caption naming one event
    single = event_shares(tiny_model, alone, lambda clip: f"audio of {clip}")
    assert np.isnan(single.others).all() and single.inside.shape == (1, 3)


def test_scene_means_average_each_scenes_items_leaving_nan_out():
    clips = np.array([4, 4, 9, 2, 9, 9])
    values = np.array([[1.0, np.nan], [3.0, np.nan], [0.0, 1.0], [5.0, np.nan], [2.0, np.nan], [4.0, 3.0]])
    means = scene_means(clips, values)
    want = np.full((3, 2), np.nan)
    for row, clip in enumerate(sorted(set(clips))):
        for column in range(2):
            known = [v for c, v in zip(clips, values[:, column]) if c == clip and not np.isnan(v)]
            if known:
                want[row, column] = sum(known) / len(known)
    np.testing.assert_allclose(means, want)
    assert scene_means(clips, values[:, 0]).shape == (3,)


def test_the_share_table_averages_scenes_first_and_the_sentence_follows_its_intervals():
    from thadcr.interfaces.notebook.method import attention_share_sentence, attention_share_table, mean_interval
    from thadcr.run.attention import EventShares

    rng = np.random.default_rng(0)
    clips = np.repeat(np.arange(40), 2)  # 40 scenes of two events each
    chance = np.full(80, 0.3)
    # level 1 well above chance, level 2 at chance, level 3 well below
    inside = np.stack([0.6 + 0.05 * rng.standard_normal(80), 0.3 + 0.05 * rng.standard_normal(80),
                       0.1 + 0.05 * rng.standard_normal(80)], axis=1)
    others = np.full((80, 3), 0.3)
    others[::2] = np.nan  # half the items name no other event
    shares = EventShares(clips, inside, others, chance)
    table = attention_share_table(shares, ["level 1", "level 2", "level 3"])
    per_scene = (inside[0::2] + inside[1::2]) / 2 - 0.3  # (scenes, levels)
    for level, row in zip(range(3), table.itertuples()):
        mean, low, high, n = mean_interval(per_scene[:, level])
        half = 1.959963984540054 * per_scene[:, level].std(ddof=1) / math.sqrt(40)
        assert (n, low, high) == (40, pytest.approx(mean - half), pytest.approx(mean + half))
        assert row.above_chance == pytest.approx(100 * mean) and row.chance == pytest.approx(30.0)
        assert row.scenes == 40 and row.several == 40
    sentence = attention_share_sentence(table, "a model", 80)
    assert "over 40 test scenes (80 named events)" in sentence
    assert "above chance at level 1; below chance at level 3; not distinguishable from chance at level 2" in sentence
    assert "At level 1 the attention follows what the words name" in sentence
    assert "At levels 2 and 3 an event's words look at its span no more" in sentence
    alone = EventShares(clips, inside, np.full((80, 3), np.nan), chance)
    table = attention_share_table(alone, ["level 1", "level 2", "level 3"])
    assert "other events" not in attention_share_sentence(table, "a model", 80)
