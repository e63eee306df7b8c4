"""`thadcr search`: the clip index (built once, float16, invalidated by any change), folders of
one's own audio files in any format, bad input, and the command line."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from thadcr.data.audio_io import AudioError
from thadcr.run.checkpoint import saved_state
from thadcr.interfaces.cli import main
from thadcr.config import make_config
from thadcr.run.evaluation import EvalSet, encode_clips
from thadcr.files import atomic_save
from thadcr.model.retrieval import RetrievalModel, build_model
from thadcr.interfaces.search import Searcher, audio_files, search

QUERY, OTHER = "a high tone then a low tone", "a low beep followed by a middle beep"


@pytest.fixture(scope="module")
def checkpoint(synthetic_clotho, tmp_path_factory):
    """An untrained THA+DCR model of the tiny profile (THA levels and DCR factors in its index)."""
    folder = tmp_path_factory.mktemp("search")
    values = {"variant": "THA+DCR", "data_root": str(synthetic_clotho), "cache_dir": str(folder / "cache"),
              "clip_seconds": 1.0, "joint_dim": 32, "eval_batch": 4, "device": "cpu"}  # fmt: skip
    config = make_config("tiny", values)
    torch.manual_seed(0)
    model = build_model(config, load_weights=False)
    path = folder / "best.pt"
    atomic_save({"model": saved_state(model), "config": config.to_dict()}, path)
    return path


@pytest.fixture
def encoder_calls(monkeypatch):
    """Counts the clips the audio encoder sees (every Searcher's model is a RetrievalModel)."""
    calls = []
    encode = RetrievalModel.encode_audio

    def counted(self, audio):  # log-mels, or a frozen encoder's cached features
        calls.append(len(audio) if isinstance(audio, torch.Tensor) else len(audio.pooled))
        return encode(self, audio)

    monkeypatch.setattr(RetrievalModel, "encode_audio", counted)
    return calls


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "thadcr" / "search"


def test_a_second_query_encodes_no_clip(checkpoint, encoder_calls):
    first = search(QUERY, checkpoint, top=3, device="cpu")
    assert sum(encoder_calls) == 8  # the 8 test clips, once
    assert len(first) == 3 and [h["score"] for h in first] == sorted((h["score"] for h in first), reverse=True)
    assert all(Path(h["file"]).parent.name == "evaluation" and "tone" in h["caption"] for h in first)
    encoder_calls.clear()
    searcher = Searcher(checkpoint, device="cpu")  # a new process would do the same: the index is on disk
    assert not searcher.index.built and searcher.index.path.parent == checkpoint.parent / "cache" / "search"
    assert searcher(QUERY, top=3) == first
    assert len(searcher(OTHER, top=8)) == 8 and search(OTHER, checkpoint, top=2, device="cpu")
    assert encoder_calls == []


def test_the_index_holds_float16_and_scores_in_float32_like_evaluation(checkpoint):
    searcher = Searcher(checkpoint, device="cpu")
    saved = torch.load(searcher.index.path, weights_only=True)
    stored = [*saved["audio"]["tha"], saved["audio"]["factors"]]
    assert saved["audio"]["dp"] is None and all(x.dtype == torch.float16 for x in stored)
    model, config = searcher.model, searcher.config
    clips = EvalSet.open(config, "test", model)
    data = clips.split
    with torch.no_grad():
        audio = encode_clips(model, clips)  # float32
        want = model.similarity(audio, model.encode_text([QUERY]))[:, 0]
    got = searcher.scores(QUERY)
    assert got.dtype == torch.float32 and got.shape == (8,)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-2)  # float16 storage, float32 scoring
    assert searcher.index.files == [str(p) for p in data.audio_paths]


def test_a_folder_ranks_like_the_split_it_copies(checkpoint, synthetic_clotho, tmp_path, cache_home):
    folder = tmp_path / "mine"
    shutil.copytree(synthetic_clotho / "evaluation", folder)
    by_split = {Path(h["file"]).name: h["score"] for h in search(QUERY, checkpoint, top=8, device="cpu")}
    searcher = Searcher(checkpoint, audio_dir=folder, device="cpu")
    assert searcher.index.built and searcher.index.path.parent == cache_home
    hits = searcher(QUERY, top=8)
    assert all(h["caption"] == "" for h in hits)
    assert {Path(h["file"]).name: h["score"] for h in hits} == pytest.approx(by_split, abs=1e-6)


def test_any_format_rate_and_channel_count(checkpoint, tmp_path, cache_home):
    t = np.arange(12000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    folder = tmp_path / "sounds"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "mono.wav", tone, 16000, subtype="FLOAT")
    sf.write(folder / "stereo.wav", np.stack([tone, tone], axis=1), 16000, subtype="FLOAT")  # the same signal twice
    sf.write(folder / "tone.flac", tone, 44100)
    sf.write(folder / "sub" / "chirp.OGG", np.sin(2 * np.pi * 440 * t**2 * 8).astype(np.float32), 22050)
    sf.write(folder / "long.mp3", np.tile(tone, 4), 48000)
    (folder / "notes.txt").write_text("not audio")
    (folder / "._mono.wav").write_bytes(b"macOS metadata, not audio")  # hidden: skipped
    assert [p.relative_to(folder).as_posix() for p in audio_files(folder)] == [
        "long.mp3", "mono.wav", "stereo.wav", "sub/chirp.OGG", "tone.flac"]  # fmt: skip
    hits = {Path(h["file"]).name: h["score"] for h in search(QUERY, checkpoint, top=10, audio_dir=folder, device="cpu")}
    assert set(hits) == {"long.mp3", "mono.wav", "stereo.wav", "chirp.OGG", "tone.flac"}
    assert hits["stereo.wav"] == hits["mono.wav"]  # channels are averaged


def test_the_index_is_rebuilt_when_anything_it_depends_on_changes(checkpoint, tmp_path, encoder_calls, caplog):
    folder, index_dir = tmp_path / "sounds", tmp_path / "index"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        sf.write(folder / name, 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)

    def clips_encoded() -> int:
        encoder_calls.clear()
        search(QUERY, checkpoint, audio_dir=folder, index_dir=index_dir, device="cpu")
        assert len(list(index_dir.glob("index-*.pt"))) == 1  # a rebuilt index replaces the stale one
        return sum(encoder_calls)

    assert clips_encoded() == 2
    assert clips_encoded() == 0
    sf.write(folder / "c.wav", 0.1 * rng.standard_normal(8000).astype(np.float32), 8000)  # a new file
    assert clips_encoded() == 3
    sf.write(folder / "a.wav", 0.2 * rng.standard_normal(16000).astype(np.float32), 16000)  # an edited file
    os.utime(folder / "a.wav", ns=(1, 1))
    assert clips_encoded() == 3
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a checkpoint written again
    assert clips_encoded() == 3
    next(index_dir.glob("index-*.pt")).write_bytes(b"garbage")  # a damaged index is rebuilt, with a warning
    assert clips_encoded() == 3 and "unreadable" in caplog.text
    assert clips_encoded() == 0


def test_bad_folders_and_files_are_named(checkpoint, tmp_path, cache_home, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no audio here")
    with pytest.raises(AudioError, match="empty'.*holds no audio files"):
        search(QUERY, checkpoint, audio_dir=empty, device="cpu")
    with pytest.raises(AudioError, match="nowhere'.*not a folder"):
        search(QUERY, checkpoint, audio_dir=tmp_path / "nowhere", device="cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    sf.write(broken / "fine.wav", np.zeros(8000, dtype=np.float32), 16000)
    (broken / "bad.wav").write_bytes(b"RIFF but not really a wave file")
    with pytest.raises(AudioError, match="bad.wav'.*not readable as audio"):
        search(QUERY, checkpoint, audio_dir=broken, device="cpu")
    assert not list(cache_home.glob("*.pt"))  # nothing half-built was kept
    capsys.readouterr()
    assert main(["search", QUERY, "--checkpoint", str(checkpoint), "--audio-dir", str(broken)]) == 1
    assert "bad.wav" in capsys.readouterr().err
    assert main(["search", QUERY, "--checkpoint", str(checkpoint), "--top", "0"]) == 2
    assert "--top 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["search", QUERY, "--checkpoint", str(checkpoint), "--split", "val", "--audio-dir", str(broken)])
    assert usage.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_command_line_search_of_a_folder(checkpoint, synthetic_clotho, tmp_path, capsys):
    args = ["search", QUERY, "--checkpoint", str(checkpoint), "--audio-dir", str(synthetic_clotho / "validation"),
            "--index-dir", str(tmp_path), "--top", "3", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    first = capsys.readouterr()
    assert "8 clips, encoded into" in first.err and str(tmp_path) in first.err
    lines = first.out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["1.", "2.", "3."] and all("validation" in line for line in lines)
    assert main(args) == 0
    again = capsys.readouterr()
    assert "8 clips, read from" in again.err and again.out == first.out
