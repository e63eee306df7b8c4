"""Audio encoders (paper Sec. 2.1): log-mel front end, HTS-AT (Swin) and PANNs ResNet38.

Every piece is checked against a slow literal implementation (loops, float64) written from its
definition, plus shapes, the official parameter names (tests/data/*.tsv, copied from the
reference listings of the official checkpoints) and checkpoint loading.
"""

from __future__ import annotations

import argparse
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from thadcr.model.audio import CheckpointError, LogMel, load_htsat_checkpoint, load_resnet38_checkpoint
from thadcr.model.htsat import (
    HTSAT,
    HTSAT_CONFIGS,
    HTSATConfig,
    PatchMerging,
    SwinBlock,
    relative_position_index,
    reshape_wav2img,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from thadcr.model.resnet38 import ResNet38

DATA = Path(__file__).parent / "data"
D64 = torch.float64

# Keys of the official checkpoints that the encoders do not use (the loaders ignore them):
# torchlibrosa front end (replaced by LogMel), AudioSet classifier heads, and the attention
# buffers that HTSAT recomputes (registered non-persistent, so absent from its state_dict).
HTSAT_UNUSED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "tscam_conv.", "head.")
HTSAT_BUFFER_SUFFIXES = (".attn_mask", ".relative_position_index")
RESNET_UNUSED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "fc_audioset.")


def read_tsv(name: str) -> dict[str, tuple[int, ...]]:
    """name \\t shape listing -> {name: shape}."""
    out = {}
    for line in (DATA / name).read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return out


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one intra-op thread avoids OpenMP spin-waits on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Literal implementations
# ---------------------------------------------------------------------------------------------


def numpy_logmel(wave: np.ndarray, sr=32000, n_fft=1024, hop=320, n_mels=64, fmin=50.0, fmax=14000.0):
    """HTS-AT front end from its recipe, float64: reflect pad, periodic Hann, DFT, Slaney mel, dB."""
    pad = n_fft // 2
    x = np.concatenate([wave[pad:0:-1], wave, wave[-2 : -pad - 2 : -1]])  # reflect, edge not repeated
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
    k = np.arange(n_fft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(n, k) / n_fft)  # (n_fft, bins)
    n_frames = 1 + len(wave) // hop
    frames = np.stack([x[t * hop : t * hop + n_fft] * window for t in range(n_frames)])
    power = np.abs(frames @ dft) ** 2  # (frames, bins)

    def hz_to_mel(f):  # Slaney: linear below 1 kHz, logarithmic above
        return 3.0 * f / 200.0 if f < 1000 else 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)

    def mel_to_hz(m):
        return 200.0 * m / 3.0 if m < 15 else 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27.0)

    edges = [mel_to_hz(m) for m in np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)]
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, centre, hi = edges[m : m + 3]
        for j, f in enumerate(freqs):
            ramp = max(0.0, min((f - lo) / (centre - lo), (hi - f) / (hi - centre)))
            fb[m, j] = ramp * 2.0 / (hi - lo)  # Slaney area normalisation
    return 10 * np.log10(np.maximum(power @ fb.T, 1e-10))  # (frames, n_mels)


def shifted_group(r: int, shift: int, ws: int) -> int:
    """Swin Fig. 2: index of the shifted window holding original row/column r (edges partial)."""
    return (r - shift) // ws  # floor division: rows r < shift form their own window (-1)


@lru_cache(maxsize=None)
def literal_mask(H: int, W: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, N, N) mask written from the definition: in the grid rolled by -shift, two tokens of a
    window may attend iff they lie in the same shifted window of the ORIGINAL grid."""
    nWw = W // ws
    masks = []
    for w in range((H // ws) * nWw):
        groups = []  # per token of window w: its shifted window in original coordinates
        for i in range(ws * ws):
            r, c = (w // nWw) * ws + i // ws, (w % nWw) * ws + i % ws  # rolled coordinates
            r0, c0 = (r + shift) % H, (c + shift) % W  # original coordinates
            groups.append((shifted_group(r0, shift, ws), shifted_group(c0, shift, ws)))
        masks.append([[0.0 if gi == gj else -100.0 for gj in groups] for gi in groups])
    return torch.tensor(masks)


def literal_rel_index(ws: int) -> torch.Tensor:
    idx = torch.zeros(ws * ws, ws * ws, dtype=torch.long)
    for i in range(ws * ws):
        for j in range(ws * ws):
            dh, dw = i // ws - j // ws, i % ws - j % ws
            idx[i, j] = (dh + ws - 1) * (2 * ws - 1) + (dw + ws - 1)
    return idx


def literal_swin_attention(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Each token attends to the tokens of its (shifted) window in original coordinates, with the
    relative position bias B[dh, dw] of the table; softmax(q k^T / sqrt(d) + B) v, then proj."""
    H, W = block.resolution
    ws, s, attn = block.ws, block.shift, block.attn
    B, L, C = x.shape
    h = attn.num_heads
    d = C // h
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]
    table = attn.relative_position_bias_table
    out = torch.zeros(B, L, C, dtype=x.dtype)
    for p in range(L):
        rp, cp = divmod(p, W)
        group = (shifted_group(rp, s, ws), shifted_group(cp, s, ws))
        keys = [j for j in range(L) if (shifted_group(j // W, s, ws), shifted_group(j % W, s, ws)) == group]
        for head in range(h):
            sl = slice(head * d, (head + 1) * d)
            for b in range(B):
                logits = torch.stack([
                    q[b, p, sl] @ k[b, j, sl] / math.sqrt(d)
                    + table[(rp - j // W + ws - 1) * (2 * ws - 1) + (cp - j % W + ws - 1), head]
                    for j in keys
                ])
                weights = torch.softmax(logits, dim=0)
                out[b, p, sl] = sum(wt * v[b, j, sl] for wt, j in zip(weights, keys))
    return out @ attn.proj.weight.T + attn.proj.bias


# ---------------------------------------------------------------------------------------------
# Front end
# ---------------------------------------------------------------------------------------------


def test_logmel_matches_numpy_literal():
    sr = 32000
    t = np.arange(sr) / sr  # 1 s
    chirp = 0.5 * np.sin(2 * np.pi * (100 * t + (12000 - 100) / 2 * t**2))  # 100 Hz -> 12 kHz
    noise = 0.01 * np.random.default_rng(0).standard_normal((2, sr))
    waves = chirp[None] + noise  # (2, 32000)
    out = LogMel()(torch.tensor(waves, dtype=torch.float32))
    assert out.shape == (2, 101, 64)
    for b in range(2):
        ref = numpy_logmel(waves[b])
        np.testing.assert_allclose(out[b].double().numpy(), ref, rtol=1e-4, atol=1e-3)
    assert out.dtype == torch.float32


def test_logmel_frame_count_and_input_check():
    lm = LogMel()
    assert lm(torch.zeros(1, 320000)).shape == (1, 1001, 64)  # 10 s -> 1001 frames
    assert lm(torch.zeros(1, 160000)).shape == (1, 501, 64)
    assert lm(torch.zeros(1, 320000)).min() == -100.0  # silence hits the 1e-10 floor
    with pytest.raises(ValueError, match="B, samples"):
        lm(torch.zeros(320000))


# ---------------------------------------------------------------------------------------------
# Swin pieces
# ---------------------------------------------------------------------------------------------


def test_reshape_wav2img_literal():
    B, T, Fq, r = 2, 12, 5, 3
    x = torch.randn(B, 1, T, Fq, generator=gen())
    img = reshape_wav2img(x, r)
    assert img.shape == (B, 1, r * Fq, T // r)
    for b in range(B):
        for i in range(r):
            for f in range(Fq):
                for t in range(T // r):
                    assert img[b, 0, i * Fq + f, t] == x[b, 0, i * (T // r) + t, f]
    with pytest.raises(ValueError, match="divisible"):
        reshape_wav2img(torch.zeros(1, 1, 10, 4), 3)


def test_window_partition_literal_and_inverse():
    B, H, W, C, ws = 2, 4, 6, 3, 2
    x = torch.randn(B, H, W, C, generator=gen())
    win = window_partition(x, ws)
    nWw = W // ws
    assert win.shape == (B * (H // ws) * nWw, ws * ws, C)
    for b in range(B):
        for wi in range(H // ws):
            for wj in range(nWw):
                for p in range(ws):
                    for q in range(ws):
                        got = win[b * (H // ws) * nWw + wi * nWw + wj, p * ws + q]
                        assert torch.equal(got, x[b, wi * ws + p, wj * ws + q])
    assert torch.equal(window_reverse(win, ws, H, W), x)


@pytest.mark.parametrize("ws", [2, 4, 8])
def test_relative_position_index_literal(ws):
    idx = relative_position_index(ws)
    assert torch.equal(idx, literal_rel_index(ws))
    assert idx.min() == 0 and idx.max() == (2 * ws - 1) ** 2 - 1


@pytest.mark.parametrize("H,W,ws,shift", [(8, 8, 4, 2), (8, 12, 4, 2), (16, 16, 8, 4)])
def test_shifted_window_mask_blocks_cross_region(H, W, ws, shift):
    mask = shifted_window_mask(H, W, ws, shift)
    assert mask.shape == ((H // ws) * (W // ws), ws * ws, ws * ws)
    assert torch.equal(mask, literal_mask(H, W, ws, shift))
    # interior windows are fully open; the last window mixes wrapped tokens and is blocked in part
    assert (mask[0] == 0).all() and (mask[-1] != 0).any()


@pytest.mark.parametrize("resolution,shift", [((8, 8), 0), ((8, 8), 2), ((8, 12), 2)])
def test_window_attention_matches_literal_loop(resolution, shift):
    torch.manual_seed(0)
    block = SwinBlock(8, resolution, num_heads=2, ws=4, shift=shift, mlp_ratio=2.0, qkv_bias=True, drop_path=0.0)
    block = block.double().eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1.0)  # make the bias matter
    L = resolution[0] * resolution[1]
    x = torch.randn(2, L, 8, generator=gen(1), dtype=D64, requires_grad=True)
    got = block.attention(x)
    assert got.shape == x.shape
    with torch.no_grad():
        ref = literal_swin_attention(block, x.detach())
    torch.testing.assert_close(got.detach(), ref, rtol=1e-10, atol=1e-10)
    got.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert block.attn.relative_position_bias_table.grad.abs().sum() > 0
    if shift:
        assert block.attn_mask is not None and block.attn_mask.shape == (L // 16, 16, 16)


def test_block_drops_shift_when_grid_fits_window():
    block = SwinBlock(16, (4, 4), 2, ws=8, shift=4, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0)
    assert (block.ws, block.shift, block.attn_mask) == (4, 0, None)
    assert block.attn.relative_position_bias_table.shape == (49, 2)


def test_patch_merging_literal():
    H = W = 4
    C = 3
    pm = PatchMerging((H, W), C).double()
    x = torch.randn(2, H * W, C, generator=gen(), dtype=D64)
    out = pm(x)
    assert out.shape == (2, (H // 2) * (W // 2), 2 * C)
    grid = x.view(2, H, W, C)
    for b in range(2):
        for i in range(H // 2):
            for j in range(W // 2):
                cat = torch.cat([grid[b, 2 * i, 2 * j], grid[b, 2 * i + 1, 2 * j],
                                 grid[b, 2 * i, 2 * j + 1], grid[b, 2 * i + 1, 2 * j + 1]])
                normed = (cat - cat.mean()) / torch.sqrt(cat.var(unbiased=False) + pm.norm.eps)
                ref = pm.reduction.weight @ (normed * pm.norm.weight + pm.norm.bias)
                torch.testing.assert_close(out[b, i * (W // 2) + j], ref)


# ---------------------------------------------------------------------------------------------
# HTSAT
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [100, 256, 501, 1001])
def test_htsat_tiny_shapes(frames):
    model = HTSAT("tiny").eval()
    with torch.no_grad():
        out = model(torch.randn(2, frames, 64, generator=gen()))
    assert [tuple(s.shape) for s in out.stages] == [(2, 256, 64), (2, 64, 128), (2, 16, 256)]
    assert out.pooled.shape == (2, 256)
    assert model.stage_dims == [64, 128, 256] and model.pooled_dim == 256
    with torch.no_grad():
        torch.testing.assert_close(out.pooled, model.norm(out.stages[2]).mean(dim=1))
    assert sum(p.numel() for p in model.parameters()) < 4_000_000


def test_htsat_image_bn0_per_mel_bin_and_stretch():
    model = HTSAT("tiny").eval()
    cfg = model.config
    target = cfg.spec_size * cfg.freq_ratio  # 256 frames
    with torch.no_grad():
        model.bn0.running_mean.copy_(torch.linspace(-3, 3, 64))
        model.bn0.running_var.copy_(torch.linspace(0.5, 4, 64))
        model.bn0.weight.copy_(torch.linspace(0.5, 2, 64))
        model.bn0.bias.copy_(torch.linspace(-1, 1, 64))
    x = torch.randn(2, target, 64, generator=gen(), dtype=D64)
    model.double()
    with torch.no_grad():
        img = model.image(x)  # no stretch needed at exactly 256 frames
    assert img.shape == (2, 1, cfg.spec_size, cfg.spec_size)
    bn = model.bn0
    for b in range(2):
        for f in range(0, 64, 7):
            normed = (x[b, :, f] - bn.running_mean[f]) / torch.sqrt(bn.running_var[f] + bn.eps) * bn.weight[f] + bn.bias[f]
            for i in range(cfg.freq_ratio):
                chunk = normed[i * (target // cfg.freq_ratio) : (i + 1) * (target // cfg.freq_ratio)]
                torch.testing.assert_close(img[b, 0, i * 64 + f], chunk)
    # shorter input: bicubic stretch with align_corners keeps the first and last frames
    short = torch.randn(1, 50, 64, generator=gen(2), dtype=D64)
    with torch.no_grad():
        img = model.image(short)
        normed = model.bn0(short.transpose(1, 2).unsqueeze(-1)).squeeze(-1)  # (1, 64, 50)
    torch.testing.assert_close(img[0, 0, :64, 0], normed[0, :, 0])
    torch.testing.assert_close(img[0, 0, 64:, -1], normed[0, :, -1])


def test_htsat_input_errors():
    model = HTSAT("tiny")
    with pytest.raises(ValueError, match="frames, 64"):
        model(torch.zeros(2, 100, 128))
    with pytest.raises(ValueError, match="unknown HTSAT config"):
        HTSAT("large")
    with pytest.raises(ValueError, match="multiple of mel_bins"):
        HTSATConfig(spec_size=100)


def test_htsat_gradients_reach_every_parameter():
    from dataclasses import replace

    model = HTSAT(replace(HTSAT_CONFIGS["tiny"], drop_path_rate=0.0)).train()
    out = model(torch.randn(3, 200, 64, generator=gen()))
    g = gen(1)
    loss = sum((s * torch.randn(s.shape, generator=g)).sum() for s in out.stages)
    loss = loss + (out.pooled * torch.randn(out.pooled.shape, generator=g)).sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.fixture(scope="module")
def paper_htsat():
    torch.manual_seed(0)
    return HTSAT("paper").eval()


def test_htsat_paper_names_and_shapes_equal_official_tsv(paper_htsat):
    official = read_tsv("htsat_audioset_keys.tsv")
    assert len(official) == 200
    model = paper_htsat
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    used = {k: s for k, s in official.items()
            if not k.startswith(HTSAT_UNUSED_PREFIXES) and not k.endswith(HTSAT_BUFFER_SUFFIXES)}
    assert state == used
    # the recomputed buffers are non-persistent but have the official names and shapes
    buffers = {k: tuple(v.shape) for k, v in model.named_buffers() if k.endswith(HTSAT_BUFFER_SUFFIXES)}
    assert buffers == {k: s for k, s in official.items() if k.endswith(HTSAT_BUFFER_SUFFIXES)}
    assert model.stage_dims == [192, 384, 768] and model.pooled_dim == 768


def test_htsat_paper_stage_shapes(paper_htsat):
    with torch.no_grad():
        out = paper_htsat(torch.randn(1, 1001, 64, generator=gen()))
    assert [tuple(s.shape) for s in out.stages] == [(1, 1024, 192), (1, 256, 384), (1, 64, 768)]
    assert out.pooled.shape == (1, 768)
    assert all(torch.isfinite(s).all() for s in out.stages)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def official_buffer(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """relative_position_index / attn_mask values as the official model stores them (literal)."""
    if key.endswith("relative_position_index"):
        return literal_rel_index(int(math.isqrt(shape[0])))
    grid = {"layers.0": 64, "layers.1": 32, "layers.2": 16}[key[:8]]
    return literal_mask(grid, grid, 8, 4)


def synthetic_htsat_state(official: dict, cheap: bool = False) -> dict[str, torch.Tensor]:
    """Random tensors with the official names and shapes; `cheap` uses one stored value per key."""
    g, state = gen(3), {}
    for key, shape in official.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(12345)
        elif cheap:
            state[key] = torch.randn((), generator=g).expand(shape)
        elif key.endswith(HTSAT_BUFFER_SUFFIXES):
            state[key] = official_buffer(key, shape)
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


@pytest.mark.slow
def test_htsat_official_lightning_checkpoint_loads(tmp_path):
    official = read_tsv("htsat_audioset_keys.tsv")
    state = synthetic_htsat_state(official)
    path = tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"sed_model.{k}": v for k, v in state.items()}}, path)
    model = HTSAT("paper")
    report = load_htsat_checkpoint(model, path)
    unused = {k for k in official if k.startswith(HTSAT_UNUSED_PREFIXES) or k.endswith(HTSAT_BUFFER_SUFFIXES)}
    assert set(report.ignored) == unused and len(unused) == 200 - len(report.loaded)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_htsat_bare_state_dict_loads_into_tiny(tmp_path):
    model = HTSAT("tiny")
    source = HTSAT("tiny")
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    extra = {"head.weight": torch.zeros(527, 527), "logmel_extractor.melW": torch.zeros(513, 64)}
    torch.save({**source.state_dict(), **extra}, tmp_path / "bare.pt")
    report = load_htsat_checkpoint(model, tmp_path / "bare.pt")
    assert sorted(report.ignored) == sorted(extra)
    for (name, p), q in zip(model.named_parameters(), source.parameters()):
        assert torch.equal(p, q), name


def save_lightning(state: dict, path: Path) -> Path:
    torch.save({"state_dict": {f"sed_model.{k}": v for k, v in state.items()}}, path)
    return path


def test_htsat_checkpoint_missing_key_names_it(paper_htsat, tmp_path):
    state = synthetic_htsat_state(read_tsv("htsat_audioset_keys.tsv"), cheap=True)
    del state["layers.2.blocks.3.attn.qkv.weight"]
    path = save_lightning(state, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match=r"layers\.2\.blocks\.3\.attn\.qkv\.weight.*missing") as err:
        load_htsat_checkpoint(paper_htsat, path)
    assert "missing.ckpt" in str(err.value)


def test_htsat_checkpoint_wrong_shape_names_it(paper_htsat, tmp_path):
    state = synthetic_htsat_state(read_tsv("htsat_audioset_keys.tsv"), cheap=True)
    state["layers.1.downsample.reduction.weight"] = torch.zeros(()).expand(384, 700)
    path = save_lightning(state, tmp_path / "shape.ckpt")
    with pytest.raises(CheckpointError, match=r"layers\.1\.downsample\.reduction\.weight.*\(384, 700\).*\(384, 768\)"):
        load_htsat_checkpoint(paper_htsat, path)


def test_htsat_checkpoint_unexpected_key_and_bad_buffer(tmp_path):
    model = HTSAT("tiny")
    state = dict(model.state_dict())
    path = tmp_path / "extra.pt"
    torch.save({**state, "layers.3.blocks.5.norm1.weight": torch.zeros(256)}, path)
    with pytest.raises(CheckpointError, match=r"unexpected key 'layers\.3\.blocks\.5\.norm1\.weight'"):
        load_htsat_checkpoint(model, path)
    bad_index = torch.zeros(64, 64, dtype=torch.long)
    torch.save({**state, "layers.0.blocks.0.attn.relative_position_index": bad_index}, path)
    with pytest.raises(CheckpointError, match="relative_position_index.*differs"):
        load_htsat_checkpoint(model, path)
    with pytest.raises(CheckpointError, match="not found"):
        load_htsat_checkpoint(model, tmp_path / "nope.ckpt")
    torch.save({"state_dict": state, "hparams": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(CheckpointError, match=r"extra\.pt: cannot be read with torch\.load\(weights_only=True\)"):
        load_htsat_checkpoint(model, path)


# ---------------------------------------------------------------------------------------------
# ResNet38
# ---------------------------------------------------------------------------------------------


def test_resnet38_names_and_shapes_equal_official_tsv():
    official = read_tsv("panns_resnet38_keys.tsv")
    assert len(official) == 246
    with torch.device("meta"):
        model = ResNet38()
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert state == {k: s for k, s in official.items() if not k.startswith(RESNET_UNUSED_PREFIXES)}
    assert model.pooled_dim == 2048 and model.stage_dims == []
    with torch.device("meta"):
        narrow = ResNet38(width=0.25)
    assert set(narrow.state_dict()) == set(state)  # same names at any width
    assert narrow.fc1.weight.shape == (512, 512)


def test_resnet38_narrow_forward_literal_pooling_and_gradients():
    model = ResNet38(width=0.25).eval()
    seen = {}
    model.conv_block_after1.register_forward_hook(lambda m, i, o: seen.setdefault("map", o))
    x = torch.randn(2, 101, 64, generator=gen())
    out = model(x)
    assert out.stages == [] and out.pooled.shape == (2, 512)
    fmap = seen["map"].detach().double()  # (B, C, T', F')
    B, C, T, Fq = fmap.shape
    assert (C, T, Fq) == (512, 101 // 32, 64 // 32)
    for b in range(B):
        per_t = [[sum(float(fmap[b, c, t, f]) for f in range(Fq)) / Fq for t in range(T)] for c in range(C)]
        pooled = torch.tensor([max(v) + sum(v) / T for v in per_t], dtype=D64)
        ref = torch.relu(model.fc1.weight.double() @ pooled + model.fc1.bias.double())
        torch.testing.assert_close(out.pooled[b].detach().double(), ref, rtol=1e-4, atol=1e-5)
    model.train()
    model(x).pooled.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with pytest.raises(ValueError, match="at least 32 frames"):
        model(torch.zeros(2, 20, 64))


def synthetic_resnet_state(official: dict, cheap: bool = False) -> dict[str, torch.Tensor]:
    g, state = gen(4), {}
    for key, shape in official.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(777)
        elif cheap:
            state[key] = torch.randn((), generator=g).expand(shape)
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


@pytest.mark.slow
def test_resnet38_official_checkpoint_loads(tmp_path):
    official = read_tsv("panns_resnet38_keys.tsv")
    state = synthetic_resnet_state(official)
    path = tmp_path / "ResNet38_mAP=0.434.pth"
    torch.save({"model": state}, path)
    model = ResNet38()
    report = load_resnet38_checkpoint(model, path)
    assert set(report.ignored) == {k for k in official if k.startswith(RESNET_UNUSED_PREFIXES)}
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_resnet38_checkpoint_errors_name_the_key(tmp_path):
    official = read_tsv("panns_resnet38_keys.tsv")
    with torch.device("meta"):
        model = ResNet38()
    state = synthetic_resnet_state(official, cheap=True)
    del state["resnet.layer3.5.bn2.running_var"]
    torch.save({"model": state}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"resnet\.layer3\.5\.bn2\.running_var.*missing"):
        load_resnet38_checkpoint(model, tmp_path / "missing.pth")
    state = synthetic_resnet_state(official, cheap=True)
    state["fc1.weight"] = torch.zeros(()).expand(527, 2048)
    torch.save({"model": state}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"fc1\.weight.*\(527, 2048\).*\(2048, 2048\)"):
        load_resnet38_checkpoint(model, tmp_path / "shape.pth")
    # a narrow model refuses the published weights with a clear message
    with torch.device("meta"):
        narrow = ResNet38(width=0.25)
    torch.save({"model": synthetic_resnet_state(official, cheap=True)}, tmp_path / "full.pth")
    with pytest.raises(CheckpointError, match="expects"):
        load_resnet38_checkpoint(narrow, tmp_path / "full.pth")


def test_resnet38_dropout_switch():
    torch.manual_seed(0)
    logmel = torch.randn(2, 64, 64)
    for dropout, same in ((True, False), (False, True)):
        model = ResNet38(width=0.125, dropout=dropout).train()
        first, second = model(logmel).pooled, model(logmel).pooled
        assert torch.equal(first, second) is same
    assert ResNet38(width=0.125, dropout=False).state_dict().keys() == ResNet38(width=0.125).state_dict().keys()
