"""Tests of the embedded data set builder (thadcr.data.embedded), on a synthetic packages folder.

No network and no apt: the fixture writes fake extracted package trees (the real packages'
paths, generated WAV/OGG audio, an OpenSFX-style container, a ufoai-style zip).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import struct
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from thadcr.data.embedded.build import FLAVOURS, SPLITS, build, label_file_name, write_wav
from thadcr.data.embedded.inventory import (
    TARGET_DB,
    PhraseSet,
    Recording,
    active_rms_db,
    assign_splits,
    inventory,
    load_classes,
    load_recordings,
    load_sources,
    prepare_audio,
    split_counts,
)
from thadcr.data.embedded.packages import (
    PACKAGES,
    EmbeddedDataError,
    apt_download,
    extract_deb,
    fetch_packages,
    keep_member,
    licence_for,
    parse_copyright,
    read_opensfx_cat,
)
from thadcr.data.embedded.scenes import PEAK, Event, Scene, plan_scene, render_scene, scene_captions

SR = 16000  # build rate in these tests (small files)
CLIP = 2.0
SIZES = {"n_train": 8, "n_val": 3, "n_test": 3}
CAT = "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
PK3 = "usr/share/games/ufoai/base/0snd.pk3"


# ---------------------------------------------------------------------------------------------
# fixture: a fake packages folder
# ---------------------------------------------------------------------------------------------


def _sound(seed: int, seconds: float, rate: int) -> np.ndarray:
    """A distinct decaying tone burst with a little noise (float32, peak 0.5)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = np.sin(2 * np.pi * (200 + 40 * seed) * t) * np.exp(-2.0 * t) + 0.05 * rng.standard_normal(t.size)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


def _write(path: Path, wave: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, rate)


def _riff(wave: np.ndarray, rate: int, overrun: int = 0) -> bytes:
    """16-bit mono RIFF/WAVE bytes; ``overrun`` inflates the chunk sizes like opensfx.cat does."""
    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(pcm) + overrun) + pcm
    return b"RIFF" + struct.pack("<I", len(body) + overrun) + body


def write_cat(path: Path, entries: list[tuple[str, bytes]]) -> None:
    """An OpenTTD sound container: (offset | 1 << 31, size) table, then [len][text\\0][RIFF]."""
    blobs = []
    for text, riff in entries:
        name = text.encode() + b"\0"
        blobs.append(bytes([len(name)]) + name + riff)
    offset = 8 * len(entries)
    table = b""
    for blob in blobs:
        table += struct.pack("<II", offset | 0x80000000, len(blob))
        offset += len(blob)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(table + b"".join(blobs))


def make_packages(root: Path) -> Path:
    """Fake extracted trees of the five packages with a few listed, dropped and silent files."""
    seed = iter(range(1, 1000))
    noises = root / "qabcs-data/usr/share/qabcs/abcs/all/noises"
    for name in ("dog", "cat", "cow", "duck", "fire", "cheburashka"):
        _write(noises / f"{name}.ogg", _sound(next(seed), 1.2, 44100), 44100)
    doc = root / "qabcs-data/usr/share/doc/qabcs-data"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nCopyright: 2020 Test Author\nLicense: GPL-3+\n")
    with gzip.open(doc / "changelog.Debian.gz", "wt") as handle:
        handle.write("qabcs (9.9-1) unstable; urgency=medium\n")
    stamps = root / "tuxpaint-stamps-default/usr/share/tuxpaint/stamps"
    for stem, text in (("animals/mammals/dogs/dog", "A dog."), ("animals/mammals/bovines/cow", "A cow."),
                       ("animals/birds/duck", "A duck."), ("seasonal/halloween/blackcat", "A black cat.")):
        _write(stamps / f"{stem}.ogg", _sound(next(seed), 0.8, 22050), 22050)
        (stamps / f"{stem}.txt").write_text(f"{text}\nfr.utf8=Traduction.\n")
    for silent in ("animals/marsupials/wombat.ogg", "animals/mammals/bovines/bull.ogg"):  # dropped / listed as cow
        _write(stamps / silent, np.zeros(8000, np.float32), 22050)
    sounds = root / "scratch/usr/share/scratch/Media/Sounds"
    for name in ("Animal/Dog1", "Animal/Dog2", "Animal/Meow", "Animal/Kitten", "Animal/Duck", "Music Loops/Techno"):
        _write(sounds / f"{name}.wav", _sound(next(seed), 0.6, 11025), 11025)
    empty = ('"Unused/Nothing". Trivial empty sound file. License: Creative Commons Zero 1.0.', b"")
    entries = [('"Good Year". By A. License: Creative Commons Attribution 3.0 Unported.', _riff(_sound(90, 0.3, 44100), 44100, 82))]
    entries += [empty] * 36
    entries += [('"Cow". Original "Cow - Moan 2.wav" by "B". Edited by "C". License: Creative Commons Zero 1.0.',
                 _riff(_sound(91, 1.0, 44100), 44100, 115)),
                ('"Horse". Original "A horse neighing in a field.wav" by "D". License: Creative Commons Attribution 3.0 Unported.',
                 _riff(_sound(92, 1.0, 44100), 44100, 131))]
    write_cat(root / "openttd-opensfx" / CAT, entries)
    pk3 = root / "ufoai-sound" / PK3
    pk3.parent.mkdir(parents=True)
    with zipfile.ZipFile(pk3, "w") as archive:
        for name in ("ambience/fire2", "ambience/smallfire", "ambience/water01", "ambience/water02",
                     "ambience/water03", "weapons/bullet-gauss"):
            buffer = io.BytesIO()
            sf.write(buffer, _sound(next(seed), 2.5, 44100), 44100, format="OGG")
            archive.writestr(f"sound/{name}.ogg", buffer.getvalue())
    return root


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Path:
    return make_packages(tmp_path_factory.mktemp("packages"))


@pytest.fixture(scope="module")
def built(packages, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "embedded"
    summary = build(out, packages_dir=packages, seed=0, clip_seconds=CLIP, sample_rate=SR, progress=False, **SIZES)
    return out, summary


def _captions(folder: Path, split: str) -> list[dict]:
    with open(folder / f"clotho_captions_{split}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _sources(folder: Path) -> dict[str, dict]:
    with open(folder / "sources.csv", newline="") as handle:
        return {row["key"]: row for row in csv.DictReader(handle)}


# ---------------------------------------------------------------------------------------------
# package handling
# ---------------------------------------------------------------------------------------------


def test_opensfx_container_is_parsed_with_clamped_chunks(tmp_path):
    a, b = _sound(1, 0.5, 44100), _sound(2, 0.25, 22050)
    write_cat(tmp_path / "x.cat", [('"Sheep". License: Creative Commons Zero 1.0.', _riff(a, 44100, 129)),
                                    ('"Unused". Empty.', b""), ('"Cow".', _riff(b, 22050, 0))])
    entries = read_opensfx_cat(tmp_path / "x.cat")
    assert [e[0] for e in entries] == ['"Sheep". License: Creative Commons Zero 1.0.', '"Unused". Empty.', '"Cow".']
    for (text, wave, rate), (source, source_rate) in zip([entries[0], entries[2]], [(a, 44100), (b, 22050)]):
        expected = (np.clip(source, -1, 1) * 32767).astype(np.int16).astype(np.float64) / 32768.0
        assert rate == source_rate and wave.shape == expected.shape
        np.testing.assert_allclose(wave, expected, atol=1e-7)
    assert entries[1][1].size == 0


def test_opensfx_damaged_container_names_the_file(tmp_path):
    (tmp_path / "bad.cat").write_bytes(struct.pack("<II", 0x80000008, 10_000))
    with pytest.raises(EmbeddedDataError, match=r"bad\.cat: entry 0 points outside the file"):
        read_opensfx_cat(tmp_path / "bad.cat")


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data + (b"\n" if len(data) % 2 else b"")
    return out


def test_deb_is_extracted_in_python_keeping_only_audio_and_text(tmp_path):
    buffer = io.BytesIO()
    files = {"./usr/share/qabcs/abcs/all/noises/dog.ogg": b"OggS-dog",
             "./usr/share/qabcs/abcs/all/pics/dog.png": b"png",
             "./usr/share/doc/qabcs-data/copyright": b"Files: *\nLicense: GPL-3+\n",
             "./usr/share/doc/qabcs-data/README": b"readme"}
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    deb = tmp_path / "qabcs-data_1.0-1_all.deb"
    deb.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", b"x" * 7), ("data.tar.xz", buffer.getvalue())]))
    count = extract_deb(deb, tmp_path / "qabcs-data", keep=lambda n: keep_member("qabcs-data", n))
    kept = sorted(p.relative_to(tmp_path / "qabcs-data").as_posix() for p in (tmp_path / "qabcs-data").rglob("*") if p.is_file())
    assert count == 2 and kept == ["usr/share/doc/qabcs-data/copyright", "usr/share/qabcs/abcs/all/noises/dog.ogg"]
    assert (tmp_path / "qabcs-data/usr/share/qabcs/abcs/all/noises/dog.ogg").read_bytes() == b"OggS-dog"
    assert not (tmp_path / "qabcs-data.partial").exists()
    (tmp_path / "not-a-deb_1_all.deb").write_bytes(b"garbage")
    with pytest.raises(EmbeddedDataError, match="not a Debian package"):
        extract_deb(tmp_path / "not-a-deb_1_all.deb", tmp_path / "x", keep=lambda n: True)


def test_fetch_packages_extracts_a_deb_from_the_folder_without_apt(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("./usr/share/qabcs/abcs/all/noises/cat.ogg")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"OggS"))
    (tmp_path / "qabcs-data_2.0-1_all.deb").write_bytes(_ar([("debian-binary", b"2.0\n"), ("data.tar.gz", buffer.getvalue())]))
    monkeypatch.setattr("thadcr.data.embedded.packages.PACKAGES", {"qabcs-data": "usr/share/qabcs/abcs/all/noises"})
    monkeypatch.setattr(shutil, "which", lambda name: None)  # apt would raise
    trees = fetch_packages(tmp_path, progress=False)
    assert trees == {"qabcs-data": tmp_path / "qabcs-data"}
    assert (tmp_path / "qabcs-data/usr/share/qabcs/abcs/all/noises/cat.ogg").read_bytes() == b"OggS"


def test_tuxpaint_spoken_descriptions_are_not_extracted():
    keep = keep_member
    assert keep("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/birds/owl.ogg")
    assert keep("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/birds/owl.txt")
    assert not keep("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/birds/owl_desc_fr.ogg")
    assert not keep("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps/animals/birds/owl.png")
    assert keep("openttd-opensfx", CAT) and keep("ufoai-sound", PK3)


def test_missing_apt_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(EmbeddedDataError) as error:
        fetch_packages(tmp_path / "empty", progress=False)
    message = str(error.value)
    assert "apt-get was not found" in message and "--packages DIR" in message and "qabcs-data" in message


def test_missing_package_lists_as_non_root_say_to_update(tmp_path, monkeypatch):
    calls = []

    def fake_run(command, cwd):
        calls.append(command[1])
        return subprocess.CompletedProcess(command, 100, "", "E: Unable to locate package qabcs-data")

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr("thadcr.data.embedded.packages.run_command", fake_run)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EmbeddedDataError, match=r"sudo apt-get update"):
        apt_download(["qabcs-data"], tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # root: update once, retry, then report
    calls.clear()
    with pytest.raises(EmbeddedDataError, match=r"exit 100.*--packages DIR"):
        apt_download(["qabcs-data"], tmp_path)
    assert calls == ["download", "update", "download"]


def test_copyright_stanzas_last_match_wins():
    text = ("Files: *\nCopyright: 2011 MIT\nLicense: GPL-2\n\nFiles: Help/* Media/*\n Projects\n"
            "Copyright: 2011 MIT\n 2012 Someone\nLicense: CC-BY-SA-3.0\n\nLicense: GPL-2\n text of the licence\n")
    stanzas = parse_copyright(text)
    assert stanzas == [(["*"], "GPL-2", "2011 MIT"), (["Help/*", "Media/*", "Projects"], "CC-BY-SA-3.0", "2011 MIT; 2012 Someone")]
    assert licence_for(stanzas, "usr/share/scratch/Media/Sounds/Animal/Dog1.wav")[0] == "CC-BY-SA-3.0"
    assert licence_for(stanzas, "usr/share/scratch/src/x.c")[0] == "GPL-2"
    assert licence_for([], "a")[0] == "unknown"


# ---------------------------------------------------------------------------------------------
# curated tables
# ---------------------------------------------------------------------------------------------


def test_curated_tables_are_consistent():
    classes = load_classes()
    rows = load_sources(classes=classes)
    used = {r["class"] for r in rows if r["class"]}
    assert used == set(classes), "every class has recordings and every class used is defined"
    for phrases in classes.values():
        # one event alone needs 5 distinct captions from _SINGLE templates (clause, ongoing, 3 x noun)
        assert len(phrases.clause) + len(phrases.ongoing) + len(phrases.noun) >= 3
        assert all(v == v.strip() and v[0].islower() or v[0].isdigit() for v in phrases.variants()), phrases.name
    assert {"wind", "fire", "water", "thunder"} <= {c for c, p in classes.items() if p.kind == "background"}
    keys = [(r["package"], r["path"]) for r in rows]
    assert len(keys) == len(set(keys)), "no path is listed twice"


def test_table_errors_name_the_row(tmp_path):
    bad = tmp_path / "sources.csv"
    bad.write_text("package,path,class,group,note\nqabcs-data,dog.ogg,unicorn,,\n")
    with pytest.raises(EmbeddedDataError, match=r"line 2: class 'unicorn' is not in"):
        load_sources(bad)
    bad.write_text("package,path,class,group,note\nqabcs-data,dog.ogg,,,\n")
    with pytest.raises(EmbeddedDataError, match=r"line 2: a dropped row needs the reason"):
        load_sources(bad)
    bad.write_text("package,path,class,group,note\nqabcs-data,dog.ogg,dog,g,\nqabcs-data,cat.ogg,cat,g,\n")
    with pytest.raises(EmbeddedDataError, match=r"group 'g' spans classes"):
        load_sources(bad)


def test_inventory_matches_exact_rows_then_globs(packages):
    trees = {p: packages / p for p in PACKAGES}
    recordings, readers, drops, missing = inventory(trees)
    kinds = {r.key: (r.cls, r.kind) for r in recordings}
    assert kinds["qabcs-data:dog.ogg"] == ("dog", "event")
    assert kinds["ufoai-sound:sound/ambience/water02.ogg"] == ("water", "background")
    assert kinds["openttd-opensfx:37"] == ("cow", "event")
    reasons = dict(drops)
    assert reasons["qabcs-data:cheburashka.ogg"] == "jingle: cartoon character"
    assert reasons["scratch:Music Loops/Techno.wav"] == "music loop"
    assert reasons["openttd-opensfx:0"].startswith("jingle")
    assert reasons["ufoai-sound:sound/weapons/bullet-gauss.ogg"] == "science-fiction weapon"
    assert reasons["tuxpaint-stamps-default:animals/marsupials/wombat.ogg"] == "silent: all zeros"
    assert "qabcs-data:elephant.ogg" in missing  # listed in the table, absent from this fake tree
    texts = {r.key: r.text for r in recordings}
    assert texts["tuxpaint-stamps-default:animals/mammals/dogs/dog.ogg"] == "A dog."
    assert texts["openttd-opensfx:37"] == "Cow" and texts["scratch:Animal/Dog1.wav"] == "Animal Dog"
    licences = {r.key: r.licence for r in recordings}
    assert licences["qabcs-data:dog.ogg"] == "GPL-3+"
    assert licences["openttd-opensfx:37"] == "CC-BY-SA-3.0 (collection); entry: Creative Commons Zero 1.0"


# ---------------------------------------------------------------------------------------------
# audio preparation: literal float64 references
# ---------------------------------------------------------------------------------------------


def _active_rms_db_literal(wave: np.ndarray, rate: int) -> float:
    frame = max(1, rate // 20)
    levels = []
    for start in range(0, len(wave), frame):
        chunk = [float(v) for v in wave[start : start + frame]]
        levels.append(10 * math.log10(max(sum(v * v for v in chunk) / len(chunk), 1e-20)))
    loud = [l for l in levels if l >= max(levels) - 30.0]
    return 10 * math.log10(sum(10 ** (l / 10) for l in loud) / len(loud))


def test_active_rms_matches_literal_definition():
    rng = np.random.default_rng(0)
    wave = np.concatenate([0.001 * rng.standard_normal(900), 0.3 * rng.standard_normal(1700), 0.05 * rng.standard_normal(333)])
    assert active_rms_db(wave.astype(np.float32), 8000) == pytest.approx(_active_rms_db_literal(wave, 8000), abs=1e-4)
    assert active_rms_db(np.zeros(100, np.float32), 8000) == -math.inf


def test_prepare_audio_trims_normalises_and_drops_silence():
    rate = 8000
    tone = (0.01 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    wave = np.concatenate([np.zeros(rate // 2, np.float32), tone, np.zeros(rate // 4, np.float32)])
    out = prepare_audio(wave, rate, rate)
    assert out.dtype == np.float32 and abs(len(out) - rate) <= rate // 100  # silence trimmed to 10 ms frames
    assert _active_rms_db_literal(out, rate) == pytest.approx(TARGET_DB, abs=0.05)
    assert prepare_audio(np.zeros(rate, np.float32), rate, rate) is None
    assert prepare_audio(tone * 1e-3, rate, rate) is None  # -83 dBFS: silent
    resampled = prepare_audio(tone, rate, 16000)
    assert abs(len(resampled) - 2 * rate) <= 16000 // 100
    loud = prepare_audio(np.sign(tone) * 0.9 + tone, rate, rate)  # square-ish wave: peak limited
    assert np.abs(loud).max() <= 0.99 + 1e-6


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------


def _recordings(spec: dict[str, int]) -> list[Recording]:
    return [Recording(f"p:{c}{i}", "p", f"{c}{i}", c, "event", f"p:{c}{i // 2 if c == 'grouped' else i}", "", "", "")
            for c, n in spec.items() for i in range(n)]


def test_split_counts_and_stratification():
    assert split_counts(1, "x") == (0, 0)
    assert sum(split_counts(2, "x")) == 1
    assert split_counts(3, "x") == (1, 1) and split_counts(10, "x") == (2, 2)
    spec = {"a": 1, "b": 2, "c": 3, "d": 10, "grouped": 8}
    recordings = _recordings(spec)
    splits = assign_splits(recordings, seed=0)
    for cls, n in spec.items():
        groups = {r.group for r in recordings if r.cls == cls}
        n_val, n_test = split_counts(len(groups), cls)
        got = [splits[r.key] for r in recordings if r.cls == cls]
        group_split = {}
        for r in recordings:
            if r.cls == cls:
                assert group_split.setdefault(r.group, splits[r.key]) == splits[r.key], "a group crossed splits"
        assert list(group_split.values()).count("validation") == n_val
        assert list(group_split.values()).count("evaluation") == n_test
        assert "development" in got
    assert splits == assign_splits(list(reversed(recordings)), seed=0), "order-independent"
    without_d = assign_splits([r for r in recordings if r.cls != "d"], seed=0)
    assert all(without_d[k] == splits[k] for k in without_d), "a class's split does not depend on other classes"
    assert any(assign_splits(recordings, seed=s) != splits for s in range(1, 5))


# ---------------------------------------------------------------------------------------------
# scenes: timeline, mixing, captions
# ---------------------------------------------------------------------------------------------


def _pools(n_classes: int = 6):
    classes = load_classes()
    events = [c for c, p in classes.items() if p.kind == "event"][:n_classes] + ["steps_gravel"]
    pool = {c: [f"{c}:1", f"{c}:2"] for c in events}
    background_pool = {"wind": ["wind:1"], "fire": ["fire:1"]}
    rng = np.random.default_rng(1)
    lengths = {k: float(rng.uniform(0.1, 4.0)) for keys in [*pool.values(), *background_pool.values()] for k in keys}
    return classes, pool, background_pool, lengths


def test_scene_timeline_invariants():
    classes, pool, background_pool, lengths = _pools()
    for seed in range(300):
        scene = plan_scene(np.random.default_rng(seed), pool, background_pool, lengths, classes, 5.0)
        events = scene.events
        assert 1 <= len(events) <= 3 and len({e.cls for e in events}) == len(events)
        assert len(scene.relations) == len(events) - 1
        for e in events:
            assert 0.0 <= e.onset and e.onset + e.duration <= 5.0 + 1e-9 and e.duration > 0
            natural = (e.repeats - 1) * e.interval + lengths[e.key]
            assert e.duration <= natural + 1e-9 and e.duration <= 5.0 * (0.8 if len(events) == 1 else 0.45) + 1e-9
            assert (-16 <= e.gain_db <= -12) if e.distant else (-4 <= e.gain_db <= 2)
        for i, relation in enumerate(scene.relations, start=1):
            previous_end = max(e.onset + e.duration for e in events[:i])
            if relation == "sequence":
                assert events[i].onset > previous_end
            else:
                assert events[i - 1].onset < events[i].onset < events[i - 1].onset + events[i - 1].duration
        if scene.background is not None:
            assert scene.background_cls in background_pool and -22 <= scene.background_gain_db <= -12


def _render_literal(scene: Scene, audio: dict, rate: int, clip: float) -> np.ndarray:
    """The mix by its definition, sample by sample in float64 (no distant events)."""
    n = int(round(clip * rate))
    mix = [0.0] * n
    if scene.background is not None:
        source, start, gain = audio[scene.background], int(round(scene.background_offset * rate)), 10 ** (scene.background_gain_db / 20)
        for i in range(n):
            mix[i] += float(source[(start + i) % len(source)]) * gain
    for e in scene.events:
        length = max(1, int(round(e.duration * rate)))
        wave = [0.0] * length
        for r in range(e.repeats):
            start = int(round(r * e.interval * rate))
            for j in range(start, length):
                if j - start < len(audio[e.key]):
                    wave[j] += float(audio[e.key][j - start])
        fade_in, fade_out = min(length, rate // 200), min(length, rate // 50)
        for j in range(fade_in):
            wave[j] *= j / (fade_in - 1) if fade_in > 1 else 0.0
        for j in range(fade_out):
            wave[length - fade_out + j] *= 1 - j / (fade_out - 1) if fade_out > 1 else 0.0
        onset = int(round(e.onset * rate))
        for j in range(length):
            if onset + j < n:
                mix[onset + j] += wave[j] * 10 ** (e.gain_db / 20)
    peak = max(abs(v) for v in mix)
    scale = PEAK / peak if peak > PEAK else 1.0
    return np.array([v * scale for v in mix])


def test_render_matches_literal_mix():
    rate, clip = 1000, 2.0
    rng = np.random.default_rng(3)
    audio = {"a": (0.4 * rng.standard_normal(700)).astype(np.float32), "b": (0.4 * rng.standard_normal(300)).astype(np.float32),
             "step": (0.5 * rng.standard_normal(60)).astype(np.float32), "bg": (0.2 * rng.standard_normal(450)).astype(np.float32)}
    scene = Scene([Event("a", "dog", 0.1, 0.65, -1.0, False), Event("b", "cat", 0.4, 0.3, 1.5, False),
                   Event("step", "steps_gravel", 1.0, 0.95, 0.0, False, repeats=4, interval=0.25)],
                  ["overlap", "sequence"], "bg", "wind", -6.0, 0.2)
    out = render_scene(scene, audio, rate, clip)
    assert out.shape == (2000,) and out.dtype == np.float32
    np.testing.assert_allclose(out, _render_literal(scene, audio, rate, clip), atol=2e-6)
    loud = Scene([Event("a", "dog", 0.0, 0.7, 20.0, False)], [])  # +20 dB: peak limited to PEAK
    out = render_scene(loud, audio, rate, clip)
    assert np.abs(out).max() == pytest.approx(PEAK, rel=1e-6)
    np.testing.assert_allclose(out, _render_literal(loud, audio, rate, clip), atol=2e-6)


def test_distant_event_is_quieter_and_low_passed():
    rate = 16000
    noise = np.random.default_rng(0).standard_normal(rate).astype(np.float32) * 0.1
    near = render_scene(Scene([Event("n", "dog", 0.0, 1.0, -14.0, False)], []), {"n": noise}, rate, 1.0)
    far = render_scene(Scene([Event("n", "dog", 0.0, 1.0, -14.0, True)], []), {"n": noise}, rate, 1.0)
    spectrum_near, spectrum_far = np.abs(np.fft.rfft(near)) ** 2, np.abs(np.fft.rfft(far)) ** 2
    high = np.fft.rfftfreq(rate, 1 / rate) > 4000
    assert spectrum_far[high].sum() < 0.05 * spectrum_near[high].sum()


def _mention_position(caption: str, phrases) -> int:
    found = [caption.lower().find(v) for v in phrases.variants() if v in caption.lower()]
    return min(found) if found else -1


def test_captions_are_distinct_mention_every_event_and_keep_order():
    classes, pool, background_pool, lengths = _pools()
    for seed in range(150):
        rng = np.random.default_rng(seed)
        scene = plan_scene(rng, pool, background_pool, lengths, classes, 5.0)
        captions = scene_captions(scene, classes, rng)
        assert len(captions) == 5 and len({c.lower() for c in captions}) == 5
        for caption in captions:
            assert caption[0].isupper() and caption.endswith(".")
            positions = [_mention_position(caption, classes[e.cls]) for e in scene.events]
            assert all(p >= 0 for p in positions), (caption, [e.cls for e in scene.events])
            if scene.background_cls:
                assert _mention_position(caption, classes[scene.background_cls]) >= 0, caption
            for e, p in zip(scene.events, positions):
                if e.distant:
                    assert "in the distance" in caption.lower()
            if " after " in caption:  # "B after A": the only reversed form
                assert len(positions) == 2 and positions[1] < positions[0] and scene.relations == ["sequence"]
            else:
                assert positions == sorted(positions), (caption, [e.cls for e in scene.events])


def test_caption_words_follow_the_timeline():
    classes = load_classes()
    dog, cat = Event("d", "dog", 0.0, 1.0, 0.0, False), Event("c", "cat", 2.0, 1.0, 0.0, False)
    rng = np.random.default_rng(0)
    sequential = scene_captions(Scene([dog, cat], ["sequence"]), classes, rng, n=5)
    words = (" then ", " followed by ", " before ", " after ")
    assert all(any(w in c.lower() for w in words) for c in sequential), sequential
    cat_overlap = Event("c", "cat", 0.5, 1.0, 0.0, False)
    overlapping = scene_captions(Scene([dog, cat_overlap], ["overlap"]), classes, rng, n=5)
    assert all(any(w in c.lower() for w in (" while ", " as ", " along with ", " mixed with ")) for c in overlapping)
    assert not any(" then " in c.lower() or " followed by " in c.lower() for c in overlapping)


def test_too_few_phrase_variants_is_an_error():
    poor = {"dog": PhraseSet("dog", "event", 1, ("barking",), ("barking",), ("barking",))}
    with pytest.raises(EmbeddedDataError, match="only 3 distinct captions"):
        scene_captions(Scene([Event("d", "dog", 0.0, 1.0, 0.0, False)], []), poor, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# the whole build on the fake packages
# ---------------------------------------------------------------------------------------------


def test_build_writes_the_clotho_layout(built):
    out, summary = built
    assert set(summary["flavours"]) == {"audiocaps", "clotho", "labels"}
    for flavour in ("audiocaps", "clotho"):
        folder = out / flavour
        for split, n in zip(SPLITS, (8, 3, 3)):
            rows = _captions(folder, split)
            assert len(rows) == n and list(rows[0]) == ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
            for row in rows:
                info = sf.info(str(folder / split / row["file_name"]))
                assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "PCM_16", int(CLIP * SR))
                filled = [row[f"caption_{i}"] for i in range(1, 6) if row[f"caption_{i}"]]
                if flavour == "audiocaps" and split == "development":
                    assert len(filled) == 1 and row["caption_1"]
                else:
                    assert len(filled) == 5 and len({c.lower() for c in filled}) == 5
            assert len(list((folder / split).glob("*.wav"))) == n
        readme = (folder / "README.md").read_text()
        assert "qabcs-data" in readme and "GPL-3+" in readme and "9.9-1" in readme
        assert (folder / "LICENSES" / "qabcs-data.copyright").is_file()
    assert summary["flavours"]["audiocaps"]["captions"] == {"development": 8, "validation": 15, "evaluation": 15}


def test_build_manifest_lists_every_file_with_its_hash(built):
    out, _ = built
    for flavour in FLAVOURS:
        folder = out / flavour
        manifest = json.loads((folder / "manifest.json").read_text())
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"}
        assert set(manifest["files"]) == on_disk and not (folder / ".build.json").exists()
        for name, entry in manifest["files"].items():
            data = (folder / name).read_bytes()
            assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        assert manifest["params"]["packages"]["qabcs-data"] == "9.9-1"


def test_build_filters_jingles_and_silence(built):
    out, summary = built
    sources = _sources(out / "clotho")
    assert "qabcs-data:cheburashka.ogg" not in sources and "scratch:Music Loops/Techno.wav" not in sources
    assert "tuxpaint-stamps-default:animals/marsupials/wombat.ogg" not in sources
    assert "tuxpaint-stamps-default:animals/mammals/bovines/bull.ogg" not in sources  # listed as cow, all zeros
    dropped = summary["inventory"]["dropped"]
    rows = load_sources()
    listed = {r["path"] for r in rows if r["package"] == "openttd-opensfx" and r["class"]}
    empty_but_listed = sum(str(i) in listed for i in range(1, 37))  # the fake container's empty entries 1..36
    assert dropped["silent: all zeros or below -60 dBFS"] == 1 + empty_but_listed  # + the bull
    assert dropped["jingle: cartoon character"] == 1 and dropped["music loop"] == 1
    labels = {r["file_name"]: r for split in SPLITS for r in _captions(out / "labels", split)}
    assert labels["tuxpaint_stamps_default_animals_mammals_dogs_dog.wav"]["caption_1"] == "A dog."
    horse = labels["openttd_opensfx_38.wav"]
    assert (horse["caption_1"], horse["caption_2"]) == ("Horse", "A horse neighing in a field")
    assert labels["openttd_opensfx_37.wav"]["caption_2"] == "Cow - Moan 2"  # original title, extension removed


def test_scene_sources_stay_in_their_split(built):
    out, summary = built
    for flavour in ("audiocaps", "clotho"):
        sources = _sources(out / flavour)
        split_of_group = {}
        for row in sources.values():
            assert split_of_group.setdefault(row["group"], row["split"]) == row["split"], "a group crosses splits"
        used = set()
        for split in SPLITS:
            with open(out / flavour / f"scenes_{split}.csv", newline="") as handle:
                for row in csv.DictReader(handle):
                    keys = row["sources"].split(";")
                    assert all(sources[k]["split"] == split for k in keys), (split, keys)
                    timeline = json.loads(row["timeline"])
                    assert [e["source"] for e in timeline["events"]] == keys[: len(timeline["events"])]
                    used.update((split, k) for k in keys)
        assert {s for s, _ in used} == set(SPLITS)
    labels = _sources(out / "labels")
    by_name = {label_file_name(k): row for k, row in labels.items()}
    assert len(by_name) == len(labels)
    for split in SPLITS:
        for row in _captions(out / "labels", split):
            assert by_name.pop(row["file_name"])["split"] == split
    assert not by_name, "every labels recording is one clip"


def _hashes(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["files"]


def test_same_seed_gives_identical_files_and_another_seed_differs(built, packages, tmp_path):
    out, _ = built
    again = build(tmp_path / "a", flavour="clotho", packages_dir=packages, seed=0, clip_seconds=CLIP,
                  sample_rate=SR, progress=False, **SIZES)
    assert again["flavours"]["clotho"]["status"] == "built"
    assert _hashes(tmp_path / "a" / "clotho") == _hashes(out / "clotho")
    build(tmp_path / "b", flavour="clotho", packages_dir=packages, seed=1, clip_seconds=CLIP,
          sample_rate=SR, progress=False, **SIZES)
    other = _hashes(tmp_path / "b" / "clotho")
    assert other["clotho_captions_evaluation.csv"] != _hashes(out / "clotho")["clotho_captions_evaluation.csv"]


def test_training_size_leaves_test_scenes_and_first_training_scenes_unchanged(built, packages, tmp_path):
    """Runs trained on data sets of different training sizes are tested on the same clips (the
    model notes compare them), and a larger set only adds scenes after the smaller one's."""
    out, _ = built
    build(tmp_path / "big", flavour="clotho", packages_dir=packages, seed=0, clip_seconds=CLIP,
          sample_rate=SR, progress=False, **{**SIZES, "n_train": SIZES["n_train"] + 4})
    small, big = _hashes(out / "clotho"), _hashes(tmp_path / "big" / "clotho")
    for split in ("validation", "evaluation"):
        files = [name for name in small if name.startswith(f"{split}/")]
        assert files and {name: big[name] for name in files} == {name: small[name] for name in files}
        assert big[f"clotho_captions_{split}.csv"] == small[f"clotho_captions_{split}.csv"]
    training = sorted(name for name in small if name.startswith("development/"))
    assert len(training) == SIZES["n_train"] and all(big[name] == small[name] for name in training)
    assert len([name for name in big if name.startswith("development/")]) == SIZES["n_train"] + 4


def test_rebuild_when_up_to_date_does_nothing(built, packages):
    out, _ = built
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    summary = build(out, packages_dir=packages, seed=0, clip_seconds=CLIP, sample_rate=SR, progress=False, **SIZES)
    assert {f: s["status"] for f, s in summary["flavours"].items()} == dict.fromkeys(FLAVOURS, "up to date")
    assert "inventory" not in summary  # no audio was even loaded
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_changed_parameters_rebuild_cleanly(built, packages, tmp_path):
    out, _ = built
    target = tmp_path / "e"
    build(target, flavour="audiocaps", packages_dir=packages, seed=0, clip_seconds=CLIP, sample_rate=SR,
          progress=False, **SIZES)
    summary = build(target, flavour="audiocaps", packages_dir=packages, seed=0, clip_seconds=CLIP,
                    sample_rate=SR, progress=False, n_train=4, n_val=2, n_test=2)
    assert summary["flavours"]["audiocaps"]["status"] == "built"
    assert len(list((target / "audiocaps" / "development").glob("*.wav"))) == 4  # the older 8 clips are gone


def test_killed_build_is_detected_and_finished(built, packages, tmp_path, monkeypatch):
    out, _ = built
    target = tmp_path / "partial"
    written = []
    real_write = write_wav

    def dying_write(path, wave, rate):
        if len(written) == 5:
            raise KeyboardInterrupt("killed")
        written.append(path)
        real_write(path, wave, rate)

    monkeypatch.setattr("thadcr.data.embedded.build.write_wav", dying_write)
    with pytest.raises(KeyboardInterrupt):
        build(target, flavour="clotho", packages_dir=packages, seed=0, clip_seconds=CLIP, sample_rate=SR,
              progress=False, **SIZES)
    folder = target / "clotho"
    assert not (folder / "manifest.json").exists() and (folder / ".build.json").exists()
    assert not list(folder.rglob("*.partial"))
    monkeypatch.setattr("thadcr.data.embedded.build.write_wav", real_write)
    mtimes = {p: p.stat().st_mtime_ns for p in written}
    summary = build(target, flavour="clotho", packages_dir=packages, seed=0, clip_seconds=CLIP, sample_rate=SR,
                    progress=False, **SIZES)
    assert summary["flavours"]["clotho"]["status"] == "resumed"
    assert {p: p.stat().st_mtime_ns for p in written} == mtimes, "finished clips are kept, not rewritten"
    assert _hashes(folder) == _hashes(out / "clotho")


def test_bad_arguments_are_clear(packages, tmp_path):
    with pytest.raises(EmbeddedDataError, match="unknown flavour 'audioset'"):
        build(tmp_path, flavour="audioset", packages_dir=packages, progress=False)
    with pytest.raises(EmbeddedDataError, match="clip_seconds"):
        build(tmp_path, clip_seconds=0, packages_dir=packages, progress=False)


REAL_PACKAGES = Path(__file__).resolve().parents[1] / "data" / "packages"


@pytest.mark.skipif(not all((REAL_PACKAGES / p / "usr").is_dir() for p in PACKAGES),
                    reason="real packages not downloaded (run `thadcr data build` once)")
def test_real_packages_inventory():
    trees = {p: REAL_PACKAGES / p for p in PACKAGES}
    recordings, readers, drops, missing = inventory(trees)
    assert missing == [] and len(recordings) >= 300
    assert not any(reason == "not in the curated table" for _, reason in drops)
    assert len({r.cls for r in recordings}) == len(load_classes())


def test_atomic_write_uses_a_unique_temporary_and_cleans_up(tmp_path):
    from thadcr.files import atomic_write  # the builder writes every file through it

    target = tmp_path / "clip.txt"
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_text("done")

    atomic_write(target, write)
    atomic_write(target, write)
    assert target.read_text() == "done" and seen[0] != seen[1]  # two writers never share a temporary
    assert all(p.name.startswith("clip.txt.") and p.name.endswith(".partial") for p in seen)

    def failing(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "done"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.txt"]  # no temporary left behind


def test_recordings_equal_once_prepared_share_a_group_or_are_dropped():
    """Two files that differ only in leading silence and gain are one recording: same class -> the
    first one's group (so one split), another class -> dropped; nothing else is touched."""
    rate = 16000
    sound = _sound(3, 1.0, rate)
    padded = np.concatenate([np.zeros(rate // 2, np.float32), 0.5 * sound])
    waves = {"a": sound, "b": padded, "c": padded, "d": _sound(4, 1.0, rate)}
    classes = {"a": "wood", "b": "wood", "c": "glass", "d": "wood"}

    def recording(key):
        return Recording(key=key, package="p", path=key, cls=classes[key], kind="event", group=f"g-{key}",
                         text="", licence="", credit="")

    readers = {key: (lambda wave=wave: (wave, rate)) for key, wave in waves.items()}
    audio, kept, drops = load_recordings([recording(k) for k in "abcd"], readers, rate, progress=False)
    assert [r.key for r in kept] == ["a", "b", "d"] and sorted(audio) == ["a", "b", "d"]
    assert {r.key: r.group for r in kept} == {"a": "g-a", "b": "g-a", "d": "g-d"}
    assert drops == [("c", "duplicate audio of a with another class")]
