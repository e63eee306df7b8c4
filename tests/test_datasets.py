"""thadcr.data.readers, check, logmel and datasets: Clotho/AudioCaps readers, missing audio,
check_dataset, log-mel cache, frame cropping and the torch datasets. Fixtures are tiny files written with soundfile."""

import csv
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from synthetic import write_clotho
from thadcr.data import logmel as logmel_module
from thadcr import files
from thadcr.data.audio_io import AudioError, load_audio, show_path
from thadcr.interfaces.cli import main
from thadcr.config import make_config, parse_override
from thadcr.data.check import check_dataset
from thadcr.data.datasets import PAD_DB, CaptionDataset, ClipDataset, clip_frames, collate, crop_frames, spec_augment
from thadcr.data.logmel import LogMelCache
from thadcr.data.readers import DatasetError, Problem, Split, detect_layout, load_split, normalise_caption

RATE = 32000
HOP = 320


# ----------------------------------------------------------------------------- fixtures
def write_wav(path, seconds=0.2, rate=RATE, seed=0, amp=0.3, channels=1):
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    data = amp * rng.uniform(-1, 1, size=(n, channels) if channels > 1 else n)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype="FLOAT" if path.suffix == ".wav" else None)  # FLAC/OGG/MP3: their default
    return path


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


CLOTHO_HEADER = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
AUDIOCAPS_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]


def clotho_root(tmp_path, split_rows, audio=True):
    """A Clotho-layout folder; ``split_rows`` maps "development" etc. to CSV rows; every clip
    gets its own noise (no two files share their audio)."""
    seed = 0
    for folder, rows in split_rows.items():
        write_csv(tmp_path / f"clotho_captions_{folder}.csv", CLOTHO_HEADER, rows)
        if audio:
            for row in rows:
                write_wav(tmp_path / folder / row[0], seed=seed)
                seed += 1
    return tmp_path


class FakeLogMel(nn.Module):
    """Stand-in front end (B, samples) -> (B, samples // hop + 1, 64), counting its calls."""

    def __init__(self, hop=HOP, n_mels=64):
        super().__init__()
        self.hop, self.calls, self.sample_rate = hop, 0, RATE
        self.settings = {"n_mels": n_mels, "hop": hop}
        self.register_buffer("gain", torch.linspace(0.5, 2.0, n_mels))

    def forward(self, wave):
        self.calls += 1
        frames = wave.shape[1] // self.hop + 1
        padded = nn.functional.pad(wave, (0, frames * self.hop - wave.shape[1]))
        power = padded.reshape(wave.shape[0], frames, self.hop).pow(2).mean(-1, keepdim=True)  # (B, T, 1)
        return 10 * torch.log10((power * self.gain).clamp_min(1e-10))  # (B, T, 64)


# ----------------------------------------------------------------------------- captions
def test_normalise_caption():
    assert normalise_caption("A Dog's  BARK, loud!\tThen: silence.") == "a dogs bark loud then silence"
    assert normalise_caption("High-pitched (whistle)") == "high pitched whistle"
    assert normalise_caption("café — “quoted”") == "café quoted"


def test_empty_caption_names_file_and_row():
    with pytest.raises(DatasetError, match=r"'train.csv' row 7: caption '\.\.\. !' is empty"):
        normalise_caption("... !", "train.csv", 7)


# ----------------------------------------------------------------------------- Clotho
def test_clotho_layout_with_empty_caption_cells(tmp_path):
    root = clotho_root(tmp_path, {
        "development": [
            ["a.wav", "One.", "Two!", "Three", "Four", "Five"],
            ["b.wav", "Only caption", "", "", "", ""],
            ["c.wav", "", "second cell", "", " ", "fifth"],
        ],
    })
    split = load_split(root, "clotho", "train")
    assert split.name == "train" and split.clip_ids == ["a.wav", "b.wav", "c.wav"]
    assert split.audio_paths == [root / "development" / n for n in ("a.wav", "b.wav", "c.wav")]
    assert split.captions == ["one", "two", "three", "four", "five", "only caption", "second cell", "fifth"]
    assert split.caption_audio.tolist() == [0, 0, 0, 0, 0, 1, 2, 2] and split.caption_audio.dtype == np.int64
    assert split.missing == []


def test_clotho_row_without_any_caption_is_an_error(tmp_path):
    root = clotho_root(tmp_path, {"validation": [["a.wav", "x", "", "", "", ""], ["b.wav", "", "", "", "", ""]]})
    with pytest.raises(DatasetError, match=r"clotho_captions_validation.csv' row 2: 'b.wav' has no caption"):
        load_split(root, "clotho", "val")


def test_clotho_caption_empty_after_normalisation(tmp_path):
    root = clotho_root(tmp_path, {"evaluation": [["a.wav", "fine", "?!", "", "", ""]]})
    with pytest.raises(DatasetError, match=r"row 1: caption_2 '\?!' is empty after normalisation"):
        load_split(root, "clotho", "test")


@pytest.mark.parametrize("layout", ["clotho", "audiocaps"])
def test_csv_without_needed_columns(tmp_path, layout):
    name = "clotho_captions_development.csv" if layout == "clotho" else "train.csv"
    write_csv(tmp_path / name, ["file_name", "caption_1", "youtube_id", "caption"], [["a", "b", "c", "d"]])
    expected = "caption_2, caption_3, caption_4, caption_5" if layout == "clotho" else "audiocap_id, start_time"
    with pytest.raises(DatasetError, match=rf"{name}': missing column\(s\) {expected}"):
        load_split(tmp_path, layout, "train")


def test_unknown_split_and_layout(tmp_path):
    with pytest.raises(DatasetError, match="split 'dev'"):
        load_split(tmp_path, "clotho", "dev")
    with pytest.raises(DatasetError, match="layout 'wavcaps'"):
        load_split(tmp_path, "wavcaps", "train")


# ----------------------------------------------------------------------------- AudioCaps
def audiocaps_rows():
    """Two clips with five captions each, interleaved, second clip first."""
    rows = []
    for k in range(5):
        rows.append([100 + k, "yidB", "30", f"B caption {k}."])
        rows.append([200 + k, "yidA", "0", f"A caption {k}"])
    return rows


@pytest.mark.parametrize("audio_sub", ["audio/test", "test"])
def test_audiocaps_groups_five_captions_per_youtube_id(tmp_path, audio_sub):
    write_csv(tmp_path / "test.csv", AUDIOCAPS_HEADER, audiocaps_rows())
    write_wav(tmp_path / audio_sub / "yidB_30.wav")
    write_wav(tmp_path / audio_sub / "yidA_0.wav", seed=1)
    split = load_split(tmp_path, "audiocaps", "test")
    assert split.clip_ids == ["yidB", "yidA"]  # first-appearance order
    assert split.audio_paths == [tmp_path / audio_sub / "yidB_30.wav", tmp_path / audio_sub / "yidA_0.wav"]
    # literal grouping: clip by clip (first-appearance order), each clip's rows in CSV order
    expected, owner = [], []
    for index, yid in enumerate(["yidB", "yidA"]):
        for row in audiocaps_rows():
            if row[1] == yid:
                expected.append(row[3].lower().rstrip("."))
                owner.append(index)
    assert split.captions == expected and split.caption_audio.tolist() == owner
    assert np.bincount(split.caption_audio).tolist() == [5, 5]


def test_audiocaps_pattern_is_configurable(tmp_path):
    write_csv(tmp_path / "val.csv", AUDIOCAPS_HEADER, [[1, "yid", "10", "a cat"]])
    write_wav(tmp_path / "audio" / "val" / "yid.wav")
    split = load_split(tmp_path, "audiocaps", "val", audio_pattern="{youtube_id}.wav")
    assert split.audio_paths == [tmp_path / "audio" / "val" / "yid.wav"]
    with pytest.raises(DatasetError, match=r"audio_pattern '\{ytid\}.wav' cannot be filled from row 1"):
        load_split(tmp_path, "audiocaps", "val", audio_pattern="{ytid}.wav")


def test_audiocaps_conflicting_start_times(tmp_path):
    write_csv(tmp_path / "train.csv", AUDIOCAPS_HEADER, [[1, "yid", "0", "a"], [2, "yid", "30", "b"]])
    with pytest.raises(DatasetError, match=r"train.csv' row 2: youtube_id 'yid' names audio 'yid_30.wav'"):
        load_split(tmp_path, "audiocaps", "train")


def test_audiocaps_empty_caption_and_duplicate_id(tmp_path):
    write_csv(tmp_path / "train.csv", AUDIOCAPS_HEADER, [[1, "yid", "0", "a dog"], [2, "yid2", "0", "  "]])
    with pytest.raises(DatasetError, match=r"train.csv' row 2: caption '  ' is empty after normalisation"):
        load_split(tmp_path, "audiocaps", "train")
    write_csv(tmp_path / "train.csv", AUDIOCAPS_HEADER, [[1, "yid", "0", "a dog"], [1, "yid2", "0", "a cat"]])
    with pytest.raises(DatasetError, match=r"train.csv' row 2: duplicate audiocap_id '1' \(first in row 1\)"):
        load_split(tmp_path, "audiocaps", "train")


# ----------------------------------------------------------------------------- published names, any format
PUBLISHED_NAMES = [  # as Clotho publishes them: kept byte for byte
    " leading space.wav", "double  space.wav", "trailing space .wav", "café, “quoted”.wav", "cafe\u0301.wav",
]


def test_published_file_names_and_captions_kept(tmp_path):
    rows = [[name, f'A caption, with "quotes" for {i}', "Ünïcödé Straße\nover two lines", "", "", ""]
            for i, name in enumerate(PUBLISHED_NAMES)]
    root = clotho_root(tmp_path, {"development": rows})
    split = load_split(root, "clotho", "train")
    assert split.missing == [] and split.clip_ids == PUBLISHED_NAMES  # not stripped, collapsed or normalised
    assert split.audio_paths == [root / "development" / name for name in PUBLISHED_NAMES]
    assert split.captions[:2] == ["a caption with quotes for 0", "ünïcödé straße over two lines"]
    assert not [p for p in check_dataset(root) if p.severity == "error"]


def test_csv_header_bom_and_spaces_are_dropped_but_cells_kept(tmp_path):
    path = tmp_path / "clotho_captions_development.csv"
    (tmp_path / "development").mkdir()
    write_wav(tmp_path / "development" / "  a.wav")
    path.write_text("\ufeff file_name , caption_1,caption_2,caption_3,caption_4,caption_5\n  a.wav,x,,,,\n",
                    encoding="utf-8")
    assert load_split(tmp_path, "clotho", "train").clip_ids == ["  a.wav"]


def test_csv_row_longer_than_its_header_is_an_error(tmp_path):
    root = clotho_root(tmp_path, {"development": [["a.wav", "one", "", "", "", "", ""],  # empty extra cell: fine
                                                  ["b.wav", "a dog", " barks", "", "", "", "spilled over"]]})
    expected = r"development.csv' row 2: 1 cell\(s\) more than the header \('spilled over'\)"
    with pytest.raises(DatasetError, match=expected):
        load_split(root, "clotho", "train")


def test_a_near_miss_is_named_not_guessed(tmp_path):
    root = clotho_root(tmp_path, {"development": [["ok.wav", "x", "", "", "", ""]]})
    write_csv(root / "clotho_captions_development.csv", CLOTHO_HEADER,
              [["ok.wav", "x", "", "", "", ""], ["rain  on a roof.wav", "y", "", "", "", ""]])
    write_wav(root / "development" / "Rain on a roof.flac", seed=3)
    with pytest.raises(DatasetError) as info:
        load_split(root, "clotho", "train")
    text = str(info.value)
    assert f"{show_path(root / 'development' / 'rain  on a roof.wav')}: file not found" in text
    assert "'Rain on a roof.flac' differs only in spaces, case or Unicode form" in text


def test_audio_found_whatever_its_extension(tmp_path):
    on_disk = {"a": ".flac", "b": ".ogg", "c": ".mp3", "d": ".wav", "e": ".WAV", "f": ".Flac", "g": ".wav"}
    rows = [[f"{stem}.wav", f"caption {stem}", "", "", "", ""] for stem in on_disk]
    rows[-1][0] = "g.flac"  # listed as FLAC, downloaded as WAV
    root = clotho_root(tmp_path, {"development": rows}, audio=False)
    (root / "development").mkdir()
    for i, (stem, suffix) in enumerate(on_disk.items()):
        tone = (0.3 * np.sin(np.arange(3200) * 0.05 * (i + 1))).astype(np.float32)
        sf.write(root / "development" / f"{stem}{suffix}", tone, 16000, format=suffix[1:].upper())
    (root / "development" / "d.txt").write_text("notes")  # not an audio extension: never a candidate
    split = load_split(root, "clotho", "train")
    assert split.clip_ids == [row[0] for row in rows] and split.missing == []
    assert [p.name for p in split.audio_paths] == [stem + suffix for stem, suffix in on_disk.items()]
    for path in split.audio_paths:
        assert abs(load_audio(path, RATE).shape[0] - 6400) <= 1200  # read, whatever the format
    problems = check_dataset(root)
    assert not [p for p in problems if p.severity == "error"] and not any("not listed" in p.what for p in problems)
    audiocaps = tmp_path / "ac"  # the pattern's ".wav" names, downloaded as FLAC and MP3
    write_csv(audiocaps / "test.csv", AUDIOCAPS_HEADER, [[1, "yidA", "0", "a"], [2, "yidB", "30", "b"]])
    (audiocaps / "test").mkdir()
    sf.write(audiocaps / "test" / "yidA_0.FLAC", np.full(160, 0.1), RATE, format="FLAC")
    sf.write(audiocaps / "test" / "yidB_30.mp3", np.full(1600, 0.1), RATE)
    split = load_split(audiocaps, "audiocaps", "test")
    assert [p.name for p in split.audio_paths] == ["yidA_0.FLAC", "yidB_30.mp3"] and split.missing == []


def test_two_candidates_for_one_clip_is_an_error_naming_both(tmp_path):
    root = clotho_root(tmp_path, {"development": [["x.wav", "a", "", "", "", ""], ["y.wav", "b", "", "", "", ""]]},
                       audio=False)
    write_wav(root / "development" / "x.flac")
    write_wav(root / "development" / "x.ogg", seed=1)
    for suffix in (".wav", ".flac"):  # the listed name itself exists: no doubt
        write_wav(root / "development" / f"y{suffix}", seed=2)
    with pytest.raises(DatasetError, match=r"row 1: 'x.wav' matches 2 audio files: 'x.flac', 'x.ogg'"):
        load_split(root, "clotho", "train")
    (error,) = [str(p) for p in check_dataset(root) if p.severity == "error"]
    assert "'x.wav' matches 2 audio files: 'x.flac', 'x.ogg'" in error
    (root / "development" / "x.ogg").unlink()
    assert [p.name for p in load_split(root, "clotho", "train").audio_paths] == ["x.flac", "y.wav"]


def test_audio_folder_listed_once_not_globbed_per_clip(tmp_path, monkeypatch):
    rows = [[f"clip {i:02d}.wav", "a caption", "", "", "", ""] for i in range(30)]
    root = clotho_root(tmp_path, {"development": rows}, audio=False)
    for i in range(30):
        write_wav(root / "development" / f"clip {i:02d}{'.flac' if i % 2 else '.wav'}", seconds=0.01, seed=i)
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path=".": listed.append(Path(path)) or real_scandir(path))

    def forbidden(*args, **kwargs):
        raise AssertionError("a per-clip folder search")

    for name in ("glob", "rglob", "iterdir"):
        monkeypatch.setattr(Path, name, forbidden)
    monkeypatch.setattr(os, "listdir", forbidden)
    split = load_split(root, "clotho", "train")
    assert split.n_clips == 30 and listed == [root / "development"]


def test_synthetic_set_with_published_names_mixed_formats_and_rates(tmp_path):
    root = write_clotho(tmp_path / "syn", counts=(8, 4, 4), seconds=0.5, sr=(16000, 22050, 44100, 32000),
                        formats=(".wav", ".flac", ".ogg", ".mp3"), published_names=True)
    train = load_split(root, "clotho", "train")
    assert train.n_clips == 8 and train.missing == [] and any(n.startswith(" ") for n in train.clip_ids)
    assert {p.suffix for p in train.audio_paths} == {".wav", ".flac", ".ogg", ".mp3"}
    assert all(n.endswith(".wav") for n in train.clip_ids)  # the CSV lists WAV names, as Clotho does
    assert {sf.info(str(p)).samplerate for p in train.audio_paths} == {16000, 22050, 44100, 32000}
    problems = check_dataset(root)
    assert problems.counts() == {"error": 0, "warning": 0, "info": 3}, [str(p) for p in problems]


# ----------------------------------------------------------------------------- missing audio
def _four_clips(tmp_path):
    rows = [[f"c{i}.wav", f"caption {i}", f"other {i}", "", "", ""] for i in range(4)]
    root = clotho_root(tmp_path, {"development": rows})
    (root / "development" / "c1.wav").unlink()  # missing
    (root / "development" / "c3.wav").write_text("not audio")  # unreadable
    return root


def test_missing_share_over_threshold_raises(tmp_path):
    root = _four_clips(tmp_path)
    with pytest.raises(DatasetError) as info:
        load_split(root, "clotho", "train", max_missing_share=0.25)
    text = str(info.value)
    assert "2 of 4 audio files (50.00%)" in text and "max_missing_share=0.25" in text
    assert "c1.wav': file not found" in text and "c3.wav': unreadable" in text
    assert "put the audio files under" in text and "pass max_missing_share=0.5 " in text


def test_missing_share_under_threshold_excludes_and_warns_in_one_line(tmp_path, caplog):
    root = _four_clips(tmp_path)
    with caplog.at_level(logging.WARNING, logger="thadcr.data.readers"):
        split = load_split(root, "clotho", "train", max_missing_share=0.5)
    assert split.clip_ids == ["c0.wav", "c2.wav"]
    assert split.captions == ["caption 0", "other 0", "caption 2", "other 2"]
    assert split.caption_audio.tolist() == [0, 0, 1, 1]
    dev = root / "development"
    assert len(split.missing) == 2 and split.missing[0] == f"{show_path(dev / 'c1.wav')}: file not found"
    assert split.missing[1].startswith(f"{show_path(dev / 'c3.wav')}: unreadable (")
    (record,) = caplog.records  # one line for the split: what it lost, in clips and captions
    assert "\n" not in record.getMessage()
    assert "train split of" in record.getMessage() and "left out 2 of 4 clips (50.00%) and 4 of 8 captions" in (
        record.getMessage()) and show_path(dev / "c1.wav") in record.getMessage()


def test_missing_share_suggestion_rounds_up_and_following_it_works(tmp_path):
    rows = [[f"c{i}.wav", f"caption {i}", "", "", "", ""] for i in range(3)]
    root = clotho_root(tmp_path, {"development": rows})
    (root / "development" / "c1.wav").unlink()  # 1 of 3: 0.33333...
    with pytest.raises(DatasetError) as info:
        load_split(root, "clotho", "train", max_missing_share=0.2)
    suggested = re.search(r"pass (max_missing_share=\S+) ", str(info.value)).group(1)
    assert suggested == "max_missing_share=0.3334"  # rounded up, not down to 0.3333
    key, value = parse_override(suggested)  # as `thadcr train ... max_missing_share=0.3334` reads it
    split = load_split(root, "clotho", "train", max_missing_share=value)
    assert key == "max_missing_share" and split.clip_ids == ["c0.wav", "c2.wav"]


def test_paper_audiocaps_profile_accepts_a_typical_download(tmp_path, caplog):
    """The paper's own counts are what a download keeps (49,838 / 495 / 975 rows -> 49,274 /
    494 / 957 clips); the profile must accept such losses and still refuse a wrong folder."""
    config = make_config("paper-audiocaps")
    for rows, kept in ((49_838, 49_274), (495, 494), (975, 957)):
        assert (rows - kept) / rows <= config.max_missing_share
    rows = [[i, f"yid{i:02d}", "30", f"caption {i}"] for i in range(55)]
    write_csv(tmp_path / "test.csv", AUDIOCAPS_HEADER, rows)
    for i in range(55):
        if i != 7:  # 1 of 55 gone: 1.8 %, as the paper's test split
            write_wav(tmp_path / "audio" / "test" / f"yid{i:02d}_30.wav", seconds=0.01, seed=i)
    with caplog.at_level(logging.WARNING, logger="thadcr.data.readers"):
        split = load_split(tmp_path, config.layout, "test", config.audio_pattern, config.max_missing_share)
    assert split.n_clips == 54 and "yid07" not in split.clip_ids and len(split.missing) == 1
    assert "left out 1 of 55 clips (1.82%) and 1 of 55 captions" in caplog.text
    with pytest.raises(DatasetError, match="55 of 55 audio files"):  # a wrong audio_pattern is still refused
        load_split(tmp_path, config.layout, "test", "{youtube_id}.wav", config.max_missing_share)
    assert make_config("paper-clotho").max_missing_share == 0.0  # the Clotho archives are complete


def test_many_missing_files_listed_up_to_twenty(tmp_path):
    rows = [[f"m{i:02d}.wav", "a caption", "", "", "", ""] for i in range(25)]
    write_csv(tmp_path / "clotho_captions_development.csv", CLOTHO_HEADER, rows)
    with pytest.raises(DatasetError) as info:
        load_split(tmp_path, "clotho", "train")
    text = str(info.value)
    assert "25 of 25 audio files" in text and "m19.wav" in text and "m20.wav" not in text
    assert "... and 5 more" in text


# ----------------------------------------------------------------------------- check_dataset
def test_check_dataset_lines(tmp_path):
    root = clotho_root(tmp_path, {
        "development": [
            ["ok.wav", "a dog barks", "", "", "", ""],
            ["nan.wav", "rain", "", "", "", ""],
            ["quiet.wav", "nothing", "", "", "", ""],
            ["ok.wav", "duplicate", "", "", "", ""],
            ["gone.wav", "???", "", "", "", ""],
            ["hifi.wav", "music", "", "", "", ""],
        ],
        "validation": [["v.wav", "wind", "", "", "", ""]],
    }, audio=False)
    dev = root / "development"
    write_wav(dev / "ok.wav")
    bad = np.full(100, 0.1, dtype=np.float32)
    bad[3] = np.nan
    sf.write(dev / "nan.wav", bad, RATE, subtype="FLOAT")
    sf.write(dev / "quiet.wav", np.zeros(100), RATE)
    write_wav(dev / "hifi.wav", rate=44100, channels=2)
    write_wav(dev / "stray.wav")
    write_wav(root / "validation" / "v.wav", seed=9)

    problems = check_dataset(root)  # layout auto-detected
    lines = [str(p) for p in problems]
    assert all("\n" not in line for line in lines)
    by_severity = {s: [str(p) for p in problems if p.severity == s] for s in ("error", "warning", "info")}
    errors, warnings, infos = by_severity["error"], by_severity["warning"], by_severity["info"]
    assert any("clotho_captions_development.csv' row 4: duplicate file_name 'ok.wav' (first in row 1)" in e
               for e in errors)
    assert any("row 5: caption_1 '???' is empty after normalisation" in e for e in errors)
    assert any("nan.wav': 1 NaN/Inf sample(s) (listed in 'clotho_captions_development.csv' row 2)" in e
               for e in errors)
    assert any("gone.wav': file not found (listed in 'clotho_captions_development.csv' row 5)" in e for e in errors)
    assert len(errors) == 4
    assert any("quiet.wav': silent" in w for w in warnings)
    assert any("1 audio file(s) not listed" in w and "'stray.wav'" in w for w in warnings)
    assert any("clotho_captions_evaluation.csv': no test split" in w for w in warnings)
    assert len(warnings) == 3  # v.wav has audio of its own: no overlap
    assert any("train: 5 clips, sample rates 32000 Hz x 2, 44100 Hz x 1; 1 channel(s) x 2, 2 channel(s) x 1; 1 silent"
               in i for i in infos)
    assert all(line.startswith(("ERROR: ", "WARNING: ", "INFO: ")) for line in lines)


def test_check_dataset_missing_audio_and_columns(tmp_path):
    write_csv(tmp_path / "train.csv", AUDIOCAPS_HEADER, [[1, "yid", "0", "a dog"]])
    write_csv(tmp_path / "val.csv", ["youtube_id", "caption"], [["yid", "x"]])
    (tmp_path / "test.csv").write_bytes(b"")
    problems = check_dataset(tmp_path)
    errors = [str(p) for p in problems if p.severity == "error"]
    assert any(f"yid_0.wav': file not found (there is no folder {show_path(tmp_path / 'audio' / 'train')}) "
               "(listed in 'train.csv' row 1)" in e for e in errors)
    assert any(f"{show_path(tmp_path / 'val.csv')}: missing column(s) audiocap_id, start_time" in e for e in errors)
    assert any("test.csv': missing column(s) audiocap_id, youtube_id, start_time, caption" in e for e in errors)


def test_check_dataset_clean_and_layout_detection(tmp_path):
    root = clotho_root(tmp_path, {f: [[f"{f}.wav", "a caption", "", "", "", ""]]
                                  for f in ("development", "validation", "evaluation")})
    problems = check_dataset(root, layout="clotho")
    assert [p.severity for p in problems] == ["info"] * 3  # a clean data set
    assert detect_layout(root) == "clotho"
    (root / "train.csv").write_text("audiocap_id,youtube_id,start_time,caption\n")
    with pytest.raises(DatasetError, match="both Clotho and AudioCaps"):
        detect_layout(root)
    assert "both Clotho and AudioCaps" in check_dataset(root)[0].what
    assert check_dataset(tmp_path / "nowhere")[0].what == "not a folder"


def test_shared_clip_judged_by_content_not_by_name(tmp_path):
    root = clotho_root(tmp_path, {
        "development": [["same name.wav", "a", "", "", "", ""], ["original.wav", "b", "", "", "", ""],
                        ["hush.wav", "c", "", "", "", ""]],
        "evaluation": [["same name.wav", "d", "", "", "", ""], ["renamed  copy.flac", "e", "", "", "", ""],
                       ["hush too.wav", "f", "", "", "", ""]],
    }, audio=False)
    dev, ev = root / "development", root / "evaluation"
    write_wav(dev / "same name.wav", seed=1)
    write_wav(ev / "same name.wav", seed=2)  # two recordings under one name, as in Clotho
    tone = (9000 * np.sin(np.arange(6400) * 0.07)).astype(np.int16)
    sf.write(dev / "original.wav", tone, RATE, subtype="PCM_16")
    sf.write(ev / "renamed  copy.flac", tone, RATE, subtype="PCM_16")  # the same samples, renamed and re-encoded
    sf.write(dev / "hush.wav", np.zeros(800), RATE)
    sf.write(ev / "hush too.wav", np.zeros(800), RATE)  # identical silence says nothing about an overlap
    problems = check_dataset(root)
    shared = [str(p) for p in problems if "same audio" in p.what]
    expected = (f"WARNING: {show_path(ev / 'renamed  copy.flac')}: same audio as {show_path(dev / 'original.wav')} "
                "of the train split (listed in 'clotho_captions_evaluation.csv' row 2) -> keep the splits disjoint "
                "(a clip in two splits inflates the scores)")
    assert shared == [expected]
    named = [str(p) for p in problems if "'same name.wav'" in str(p)]
    assert len(named) == 1 and named[0].startswith("INFO: ") and "different audio" in named[0]


def test_data_check_counts_info_lines_apart_from_warnings(tmp_path, capsys):
    root = clotho_root(tmp_path, {f: [[f"{f}.wav", "a caption", "", "", "", ""]]
                                  for f in ("development", "validation", "evaluation")})
    write_wav(root / "development" / "stray.wav", seed=99)  # one warning: a file no CSV lists
    problems = check_dataset(root)
    assert problems.counts() == {"error": 0, "warning": 1, "info": 3}
    assert main(["data", "check", str(root)]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"{show_path(root)}: 0 error(s), 1 warning(s), 3 info"
    (root / "evaluation" / "evaluation.wav").unlink()
    assert main(["data", "check", str(root)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"{show_path(root)}: 1 error(s), 1 warning(s), 2 info"


def test_problem_str_is_one_line_and_shows_paths_unambiguously():
    problem = Problem("x.csv", 3, "bad\nthing", "fix\tit", "warning")
    assert str(problem) == "WARNING: 'x.csv' row 3: bad thing -> fix it"
    assert str(Problem("a.wav", None, "gone")) == "ERROR: 'a.wav': gone"
    spaced = Problem(" two  spaces.wav", None, "names 'b  c.wav'\n  and more")
    assert str(spaced) == "ERROR: ' two  spaces.wav': names 'b  c.wav' and more"
    with pytest.raises(ValueError, match="severity 'fatal'"):
        Problem("a.wav", None, "x", severity="fatal")


# ----------------------------------------------------------------------------- cache
def _cache(tmp_path, settings=None, logmel=None):
    logmel = logmel or FakeLogMel()
    if settings is not None:
        logmel.settings = settings  # what the cache is keyed by
    return LogMelCache(tmp_path / "cache", logmel)


def test_cache_computes_whole_clip_once(tmp_path):
    audio = write_wav(tmp_path / "a.wav", seconds=0.5, rate=16000)
    cache = _cache(tmp_path)
    first = cache.get(audio)
    assert cache.logmel.calls == 1
    expected = FakeLogMel()(load_audio(audio, RATE)[None])[0]  # whole file, resampled to 32 kHz
    assert first.shape == (16000 // HOP + 1, 64) and torch.allclose(first, expected)
    second = _cache(tmp_path).get(audio)  # a fresh cache object reads the stored entry
    assert torch.equal(first, second) and cache.logmel.calls == 1
    files = sorted(p.name for p in cache.folder.iterdir())
    assert files == sorted([cache.entry(audio).name, "settings.json"])  # no *.partial left


def test_cache_invalidated_by_settings_and_file_change(tmp_path):
    audio = write_wav(tmp_path / "a.wav")
    logmel = FakeLogMel()
    old = _cache(tmp_path, {"n_mels": 64, "hop": HOP}, logmel)
    old.get(audio)
    new = _cache(tmp_path, {"n_mels": 64, "hop": HOP, "fmax": 8000}, logmel)
    assert new.folder != old.folder
    new.get(audio)
    assert logmel.calls == 2
    write_wav(audio, seconds=0.3, seed=5)  # the file changes: size and mtime
    os.utime(audio, ns=(1, 1))
    assert new.get(audio).shape[0] == int(0.3 * RATE) // HOP + 1 and logmel.calls == 3


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    audio = write_wav(tmp_path / "a.wav")
    cache = _cache(tmp_path)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.get(audio)
    assert [p.name for p in cache.folder.iterdir()] == ["settings.json"]  # neither entry nor partial


def test_cache_recomputes_a_corrupt_entry(tmp_path, caplog):
    audio = write_wav(tmp_path / "a.wav")
    cache = _cache(tmp_path)
    good = cache.get(audio)
    cache.entry(audio).write_bytes(b"garbage")
    fresh = LogMelCache(cache.folder.parent, cache.logmel)  # nothing in memory
    with caplog.at_level(logging.WARNING, logger="thadcr.data.logmel"):
        again = fresh.get(audio)
    assert torch.equal(good, again) and cache.logmel.calls == 2 and "unusable" in caplog.text


def test_cache_keeps_recent_entries_in_memory_within_its_budget(tmp_path, monkeypatch):
    clips = [write_wav(tmp_path / f"{i}.wav", seconds=0.2, seed=i) for i in range(3)]
    probe = _cache(tmp_path)
    one = probe.get(clips[0]).numel() * 4  # bytes of one entry (all three have the same length)
    cache = LogMelCache(tmp_path / "cache", FakeLogMel(), memory_bytes=2 * one)
    values = [cache.get(c) for c in clips]  # the first is evicted by the third
    loads = []
    real_load = logmel_module.torch.load
    monkeypatch.setattr(logmel_module.torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    assert cache.get(clips[2]) is values[2] and cache.get(clips[1]) is values[1] and loads == []  # from memory
    assert torch.equal(cache.get(clips[0]), values[0]) and loads == [cache.entry(clips[0])]  # read from disk again
    assert cache._memory_used <= 2 * one and len(cache._memory) == 2
    none = LogMelCache(tmp_path / "cache", FakeLogMel(), memory_bytes=0)
    none.get(clips[1])
    assert len(none._memory) == 0 and loads[-1] == none.entry(clips[1])
    with pytest.raises(ValueError, match="memory_bytes"):
        LogMelCache(tmp_path / "cache", FakeLogMel(), memory_bytes=-1)


def test_cache_bad_audio_raises_audio_error(tmp_path):
    cache = _cache(tmp_path)
    with pytest.raises(AudioError, match="missing.wav': file not found"):
        cache.get(tmp_path / "missing.wav")
    (tmp_path / "t.wav").write_text("text")
    with pytest.raises(AudioError, match="t.wav': not readable"):
        cache.get(tmp_path / "t.wav")


# ----------------------------------------------------------------------------- frames
def test_clip_frames():
    assert clip_frames(10.0) == 1001 and clip_frames(30.0) == 3001 and clip_frames(1.0, 16000, 160) == 101


def test_crop_frames_pad_and_crop():
    logmel = torch.arange(12, dtype=torch.float32).reshape(6, 2)  # (T=6, F=2)
    padded = crop_frames(logmel, 8, "center")
    assert torch.equal(padded[:6], logmel) and (padded[6:] == PAD_DB).all() and PAD_DB == -100.0
    assert torch.equal(crop_frames(logmel, 2, "start"), logmel[:2])
    assert torch.equal(crop_frames(logmel, 2, "center"), logmel[2:4])
    starts = {int(crop_frames(logmel, 3, "random", torch.Generator().manual_seed(s))[0, 0]) // 2 for s in range(100)}
    assert starts == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="crop mode"):
        crop_frames(logmel, 8, "end")
    with pytest.raises(ValueError, match=r"\(frames, mels\)"):
        crop_frames(logmel[None], 3, "start")


# ----------------------------------------------------------------------------- datasets
def _split(tmp_path):
    paths = [write_wav(tmp_path / f"{i}.wav", seconds=s, seed=i) for i, s in enumerate((0.5, 0.05))]
    return Split("train", paths, ["0.wav", "1.wav"], ["a", "b", "c"], np.array([0, 0, 1]))


def test_caption_dataset_deterministic_per_epoch(tmp_path):
    split = _split(tmp_path)
    n = 10  # clip 0 has 51 frames, clip 1 has 6 (padded)
    ds = CaptionDataset(split, _cache(tmp_path), n, train=True, seed=3)
    twin = CaptionDataset(split, _cache(tmp_path), n, train=True, seed=3)
    whole = ds.cache.get(split.audio_paths[0])
    crops = {}
    for epoch in range(4):
        ds.set_epoch(epoch)
        twin.set_epoch(epoch)
        items = [ds[i] for i in range(len(ds))]
        reverse = [twin[i] for i in reversed(range(len(twin)))][::-1]  # order of access does not matter
        for a, b in zip(items, reverse):
            assert torch.equal(a["logmel"], b["logmel"])
        crops[epoch] = items[0]["logmel"]
        start = int(torch.nonzero((whole == crops[epoch][0]).all(1))[0])
        assert torch.equal(crops[epoch], whole[start : start + n])  # a real window of the clip
    assert len({tuple(c[:, 0].tolist()) for c in crops.values()}) > 1  # epochs differ
    item = ds[2]
    assert item["logmel"].shape == (n, 64) and item["caption"] == "c"
    assert item["clip_index"] == 1 and item["caption_index"] == 2
    assert (item["logmel"][6:] == PAD_DB).all()


def _literal_spec_augment(logmel, generator, time_masks, time_width, freq_masks, freq_width):
    """SpecAugment written element by element: draw every stripe (width, then start) in the
    documented order, then set each masked cell to its mel bin's mean over the clip."""
    frames, mels = logmel.shape
    stripes = []
    for axis, n_masks, width, size in ((0, time_masks, time_width, frames), (1, freq_masks, freq_width, mels)):
        for _ in range(n_masks):
            span = min(int(torch.randint(0, max(width, 1), (1,), generator=generator)), size)
            start = int(torch.randint(0, size - span + 1, (1,), generator=generator))
            stripes.append((axis, start, span))
    out = logmel.clone()
    for t in range(frames):
        for f in range(mels):
            if any(start <= (t if axis == 0 else f) < start + span for axis, start, span in stripes):
                out[t, f] = sum(logmel[u, f] for u in range(frames)) / frames
    return out


@pytest.mark.parametrize("masks", [(2, 12, 2, 5), (1, 40, 0, 8), (0, 64, 3, 3), (4, 1, 1, 1)])
def test_spec_augment_against_literal_loop(masks):
    logmel = torch.randn(30, 16, dtype=torch.float64)
    original = logmel.clone()
    for seed in range(5):
        fast = spec_augment(logmel, torch.Generator().manual_seed(seed), *masks)
        slow = _literal_spec_augment(logmel, torch.Generator().manual_seed(seed), *masks)
        assert fast.shape == logmel.shape
        torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    assert torch.equal(logmel, original)  # the input is not modified


def test_spec_augment_masks_bounded_stripes_and_refuses_bad_input():
    logmel = torch.arange(200 * 64, dtype=torch.float32).reshape(200, 64) % 97
    changed_frames, changed_bins = set(), set()
    for seed in range(50):
        out = spec_augment(logmel, torch.Generator().manual_seed(seed), 2, 10, 0, 8)
        rows = torch.nonzero((out != logmel).any(1)).flatten().tolist()
        assert len(rows) <= 2 * 9  # two stripes of at most 9 frames
        assert torch.equal(out[rows], logmel.mean(0).expand(len(rows), -1))
        changed_frames.update(rows)
        out = spec_augment(logmel, torch.Generator().manual_seed(seed), 0, 10, 1, 8)
        changed_bins.update(torch.nonzero((out != logmel).any(0)).flatten().tolist())
    assert len(changed_frames) > 50 and len(changed_bins) > 20  # stripes move with the seed
    assert torch.equal(spec_augment(logmel, torch.Generator(), 0, 64, 0, 8), logmel)
    with pytest.raises(ValueError, match="time_width must be >= 0"):
        spec_augment(logmel, torch.Generator(), 1, -1, 0, 8)
    with pytest.raises(ValueError, match="frames, mels"):
        spec_augment(logmel[None], torch.Generator(), 1, 4, 0, 8)


def test_caption_dataset_spec_augment_in_training_only(tmp_path):
    split = _split(tmp_path)
    cache = _cache(tmp_path)
    plain = CaptionDataset(split, cache, 40, train=True, seed=1)
    masked = CaptionDataset(split, cache, 40, train=True, seed=1, spec_augment=(2, 20, 2, 16))
    twin = CaptionDataset(split, cache, 40, train=True, seed=1, spec_augment=(2, 20, 2, 16))
    differs = False
    for epoch in range(3):
        for ds in (plain, masked, twin):
            ds.set_epoch(epoch)
        a, b = plain[0]["logmel"], masked[0]["logmel"]
        assert torch.equal(b, twin[0]["logmel"])  # deterministic per (seed, epoch, index)
        changed = b != a
        differs |= bool(changed.any())
        assert torch.equal(b[~changed], a[~changed])  # the same crop, only masked cells differ
    assert differs
    evaluation = CaptionDataset(split, cache, 40, train=False, spec_augment=(2, 20, 2, 16))
    assert torch.equal(evaluation[0]["logmel"], CaptionDataset(split, cache, 40, train=False)[0]["logmel"])


def test_eval_datasets_are_centre_cropped(tmp_path):
    split = _split(tmp_path)
    cache = _cache(tmp_path)
    ds = CaptionDataset(split, cache, 10, train=False, seed=0)
    whole = cache.get(split.audio_paths[0])  # 51 frames -> start (51 - 10) // 2 = 20
    ds.set_epoch(5)
    assert torch.equal(ds[1]["logmel"], whole[20:30])
    clips = ClipDataset(split, cache, 10)
    assert len(clips) == 2 and len(ds) == 3
    assert torch.equal(clips[0]["logmel"], whole[20:30]) and clips[1]["clip_id"] == "1.wav"
    with pytest.raises(IndexError):
        clips[2]


def test_collate(tmp_path):
    split = _split(tmp_path)
    cache = _cache(tmp_path)
    batch = collate([CaptionDataset(split, cache, 10, train=True, seed=0)[i] for i in (2, 0)])
    assert batch["logmel"].shape == (2, 10, 64) and batch["captions"] == ["c", "a"]
    assert batch["clip_index"].dtype == torch.long and batch["clip_index"].tolist() == [1, 0]
    assert batch["caption_index"].tolist() == [2, 0]
    clips = collate([ClipDataset(split, cache, 10)[i] for i in range(2)])
    assert clips["clip_ids"] == ["0.wav", "1.wav"] and clips["clip_index"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_real_front_end_pads_like_zero_samples(tmp_path):
    """PAD_DB is what thadcr.model.audio.LogMel gives to digital silence; a 10 s clip fills clip_frames(10)."""
    audio = pytest.importorskip("thadcr.model.audio")
    logmel = audio.LogMel(sample_rate=RATE)
    assert (logmel(torch.zeros(1, 3200)) == PAD_DB).all()
    cache = LogMelCache(tmp_path / "cache", logmel)
    whole = cache.get(write_wav(tmp_path / "ten.wav", seconds=10.0))
    assert whole.shape == (clip_frames(10.0), 64) and torch.isfinite(whole).all()
