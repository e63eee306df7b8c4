"""RetrievalModel: every variant builds, scores all pairs, and trains (gradients reach every parameter)."""

import pytest
import torch

from thadcr.model.audio import CheckpointError
from thadcr.config import VARIANT_PARTS, VARIANTS, ConfigError, VariantParts, make_config
from thadcr.model.factors import dcr_similarity, uniform_factor_similarity
from thadcr.model.retrieval import build_model, concat_embeddings

CAPTIONS = ["a dog barks then a bell rings", "rain falls", "a car passes by while birds sing", "a low tone"]


def tiny(variant, **changes):
    """The tiny profile with every encoder trained (the fine-tuning setting: gradients reach them)."""
    values = {"variant": variant, "text_trainable_layers": -1, "joint_dim": 64, "n_factors": 8, "audio_frozen": False}
    values.update(changes)
    return make_config("tiny", values)


def _logmel(batch=4, frames=101, seed=0):
    return torch.randn(batch, frames, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=VARIANTS)
def variant_model(request):
    torch.manual_seed(0)
    return build_model(tiny(request.param))


def test_similarity_is_all_pairs(variant_model):
    model = variant_model.eval()
    with torch.no_grad():
        audio = model.encode_audio(_logmel(3))
        text = model.encode_text(CAPTIONS)
        sim = model.similarity(audio, text)
    assert sim.shape == (3, 4) and torch.isfinite(sim).all()
    # scoring in blocks of clips gives the same matrix
    with torch.no_grad():
        rows = torch.cat([model.similarity(audio.select(slice(i, i + 1)), text) for i in range(3)])
    torch.testing.assert_close(rows, sim, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter_on_the_variant_path(variant_model):
    model = variant_model.train()
    model.zero_grad()
    losses = model.loss(_logmel(4), CAPTIONS, torch.arange(4))
    losses["loss"].backward()
    missing = {n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)}
    # THA alone scores stage outputs only: HTS-AT's final norm (which makes the pooled ā) is unused
    expected = {"audio_encoder.norm.weight", "audio_encoder.norm.bias"} if model.config.variant == "THA" else set()
    assert missing == expected, f"parameters without gradient: {sorted(missing)}"
    assert torch.isfinite(losses["loss"])


def test_loss_parts_follow_the_variant(variant_model):
    model = variant_model.train()
    with torch.no_grad():
        losses = model.loss(_logmel(4), CAPTIONS, torch.arange(4))
    parts = VARIANT_PARTS[model.config.variant]
    alpha = model.config.alpha if "L_D" in parts.losses else 0.0
    beta = model.config.beta if "L_A" in parts.losses else 0.0
    expected = losses["loss_S"] + alpha * losses["loss_D"] + beta * losses["loss_A"]
    torch.testing.assert_close(losses["loss"], expected)
    if not parts.factors:
        assert losses["loss_D"] == 0 and losses["loss_A"] == 0
    else:
        assert losses["loss_D"] > 0 and losses["loss_A"] > 0


def _used(parts: VariantParts) -> set[str]:
    return {name for name in ("tha", "dp", "factors", "ca", "loss_d", "loss_a") if getattr(parts, name)}


def test_the_variant_table_reads_as_the_papers_tables():
    """Section 3.2: "THA+DP" and "THA+DCR" combine THA with DP or DCR; Table 3 adds one part per
    row to DP (HTSAT): L_D (on the latent factors, which score without CA), then L_A, then CA
    (the full DCR, L_D and L_A included: section 2.4's L = L_S + alpha L_D + beta L_A)."""
    table = VARIANT_PARTS
    assert tuple(table) == VARIANTS and all(parts.name == name for name, parts in table.items())
    assert _used(table["DP"]) == {"dp"} and _used(table["THA"]) == {"tha"}
    assert _used(table["THA+DP"]) == _used(table["THA"]) | _used(table["DP"])
    assert _used(table["THA+DCR"]) == _used(table["THA"]) | _used(table["DCR"])
    assert _used(table["DP+LD"]) == {"factors", "loss_d"}
    assert _used(table["DP+LD+LA"]) - _used(table["DP+LD"]) == {"loss_a"}
    assert _used(table["DCR"]) - _used(table["DP+LD+LA"]) == {"ca"}
    assert [table[v].terms for v in VARIANTS] == [
        ("S_DP",), ("S_THA",), ("S_THA", "S_DP"), ("S_DCR",), ("S_THA", "S_DCR"), ("S_factors",), ("S_factors",)]
    assert table["THA+DCR"].losses == ("L_S", "L_D", "L_A") and table["DP+LD"].losses == ("L_S", "L_D")
    assert make_config("tiny", {"variant": "DP+LD"}).parts is table["DP+LD"]
    with pytest.raises(ValueError, match="latent factors"):
        VariantParts("DP+CA", dp=True, ca=True)
    with pytest.raises(ValueError, match="at least one term"):
        VariantParts("nothing")


def test_the_model_builds_and_adds_what_the_table_names(variant_model):
    """Modules, embeddings and S follow the variant's row: S is the sum of the terms it names,
    each computed here from the embeddings on its own."""
    model = variant_model.eval()
    parts = VARIANT_PARTS[model.config.variant]
    modules = {"tha": hasattr(model, "tha"), "dp": hasattr(model, "audio_dp") and hasattr(model, "text_dp"),
               "factors": hasattr(model, "audio_factors") and hasattr(model, "text_factors"), "ca": hasattr(model, "ca")}
    assert modules == {name: getattr(parts, name) for name in modules}
    with torch.no_grad():
        audio, text = model.encode_audio(_logmel(3)), model.encode_text(CAPTIONS)
        for side in (audio, text):
            assert (side.tha is not None, side.dp is not None, side.factors is not None) == (
                parts.tha, parts.dp, parts.factors)
        k = model.config.n_factors if model.config.factor_reduce == "mean" else 1
        term = {
            "S_THA": lambda: model.tha.score(audio.tha, text.tha, text.mask),
            "S_DP": lambda: torch.nn.functional.cosine_similarity(audio.dp[:, None], text.dp[None], dim=-1),
            "S_DCR": lambda: dcr_similarity(e_audio=audio.factors, e_text=text.factors, ca=model.ca) / k,
            "S_factors": lambda: uniform_factor_similarity(e_audio=audio.factors, e_text=text.factors) / k,
        }
        expected = sum(term[name]() for name in parts.terms)
        torch.testing.assert_close(model.similarity(audio, text), expected, rtol=1e-5, atol=1e-5)


def test_tiny_config_trains_one_step():
    torch.manual_seed(0)
    model = build_model(tiny("THA+DCR", text_trainable_layers=0))
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    logmel = _logmel(4)
    losses = model.loss(logmel, CAPTIONS, torch.arange(4))
    losses["loss"].backward()
    optimizer.step()
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, params))
    assert not any(p.requires_grad for p in model.text_encoder.parameters())


def test_resnet38_dp_and_refusal_for_tha():
    model = build_model(tiny("DP", audio_encoder="resnet38", resnet38_width=0.125, audio_checkpoint=None))
    with torch.no_grad():
        audio = model.encode_audio(_logmel(2))
    assert audio.dp.shape == (2, 64)
    with pytest.raises(ConfigError, match="ResNet38"):
        build_model(tiny("THA", audio_encoder="resnet38"))
    with pytest.raises(CheckpointError, match="the other audio encoder's checkpoints"):  # the profile's HTS-AT file
        build_model(tiny("DP", audio_encoder="resnet38"))


def test_concat_embeddings_pads_text_blocks():
    model = build_model(tiny("THA")).eval()
    with torch.no_grad():
        parts = [model.encode_text(CAPTIONS[:2]), model.encode_text(CAPTIONS[2:])]
        whole = concat_embeddings(parts)
        audio = model.encode_audio(_logmel(2))
        direct = model.similarity(audio, model.encode_text(CAPTIONS))
    assert whole.mask.shape[0] == 4
    torch.testing.assert_close(model.similarity(audio, whole), direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["DCR", "DP+LD"])
def test_factor_reduce_mean_divides_the_factor_similarity_by_k(variant):
    torch.manual_seed(0)
    summed = build_model(tiny(variant, factor_reduce="sum")).eval()
    averaged = build_model(tiny(variant, factor_reduce="mean")).eval()
    averaged.load_state_dict(summed.state_dict())
    with torch.no_grad():
        audio, text = summed.encode_audio(_logmel(3)), summed.encode_text(CAPTIONS)
        torch.testing.assert_close(averaged.similarity(audio, text), summed.similarity(audio, text) / 8)


def test_tha_max_audio_tokens_pools_the_audio_levels():
    torch.manual_seed(0)
    model = build_model(tiny("THA", tha_max_audio_tokens=64)).eval()
    with torch.no_grad():
        audio = model.encode_audio(_logmel(2))
        sim = model.similarity(audio, model.encode_text(CAPTIONS))
    assert [level.shape[1] for level in audio.tha] == [64, 64, 16]  # tiny HTS-AT: 256, 64, 16 tokens
    assert sim.shape == (2, 4) and torch.isfinite(sim).all()
    with pytest.raises(ConfigError, match="tha_max_audio_tokens"):
        tiny("THA", tha_max_audio_tokens=-1)


def _confidence(ca, e_text, e_audio):
    """g_i = MLP([e_i^t, e_i^a]) written out (text first, section 2.4): (..., K, w) each -> (..., K)."""
    return ca.fc2(torch.relu(ca.fc1(torch.cat([e_text, e_audio], dim=-1)))).squeeze(-1)


def test_model_and_factor_analysis_pass_audio_and_text_factors_in_their_places():
    from thadcr.run.evaluation import factor_analysis
    from thadcr.model.factors import factor_correlation

    torch.manual_seed(0)
    model = build_model(tiny("DCR", factor_reduce="sum")).eval()
    with torch.no_grad():
        audio, text = model.encode_audio(_logmel(4)), model.encode_text(CAPTIONS)
        sim = model.similarity(audio, text)  # (4 clips, 4 captions): a swap keeps the shape
        cos = torch.nn.functional.cosine_similarity(audio.factors[:, None], text.factors[None], dim=-1)  # (4, 4, K)
        g = _confidence(model.ca, text.factors[None].expand(4, -1, -1, -1), audio.factors[:, None].expand(-1, 4, -1, -1))
        torch.testing.assert_close(sim, (g * cos).sum(-1))  # Eq. 4
        caption_audio = [2, 0, 3, 1]
        result = factor_analysis(model, audio, text, caption_audio)
        matched = audio.factors[caption_audio]
    want_c = factor_correlation(e_audio=matched, e_text=text.factors)  # rows text factors, columns audio
    assert not torch.allclose(want_c, want_c.T)
    torch.testing.assert_close(torch.as_tensor(result["C"]), want_c)
    torch.testing.assert_close(torch.as_tensor(result["g_positive"]), _confidence(model.ca, text.factors, matched))
