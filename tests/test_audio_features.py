"""Frozen encoders' feature caches, fold galleries, validation every n epochs, pilots on validation."""

import json
import logging
import math

import numpy as np
import pytest
import torch

from thadcr.model.alignment import pool_audio_tokens
from thadcr.run.features import AudioFeatureCache
from thadcr.config import make_config
from thadcr.data.datasets import ClipDataset, collate
from thadcr.errors import UsageError
from thadcr.run.evaluation import EvalSet, encode_split, fold_ranges, score_all, score_split
from thadcr.run.metrics import retrieval_metrics
from thadcr.model.retrieval import build_model
from thadcr.model.text import TextEncoder, TextFeatureCache
from thadcr.run.train import train

CAPTIONS = ["a dog barks then a bell rings", "rain", "a car passes by while birds sing in the distance", "a tone"]


def small_config(root, tmp_path, **changes):
    values = dict(
        data_root=str(root), layout="clotho", clip_seconds=1.0, batch_size=8, epochs=2, max_steps_per_epoch=2,
        eval_batch=8, joint_dim=64, cache_dir=str(tmp_path / "cache"), variant="THA+DCR", lr=1e-3,
        eval_fold_clips=0, val_every=1, tha_max_audio_tokens=4,
    )
    values.update(changes)
    return make_config("tiny", values)


@pytest.fixture(scope="module")
def frozen(synthetic_clotho, tmp_path_factory):
    """A THA+DCR model with the tiny profile's frozen, pretrained HTS-AT and the test split's cache."""
    tmp = tmp_path_factory.mktemp("frozen")
    config = small_config(synthetic_clotho, tmp)
    torch.manual_seed(0)
    model = build_model(config)
    data = EvalSet.open(config, "test", model)
    return config, model, data


def test_the_cache_holds_the_encoders_pooled_output_for_every_clip(frozen):
    config, model, data = frozen
    assert data.audio_cache is not None and len(data.audio_cache) == data.split.n_clips == 8
    batch = collate([ClipDataset(data.split, data.cache, data.n_frames)[i] for i in range(8)])
    with torch.no_grad():
        out = model.audio_encoder(batch["logmel"])  # (8, frames, mel) -> stages (8, M_l, C_l)
    cached = data.audio_cache(torch.arange(8))
    assert len(cached.stages) == 3
    for level, stored in zip(out.stages, cached.stages):
        want = pool_audio_tokens(level, config.tha_max_audio_tokens)
        assert stored.shape == want.shape and stored.shape[1] <= config.tha_max_audio_tokens
        torch.testing.assert_close(stored, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(cached.pooled, out.pooled, rtol=0, atol=1e-5)
    picked = data.audio_cache(torch.tensor([5, 2]))
    assert torch.equal(picked.pooled, cached.pooled[[5, 2]])


def test_the_cache_is_read_back_and_keyed_by_the_weights(frozen, caplog):
    config, model, data = frozen
    again = AudioFeatureCache(model.audio_encoder, data.split, data.cache, data.n_frames, torch.device("cpu"),
                              config.tha_max_audio_tokens)
    assert again.path == data.audio_cache.path and torch.equal(again.pooled, data.audio_cache.pooled)
    other = build_model(config.replace(audio_checkpoint=None, audio_frozen=False))  # other weights
    moved = AudioFeatureCache(other.audio_encoder, data.split, data.cache, data.n_frames, torch.device("cpu"), 4)
    assert moved.path != data.audio_cache.path
    moved.path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        redone = AudioFeatureCache(other.audio_encoder, data.split, data.cache, data.n_frames, torch.device("cpu"), 4)
    assert "unusable" in caplog.text and torch.equal(redone.pooled, moved.pooled)


def test_a_frozen_encoder_stays_fixed_and_the_cached_path_scores_as_the_encoder(frozen):
    config, model, data = frozen
    assert not any(p.requires_grad for p in model.audio_encoder.parameters())
    model.train()
    assert model.training and not model.audio_encoder.training  # no drop path, fixed statistics
    model.eval()
    batch = collate([ClipDataset(data.split, data.cache, data.n_frames)[i] for i in range(4)])
    with torch.no_grad():
        direct = model.encode_audio(batch["logmel"])
        cached = model.encode_audio(data.audio_cache(torch.arange(4)))
    for a, b in zip(direct.tha, cached.tha):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    torch.testing.assert_close(cached.factors, direct.factors, rtol=0, atol=1e-5)


def test_the_text_cache_stores_captions_unpadded_and_gives_the_encoders_output():
    encoder = TextEncoder(None, layers=(2, 5, 6), trainable_layers=0)
    captions = CAPTIONS * 3
    cache = TextFeatureCache(encoder, captions, torch.device("cpu"), batch=4)
    assert cache.offsets[-1] == sum(len(level) for level in cache.levels[:1])  # one row per stored token
    for index in (torch.tensor([2, 0, 1, 3]), torch.tensor([7, 11, 4])):
        got = cache(index)
        with torch.no_grad():
            want = encoder([captions[i] for i in index])
        width = got.mask.shape[1]
        assert torch.equal(got.mask, want.mask[:, :width]) and not want.mask[:, width:].any()
        for a, b in zip(got.levels, want.levels):
            torch.testing.assert_close(a[got.mask], b[:, :width][got.mask], rtol=0, atol=1e-5)
        torch.testing.assert_close(got.cls, want.cls, rtol=0, atol=1e-5)
    stored = cache(torch.arange(len(captions)))  # past a caption's last word: zeros (only [CLS] is kept)
    assert not stored.levels[0][~stored.mask & (torch.arange(stored.mask.shape[1]) > 0)].any()


# ------------------------------------------------------------------ folds
def test_fold_ranges_cut_in_file_order_and_refuse_a_remainder():
    assert fold_ranges(6, 0) == [range(6)] and fold_ranges(6, 200) == [range(6)]
    assert fold_ranges(6, 2) == [range(0, 2), range(2, 4), range(4, 6)]
    with pytest.raises(UsageError, match="7 clips, not a multiple of eval_fold_clips=2"):
        fold_ranges(7, 2)


def _fold_metrics_literal(sim, owner, fold_clips):
    """The folds' metrics computed one fold at a time (each fold its own gallery), averaged."""
    rows = []
    for start in range(0, sim.shape[0], fold_clips):
        captions = np.flatnonzero((owner >= start) & (owner < start + fold_clips))
        rows.append(retrieval_metrics(sim[start:start + fold_clips][:, captions], owner[captions] - start))
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def test_fold_scores_rank_every_query_in_its_own_fold(frozen):
    config, model, data = frozen
    audio, text = encode_split(model, data)
    whole = score_all(model, audio, text)  # (8, 40)
    folded = score_split(model, audio, text, EvalSet(**{**data.__dict__, "fold_clips": 4}))
    owner = np.asarray(data.split.caption_audio)
    same_fold = (np.arange(8)[:, None] // 4) == (owner[None, :] // 4)
    assert torch.isinf(folded[~torch.as_tensor(same_fold)]).all()
    torch.testing.assert_close(folded[torch.as_tensor(same_fold)], whole[torch.as_tensor(same_fold)], rtol=0, atol=1e-5)
    pooled = retrieval_metrics(folded, owner)
    literal = _fold_metrics_literal(whole.numpy(), owner, 4)
    for key in ("t2a_R1", "t2a_R5", "t2a_R10", "t2a_mAP10", "a2t_R1", "a2t_R5", "a2t_R10", "a2t_mAP10", "t2a_meanr"):
        assert pooled[key] == pytest.approx(literal[key], abs=1e-9), key
    broken = folded.clone()
    broken[owner[0], 0] = -math.inf  # a caption's own clip outside its gallery is refused, not ranked last
    with pytest.raises(ValueError, match="caption 0's own clip scores -inf"):
        retrieval_metrics(broken, owner)
    broken[owner[0], 0] = math.inf
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        retrieval_metrics(broken, owner)


# ------------------------------------------------------------------ training on cached features
def test_a_frozen_run_trains_on_cached_features_and_validates_every_nth_epoch(synthetic_clotho, tmp_path):
    config = small_config(synthetic_clotho, tmp_path, epochs=3, val_every=2, model_selection="last",
                          eval_fold_clips=4)
    initial = {k: v.clone() for k, v in build_model(config).audio_encoder.state_dict().items()}
    metrics = train(config, tmp_path / "run", progress=False)
    log = (tmp_path / "run" / "log.csv").read_text().strip().splitlines()
    header = log[0].split(",")
    values = [dict(zip(header, line.split(","))) for line in log[1:]]
    validated = [not math.isnan(float(row["val_t2a_R1"])) for row in values]
    assert validated == [False, True, True]  # epoch 2 (every 2nd) and the last
    assert metrics["best_epoch"] == 3 and metrics["n_trainable"] < metrics["n_parameters"] / 2
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model"]
    for key, value in initial.items():  # the frozen encoder's weights are the pretrained ones
        assert torch.equal(best[f"audio_encoder.{key}"], value), key
    assert any(p.name.startswith("audio-") for p in (tmp_path / "cache").rglob("audio-*.pt"))


def test_a_pilot_tests_on_validation_only(synthetic_clotho, tmp_path):
    config = small_config(synthetic_clotho, tmp_path, variant="DCR", epochs=1)
    metrics = train(config, tmp_path / "pilot", progress=False, test_split="val")
    saved = json.loads((tmp_path / "pilot" / "metrics.json").read_text())
    ranks = np.load(tmp_path / "pilot" / "test_ranks.npz")
    assert saved["tested_on"] == "val" and metrics["tested_on"] == "val"
    assert ranks["t2a"].shape == (saved["data"]["val"]["captions"],)
    with pytest.raises(ValueError, match="test_split='dev'"):
        train(config, tmp_path / "other", progress=False, test_split="dev")
