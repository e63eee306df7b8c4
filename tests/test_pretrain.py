"""Tests of `thadcr pretrain` (thadcr.experiments.pretrain): tag scenes, taggers, checkpoints, committed files.

The material comes from the synthetic packages of tests/test_embedded.py (no apt, no network);
one slow test checks the real packages' material when `data/packages` is there.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_embedded import make_packages

from thadcr.data.embedded.build import SPLITS
from thadcr.data.embedded.inventory import load_classes
from thadcr.data.embedded.packages import PACKAGES
from thadcr.data.embedded.scenes import Scene, render_scene

from thadcr.experiments import pretrain
from thadcr.model.audio import CheckpointError, load_htsat_checkpoint, load_resnet38_checkpoint
from thadcr.model.htsat import HTSAT
from thadcr.model.resnet38 import ResNet38
from thadcr.config import make_config
from thadcr.experiments.plan import config_for

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "checkpoints" / "tiny"
CLIP = 2.0  # seconds of the test scenes (the profile's 5 s would only be slower)


@pytest.fixture(scope="module")
def material(tmp_path_factory) -> pretrain.Material:
    return pretrain.load_material(make_packages(tmp_path_factory.mktemp("packages")), 32000, progress=False)


@pytest.fixture(scope="module")
def config():
    return make_config("tiny", {"clip_seconds": CLIP})


def _keys(scene: Scene) -> list[str]:
    return [e.key for e in scene.events] + ([scene.background] if scene.background else [])


def test_tag_scenes_draw_only_their_splits_recordings(material):
    seen = {split: set() for split in SPLITS}
    for split in SPLITS:
        for index in range(150):
            scene, _, _ = pretrain.tag_scene(material, split, 3, index, CLIP)
            seen[split].update(_keys(scene))
    assert all(material.splits[k] == split for split, keys in seen.items() for k in keys)
    development = {r.key for r in material.recordings if material.splits[r.key] == "development"}
    assert seen["development"] == development  # every development recording is used, nothing else


def test_a_stray_recording_in_the_development_pool_is_refused(material):
    stray = next(r for r in material.recordings if material.splits[r.key] == "evaluation" and r.kind == "event")
    pools = {**material.pools, "development": {stray.cls: [stray.key]}}
    broken = dataclasses.replace(material, pools=pools)
    with pytest.raises(pretrain.PretrainError, match="another split"):
        pretrain.tag_scene(broken, "development", 0, 0, CLIP)


def test_targets_are_the_rendered_scenes_classes(material):
    for index in range(40):
        scene, wave, targets = pretrain.tag_scene(material, "development", 0, index, CLIP)
        present = {e.cls for e in scene.events} | ({scene.background_cls} if scene.background_cls else set())
        assert {material.classes[i] for i in np.flatnonzero(targets)} == present
        np.testing.assert_array_equal(wave, render_scene(scene, material.audio, 32000, CLIP))


def test_scenes_depend_on_seed_split_and_index_only(material):
    dataset = pretrain.TagScenes(material, "development", 5, 6, CLIP)
    backwards = [dataset[i] for i in reversed(range(6))][::-1]
    for i, (logmel, targets) in enumerate(backwards):
        again = pretrain.TagScenes(material, "development", 5, 6, CLIP)[i]
        assert torch.equal(logmel, again[0]) and torch.equal(targets, again[1])
    assert logmel.shape == (1 + int(CLIP * 32000) // 320, 64)
    other_seed = pretrain.tag_scene(material, "development", 6, 5, CLIP)[1]
    assert not np.array_equal(other_seed, pretrain.tag_scene(material, "development", 5, 5, CLIP)[1])


def test_speed_perturbation_keeps_the_plan_and_labels_and_changes_the_sound(material):
    changed = 0
    for index in range(20):
        plain, plain_wave, plain_targets = pretrain.tag_scene(material, "development", 0, index, CLIP)
        scene, wave, targets = pretrain.tag_scene(material, "development", 0, index, CLIP, speed=True)
        assert scene == plain and np.array_equal(targets, plain_targets) and wave.shape == plain_wave.shape
        again = pretrain.tag_scene(material, "development", 0, index, CLIP, speed=True)[1]
        np.testing.assert_array_equal(wave, again)
        changed += not np.allclose(wave, plain_wave, atol=1e-3)
    assert changed >= 15  # a scene whose every factor came out 1.0 sounds as before
    tone = np.sin(2 * np.pi * 440 * np.arange(32000) / 32000).astype(np.float32)  # 1 s at 440 Hz
    faster = pretrain._play_faster(tone, 1.1, 32000)
    assert len(faster) == pytest.approx(32000 / 1.1, abs=2)
    spectrum = np.abs(np.fft.rfft(faster[1000:-1000] * np.hanning(len(faster) - 2000)))
    assert np.argmax(spectrum) / (len(faster) - 2000) * 32000 == pytest.approx(484, abs=3)  # 440 Hz x 1.1


def test_tscam_layout_puts_the_stacked_chunks_back_in_time_order():
    g, r, C = 4, 2, 3
    tokens = torch.zeros(1, g * g, C)
    for h in range(g):
        for w in range(g):
            tokens[0, h * g + w] = torch.tensor([h, w, 0.0])
    out = pretrain.tscam_layout(tokens, r)  # (1, C, g/r, r*g)
    assert out.shape == (1, C, g // r, r * g)
    for f in range(g // r):
        for t in range(r * g):  # time t = chunk * g + column; the chunk's row is chunk * (g/r) + f
            chunk, column = divmod(t, g)
            assert out[0, :2, f, t].tolist() == [chunk * (g // r) + f, column]


def test_average_precision_matches_hand_figures():
    labels = np.array([1, 0, 1, 0, 0])
    assert pretrain.average_precision(np.array([0.9, 0.8, 0.7, 0.1, 0.0]), labels) == pytest.approx((1 + 2 / 3) / 2)
    assert pretrain.average_precision(np.array([0.0, 0.9, 0.1, 0.8, 0.7]), labels) == pytest.approx((1 / 4 + 2 / 5) / 2)
    summary = pretrain.macro_map(np.array([[0.9, 0.1], [0.1, 0.2]]), np.array([[1, 0], [0, 0]]), ["a", "b"])
    assert summary["classes_present"] == 1 and summary["mAP"] == 1.0  # class b has no positive: left out


def _settings(encoder: str, seed: int = 0) -> pretrain.Settings:
    return pretrain.Settings(encoder, steps=3, batch_size=4, warmup=2, seed=seed, n_val=8, n_eval=8)


@pytest.mark.parametrize("encoder", pretrain.ENCODERS)
def test_same_seed_gives_bit_identical_checkpoints_whatever_the_workers(encoder, material, config, tmp_path):
    first = pretrain.pretrain(_settings(encoder), config, material, tmp_path / "a", workers=0, progress=False)
    second = pretrain.pretrain(_settings(encoder), config, material, tmp_path / "b", workers=1, progress=False)
    third = pretrain.pretrain(_settings(encoder, seed=1), config, material, tmp_path / "c", workers=0, progress=False)
    name = pretrain.CHECKPOINT_NAMES[encoder]
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first["sha256"] == second["sha256"] != third["sha256"]
    assert first["sha256"] == pretrain.sha256_file(tmp_path / "a" / name)
    assert first["evaluation"]["mAP"] == second["evaluation"]["mAP"]
    assert not list((tmp_path / "a").glob("*.state.pt")) and not list((tmp_path / "a").glob("*.partial"))


def test_checkpoints_load_into_the_tiny_encoders_through_the_official_loaders(material, config, tmp_path):
    n = len(material.classes)
    for encoder in pretrain.ENCODERS:
        pretrain.pretrain(_settings(encoder), config, material, tmp_path, workers=0, progress=False)
    htsat_path, resnet_path = (tmp_path / pretrain.CHECKPOINT_NAMES[e] for e in pretrain.ENCODERS)
    state = torch.load(htsat_path, map_location="cpu", weights_only=True)["state_dict"]
    assert state["sed_model.tscam_conv.weight"].shape == (n, 256, 2, 3) and state["sed_model.head.weight"].shape == (n, n)
    report = load_htsat_checkpoint(HTSAT("tiny"), htsat_path)
    buffers = [k for k in report.ignored if k.endswith("relative_position_index")]  # the tiny grid has no attn_mask
    assert len(buffers) == 5 and set(report.ignored) - set(buffers) == {
        "tscam_conv.weight", "tscam_conv.bias", "head.weight", "head.bias"}
    state["sed_model.layers.3.blocks.0.attn.relative_position_index"][0, 0] += 1
    torch.save({"state_dict": state}, tmp_path / "tampered.ckpt")
    with pytest.raises(CheckpointError, match="differs from the one computed here"):  # the loader checks them
        load_htsat_checkpoint(HTSAT("tiny"), tmp_path / "tampered.ckpt")
    model = torch.load(resnet_path, map_location="cpu", weights_only=True)["model"]
    assert model["fc_audioset.weight"].shape == (n, 256) and model["fc1.weight"].dtype == torch.float32
    report = load_resnet38_checkpoint(ResNet38(width=config.resnet38_width, dropout=config.resnet38_dropout), resnet_path)
    assert report.ignored == ["fc_audioset.bias", "fc_audioset.weight"]
    trained = pretrain.load_tagger("htsat", config, n, htsat_path)
    assert torch.equal(trained.tscam_conv.weight, state["sed_model.tscam_conv.weight"].float())
    assert torch.equal(trained.encoder.bn0.running_mean, state["sed_model.bn0.running_mean"].float())


def test_an_interrupted_pretraining_resumes_to_the_same_checkpoint(material, config, tmp_path, monkeypatch):
    settings = pretrain.Settings("htsat", steps=4, batch_size=4, warmup=2, n_val=8, n_eval=8)
    whole, _ = pretrain.train_tagger(settings, config, material, tmp_path / "whole", workers=0, save_every=2,
                                     progress=False)
    (tmp_path / "cut").mkdir()
    original = pretrain.F.binary_cross_entropy_with_logits
    calls = []

    def interrupt_at_step_four(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(pretrain.F, "binary_cross_entropy_with_logits", interrupt_at_step_four)
    with pytest.raises(KeyboardInterrupt):
        pretrain.train_tagger(settings, config, material, tmp_path / "cut", workers=0, save_every=2, progress=False)
    monkeypatch.setattr(pretrain.F, "binary_cross_entropy_with_logits", original)
    assert (tmp_path / "cut" / "htsat-tiny.ckpt.state.pt").is_file()
    resumed, _ = pretrain.train_tagger(settings, config, material, tmp_path / "cut", workers=0, save_every=2,
                                       progress=False)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(pretrain.PretrainError, match="other settings"):
        pretrain.train_tagger(pretrain.Settings("htsat", steps=5, batch_size=4), config, material, tmp_path / "cut",
                              workers=0, progress=False)


def test_an_existing_checkpoint_is_not_overwritten(material, config, tmp_path):
    (tmp_path / "htsat-tiny.ckpt").write_bytes(b"keep")
    with pytest.raises(pretrain.PretrainError, match="--overwrite"):
        pretrain.pretrain(_settings("htsat"), config, material, tmp_path, workers=0, progress=False)
    assert (tmp_path / "htsat-tiny.ckpt").read_bytes() == b"keep"


def test_splits_that_disagree_with_the_built_data_set_are_refused(material, tmp_path):
    key = next(k for k, split in material.splits.items() if split == "development")
    rows = ["key,split"] + [f"{k},{'evaluation' if k == key else s}" for k, s in material.splits.items()]
    (tmp_path / "sources.csv").write_text("\n".join(rows[:1] + rows[2:]) + "\n")
    with pytest.raises(pretrain.PretrainError, match="--data-seed"):  # a recording missing from the list
        pretrain._check_splits(material.splits, tmp_path / "sources.csv", 0)
    rows = ["key,split"] + [f"{k},{s}" for k, s in material.splits.items()]
    (tmp_path / "sources.csv").write_text("\n".join(rows) + "\n")
    pretrain._check_splits(material.splits, tmp_path / "sources.csv", 0)  # the same splits pass
    rows = ["key,split"] + [f"{k},{'evaluation' if k == key else s}" for k, s in material.splits.items()]
    (tmp_path / "sources.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(pretrain.PretrainError, match="--data-seed"):
        pretrain._check_splits(material.splits, tmp_path / "sources.csv", 0)


# ---------------------------------------------------------------------------------------------
# the committed checkpoints and the tiny profile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", pretrain.ENCODERS)
def test_committed_checkpoints_match_their_reports_and_load(encoder):
    path = COMMITTED / pretrain.CHECKPOINT_NAMES[encoder]
    report = json.loads(path.with_name(path.name + ".json").read_text())
    assert report["sha256"] == pretrain.sha256_file(path) and report["bytes"] == path.stat().st_size
    assert report["bytes"] < pretrain.MAX_CHECKPOINT_BYTES and report["encoder"] == encoder
    profile = make_config("tiny")
    assert report["data"]["clip_seconds"] == profile.clip_seconds and report["data"]["sample_rate"] == profile.sample_rate
    assert report["model"] == {"htsat_size": profile.htsat_size, "resnet38_width": profile.resnet38_width,
                               "resnet38_dropout": profile.resnet38_dropout}
    assert report["data"]["classes"] == list(load_classes())
    for split in ("validation", "evaluation"):
        assert 0.0 < report[split]["mAP"] <= 1.0 and report[split]["classes_present"] > 0
    tiny = config_for("tiny", "audiocaps", {"audio_encoder": encoder})
    assert Path(tiny.audio_checkpoint).resolve() == path.resolve()
    encoder_model = HTSAT(tiny.htsat_size) if encoder == "htsat" else ResNet38(tiny.resnet38_width, dropout=tiny.resnet38_dropout)
    loader = load_htsat_checkpoint if encoder == "htsat" else load_resnet38_checkpoint
    assert loader(encoder_model, path).loaded


def test_tiny_profile_names_the_htsat_checkpoint_and_the_paper_profile_keeps_panns():
    values = yaml.safe_load((REPO / "thadcr" / "profiles" / "tiny.yaml").read_text())
    assert values["audio_checkpoint"] == f"checkpoints/tiny/{pretrain.CHECKPOINT_NAMES['htsat']}"
    assert config_for("tiny", "clotho", {"audio_encoder": "resnet38", "audio_checkpoint": "x.pth"}).audio_checkpoint == "x.pth"
    assert config_for("paper", "audiocaps", {"audio_encoder": "resnet38"}).audio_checkpoint.endswith("ResNet38_mAP=0.434.pth")


REAL_PACKAGES = REPO / "data" / "packages"
REAL_SOURCES = REPO / "data" / "embedded" / "audiocaps" / "sources.csv"


@pytest.mark.slow
@pytest.mark.skipif(not all((REAL_PACKAGES / p / "usr").is_dir() for p in PACKAGES),
                    reason="the Debian packages are not in data/packages (run `thadcr data build`)")
def test_real_material_agrees_with_the_built_data_set_and_trains_on_development_only():
    material = pretrain.load_material(REAL_PACKAGES, 32000, sources_csv=REAL_SOURCES, progress=False)
    if REAL_SOURCES.is_file():  # load_material checked every split against it; check the check ran on data
        assert len(REAL_SOURCES.read_text().splitlines()) == len(material.recordings) + 1
    used = set()
    for index in range(2000):
        scene, _, _ = pretrain.tag_scene(material, "development", 0, index, 5.0)
        used.update(_keys(scene))
    assert {material.splits[k] for k in used} == {"development"}
    development = [r for r in material.recordings if material.splits[r.key] == "development"]
    assert {r.cls for r in development if r.key in used} == {r.cls for r in development}  # every class is trained
