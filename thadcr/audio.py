"""Audio encoders (paper Sec. 2.1): the log-mel front end, HTS-AT and the PANNs ResNet38 baseline.

- `LogMel`: waveform (B, samples) at 32 kHz -> log-mel (B, frames, 64), the HTS-AT/PANNs recipe.
- `HTSAT`: the Swin-Transformer audio encoder of ref [18]. It returns the frame-level features
  of stages 2-4, ``A_h = HTSAT(A) = {A^s2, A^s3, A^s4}`` (Sec. 2.1), taken before each stage's
  patch merging, and the average-pooled global feature ``a_bar`` (Sec. 2.2).
- `ResNet38`: the CNN of the "DP (ResNet38)" rows (ref [17]); it has a pooled feature only.

Parameter names equal those of the official checkpoints, so `load_htsat_checkpoint` and
`load_resnet38_checkpoint` read them without renaming (only a prefix is stripped).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from thadcr import numerics, portable
from thadcr.errors import ThadcrError

__all__ = [
    "LogMel",
    "HTSATConfig",
    "HTSAT_CONFIGS",
    "HTSATOutput",
    "HTSAT",
    "ResNet38",
    "LoadReport",
    "CheckpointError",
    "load_htsat_checkpoint",
    "load_resnet38_checkpoint",
    "window_partition",
    "window_reverse",
    "relative_position_index",
    "shifted_window_mask",
    "reshape_wav2img",
]

MASK_VALUE = -100.0  # additive attention mask of the official Swin / HTS-AT code


# --------------------------------------------------------------------------------------------
# Front end
# --------------------------------------------------------------------------------------------


class LogMel(nn.Module):
    """Waveform -> log-mel spectrogram, numerically the HTS-AT / PANNs front end.

    Periodic Hann window of ``n_fft``, hop ``hop``, centred frames with reflect padding, power 2,
    Slaney-scale mel filters with Slaney area normalisation, then ``10 log10(max(x, 1e-10))``
    (reference 1, no top_db). 10 s at 32 kHz gives 1 + 320000 // 320 = 1001 frames. In portable
    numerics the DFT is two matrix products and log10 avoids MKL's vector math (`thadcr.portable`), so the
    bits are the same on Intel and AMD CPUs; otherwise torch's FFT.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        hop: int = 320,
        n_mels: int = 64,
        fmin: float = 50.0,
        fmax: float = 14000.0,
    ) -> None:
        super().__init__()
        self.sample_rate, self.n_mels, self.hop = sample_rate, n_mels, hop
        # Everything the output depends on: the log-mel cache is keyed by it (thadcr.datasets.LogMelCache).
        self.n_fft, self.exact = n_fft, numerics.is_portable()
        self.settings = {"front_end": "htsat-logmel", "sample_rate": sample_rate, "n_fft": n_fft, "hop": hop,
                         "n_mels": n_mels, "fmin": fmin, "fmax": fmax, "dft": "matmul" if self.exact else "fft"}
        self.register_buffer("window", portable.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", portable.mel_filters(n_fft // 2 + 1, n_mels, sample_rate, fmin, fmax), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, samples) -> log-mel (B, frames, n_mels) in dB, frames = 1 + samples // hop."""
        if wave.dim() != 2:
            raise ValueError(f"LogMel expects a waveform batch (B, samples), got shape {tuple(wave.shape)}")
        if self.exact:  # portable numerics: matrix products, ATen's kernels
            frames = portable.frames(wave, self.n_fft, self.hop) * self.window
            power = portable.power_spectrum(frames)  # (B, frames, n_fft/2 + 1)
            mel = (power @ self.filters).clamp_min(1e-10)  # (B, frames, n_mels)
            return 10.0 * portable.log10(mel)
        spectrum = torch.stft(wave, self.n_fft, self.hop, window=self.window,
                              center=True, pad_mode="reflect", return_complex=True)
        power = spectrum.abs().pow(2).transpose(1, 2)  # (B, frames, n_fft/2 + 1)
        return 10.0 * torch.log10((power @ self.filters).clamp_min(1e-10))


# --------------------------------------------------------------------------------------------
# HTS-AT: configuration, Swin pieces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HTSATConfig:
    """Architecture of an HTS-AT encoder (ref [18]); the image is spec_size x spec_size."""

    spec_size: int = 256
    mel_bins: int = 64
    patch_size: int = 4
    patch_stride: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1  # stochastic depth, linearly increasing over blocks (HTS-AT default)

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError(f"HTSATConfig needs 4 stages (depths, num_heads), got {self.depths}, {self.num_heads}")
        if self.spec_size % self.mel_bins:
            raise ValueError(f"spec_size={self.spec_size} must be a multiple of mel_bins={self.mel_bins}")
        grid = self.spec_size // self.patch_stride
        if grid % 8:
            raise ValueError(f"spec_size / patch_stride = {grid} must be divisible by 8 (three 2x merges)")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise ValueError(f"stage {i + 1}: dim {self.embed_dim * 2**i} not divisible by {heads} heads")

    @property
    def freq_ratio(self) -> int:
        """How many time chunks are stacked along frequency (spec_size // mel_bins, as in HTS-AT)."""
        return self.spec_size // self.mel_bins


HTSAT_CONFIGS: dict[str, HTSATConfig] = {
    # The AudioSet model of the official checkpoints (HTSAT_AudioSet_Saved_*.ckpt).
    "paper": HTSATConfig(),
    # Same structure, CPU-sized: a 128 x 128 image, 32 x 32 patches.
    "tiny": HTSATConfig(spec_size=128, embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
}


@dataclass
class HTSATOutput:
    """Output of the audio encoders in this module.

    stages: [A^s2, A^s3, A^s4], each (B, M_l, C_l), taken before that stage's patch merging
            (ResNet38: empty list); pooled: (B, C_pooled), the global audio feature a_bar.
    """

    stages: list[torch.Tensor]
    pooled: torch.Tensor


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws * ws, C); windows ordered batch-major, then row-major."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C)


def window_reverse(windows: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, ws * ws, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws*ws, ws*ws) long: row of the (2ws-1)^2 bias table for query i and key j of a window.

    index = (dh + ws - 1) * (2 ws - 1) + (dw + ws - 1), with (dh, dw) = position_i - position_j.
    """
    rows, cols = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()])  # (2, N)
    rel = pos[:, :, None] - pos[:, None, :] + (ws - 1)  # (2, N, N), each in [0, 2ws-2]
    return rel[0] * (2 * ws - 1) + rel[1]


def shifted_window_mask(H: int, W: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) additive mask for attention in cyclically shifted windows.

    After rolling the (H, W) grid by -shift, a window on the bottom/right edge holds tokens that
    were not neighbours in the original grid; pairs from different regions get MASK_VALUE.
    """
    region = torch.zeros(1, H, W, 1)
    label = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            region[:, hs, wsl, :] = label
            label += 1
    region = window_partition(region, ws).squeeze(-1)  # (nW, N)
    different = region[:, None, :] != region[:, :, None]  # (nW, N, N)
    return torch.zeros(different.shape).masked_fill(different, MASK_VALUE)


def reshape_wav2img(x: torch.Tensor, freq_ratio: int) -> torch.Tensor:
    """HTS-AT's reshape_wav2img: (B, 1, T, F) -> (B, 1, r*F, T/r), r = freq_ratio.

    The time axis is cut into r consecutive chunks stacked along frequency:
    out[b, 0, i*F + f, t] = x[b, 0, i*(T/r) + t, f].
    """
    B, C, T, Fq = x.shape
    if T % freq_ratio:
        raise ValueError(f"reshape_wav2img: {T} frames are not divisible by freq_ratio={freq_ratio}")
    x = x.reshape(B, C, freq_ratio, T // freq_ratio, Fq).permute(0, 1, 2, 4, 3)  # (B, C, r, F, T/r)
    return x.reshape(B, C, freq_ratio * Fq, T // freq_ratio)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a residual branch per sample with probability p (rescaled)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with relative position bias (Swin, ref [19])."""

    def __init__(self, dim: int, ws: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(ws), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B*nW, N, C), mask (nW, N, N) or None -> (B*nW, N, C)."""
        Bw, N, C = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(Bw, N, 3, h, C // h).permute(2, 0, 3, 1, 4)  # each (Bw, h, N, d)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (Bw, h, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(N, N, h).permute(2, 0, 1)
        if mask is not None:
            nW = mask.shape[0]
            attn = (attn.view(Bw // nW, nW, h, N, N) + mask[None, :, None].to(attn.dtype)).view(Bw, h, N, N)
        out = attn.softmax(dim=-1) @ v  # (Bw, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(Bw, N, C))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (Swin's feed-forward block)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """One Swin Transformer block on an (H, W) token grid, windows shifted by `shift` (or not).

    As in Swin/HTS-AT, when the grid is no larger than the window the window shrinks to the grid
    and the shift is dropped. The shifted-window mask is a non-persistent buffer `attn_mask`.
    """

    def __init__(
        self, dim: int, resolution: tuple[int, int], num_heads: int, ws: int, shift: int,
        mlp_ratio: float, qkv_bias: bool, drop_path: float,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= ws:
            ws, shift = min(resolution), 0
        self.ws, self.shift, self.drop_path = ws, shift, drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(*resolution, ws, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The (shifted-)window attention branch: x (B, H*W, C) -> (B, H*W, C)."""
        H, W = self.resolution
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        out = window_reverse(self.attn(window_partition(x, self.ws), self.attn_mask), self.ws, H, W)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(1, 2))
        return out.reshape(B, L, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H*W, C) -> (B, H*W, C)."""
        x = x + drop_path(self.attention(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (4C), LayerNorm, Linear 4C -> 2C (no bias)."""

    def __init__(self, resolution: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H*W, C) -> (B, H/2 * W/2, 2C); concatenation order (0,0), (1,0), (0,1), (1,1)."""
        H, W = self.resolution
        B, _, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class SwinStage(nn.Module):
    """`depth` Swin blocks (shift on odd blocks) and an optional PatchMerging at the end."""

    def __init__(
        self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, cfg: HTSATConfig,
        drop_paths: list[float], downsample: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, cfg.window_size, 0 if i % 2 == 0 else cfg.window_size // 2,
                      cfg.mlp_ratio, cfg.qkv_bias, drop_paths[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(resolution, dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, C) -> (stage output before merging (B, L, C), input of the next stage)."""
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else x)


class PatchEmbed(nn.Module):
    """Conv2d patches (`proj`) flattened to tokens, then LayerNorm (`norm`)."""

    def __init__(self, cfg: HTSATConfig) -> None:
        super().__init__()
        pad = (cfg.patch_size - cfg.patch_stride) // 2
        self.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_stride, padding=pad)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 1, S, S) -> tokens (B, (S/stride)^2, embed_dim), row-major."""
        return self.norm(self.proj(image).flatten(2).transpose(1, 2))


class HTSAT(nn.Module):
    """HTS-AT audio encoder (ref [18]): A_h = HTSAT(A) = {A^s2, A^s3, A^s4} (Sec. 2.1).

    forward(logmel (B, frames, mel_bins)) -> HTSATOutput with stages [(B, M_l, C_l)] for stages
    2-4 before patch merging ("paper": (B,1024,192), (B,256,384), (B,64,768)) and pooled
    (B, 8*embed_dim) = mean over tokens of the final `norm` of stage 4 (a_bar, Sec. 2.2).
    """

    def __init__(self, config: str | HTSATConfig = "paper") -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in HTSAT_CONFIGS:
                raise ValueError(f"unknown HTSAT config {config!r}; choose one of {sorted(HTSAT_CONFIGS)}")
            config = HTSAT_CONFIGS[config]
        self.config = cfg = config
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)
        self.patch_embed = PatchEmbed(cfg)
        grid = cfg.spec_size // cfg.patch_stride
        n_blocks = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]  # linspace(0, rate)
        starts = [sum(cfg.depths[:i]) for i in range(4)]
        self.layers = nn.ModuleList(
            SwinStage(cfg.embed_dim * 2**i, (grid // 2**i, grid // 2**i), cfg.depths[i], cfg.num_heads[i], cfg,
                      rates[starts[i]: starts[i] + cfg.depths[i]], downsample=i < 3)
            for i in range(4)
        )
        self.stage_dims = [cfg.embed_dim * 2**i for i in (1, 2, 3)]
        self.pooled_dim = cfg.embed_dim * 8
        self.norm = nn.LayerNorm(self.pooled_dim)
        self.apply(_init_swin_weights)

    def image(self, logmel: torch.Tensor) -> torch.Tensor:
        """logmel (B, T, mel) -> bn0 -> time stretched to spec_size*freq_ratio -> (B, 1, S, S)."""
        cfg = self.config
        x = self.bn0(logmel.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)  # (B, T, mel)
        x = x.unsqueeze(1)  # (B, 1, T, mel)
        target = cfg.spec_size * cfg.freq_ratio
        if x.shape[2] != target:  # HTS-AT stretches shorter inputs; longer ones are squeezed here
            x = F.interpolate(x, size=(target, cfg.mel_bins), mode="bicubic", align_corners=True)
        return reshape_wav2img(x, cfg.freq_ratio)

    def forward(self, logmel: torch.Tensor) -> HTSATOutput:
        """logmel (B, frames, mel) -> stages 2-4 before merging + pooled a_bar (see the class)."""
        if logmel.dim() != 3 or logmel.shape[2] != self.config.mel_bins:
            raise ValueError(f"HTSAT expects log-mel (B, frames, {self.config.mel_bins}), got {tuple(logmel.shape)}")
        x = self.patch_embed(self.image(logmel))  # (B, grid^2, embed_dim)
        outs = []
        for layer in self.layers:
            out, x = layer(x)  # out: (B, grid^2 / 4^i, embed_dim * 2^i), before patch merging
            outs.append(out)
        pooled = self.norm(outs[3]).mean(dim=1)  # (B, 8 * embed_dim)
        assert [o.shape[2] for o in outs[1:]] == self.stage_dims and pooled.shape[1] == self.pooled_dim
        return HTSATOutput(stages=outs[1:], pooled=pooled)


def _init_swin_weights(m: nn.Module) -> None:
    """HTS-AT/Swin initialisation: Linear ~ truncated N(0, 0.02), zero bias; LayerNorm (1, 0)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# PANNs ResNet38
# --------------------------------------------------------------------------------------------


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class ConvBlock(nn.Module):
    """PANNs ConvBlock: (conv 3x3 -> BN -> ReLU) x 2, then average pooling."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv3x3(cin, cout), _conv3x3(cout, cout)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool != (1, 1) else x


class BasicBlock(nn.Module):
    """PANNs ResNet basic block; stride 2 is an average pool before conv1 and in the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: bool = True) -> None:
        super().__init__()
        self.stride, self.dropout = stride, dropout
        self.conv1, self.bn1 = _conv3x3(cin, cout), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            pool = [nn.AvgPool2d(2)] if stride == 2 else []  # keeps PANNs' indices: .1 conv, .2 BN
            self.downsample = nn.Sequential(*pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool2d(x, 2) if self.stride == 2 else x
        out = F.dropout(F.relu(self.bn1(self.conv1(out))), p=0.1, training=self.training and self.dropout)
        out = self.bn2(self.conv2(out))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + shortcut)


class ResNetBody(nn.Module):
    """layer1..layer4 of basic blocks, [3, 4, 6, 3], strides 1, 2, 2, 2."""

    def __init__(self, widths: list[int], blocks: tuple[int, ...] = (3, 4, 6, 3), dropout: bool = True) -> None:
        super().__init__()
        cin = widths[0]
        for i, (cout, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(
                *(BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1, dropout) for j in range(n))
            )
            self.add_module(f"layer{i + 1}", layer)
            cin = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNet38(nn.Module):
    """PANNs ResNet38 (ref [17]) as a clip encoder: forward(logmel (B, frames, 64)) -> HTSATOutput
    with stages [] and pooled (B, 2048*width) = ReLU(fc1(max_t + mean_t of the CNN map)).

    `width` scales every channel count (1.0 = the published model; names stay identical).
    With `dropout` PANNs' dropouts are kept (0.1 in blocks, 0.2 after stages, 0.5 around fc1);
    without, none is applied. SpecAugment is not part of the model: training can mask the
    log-mels (`thadcr.datasets.spec_augment`, off by default).
    """

    def __init__(self, width: float = 1.0, mel_bins: int = 64, dropout: bool = True) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"ResNet38 width must be positive, got {width}")
        self.dropout = dropout
        c = [max(1, round(n * width)) for n in (64, 128, 256, 512, 2048)]
        self.mel_bins = mel_bins
        self.bn0 = nn.BatchNorm2d(mel_bins)
        self.conv_block1 = ConvBlock(1, c[0])
        self.resnet = ResNetBody(c[:4], dropout=dropout)
        self.conv_block_after1 = ConvBlock(c[3], c[4])
        self.fc1 = nn.Linear(c[4], c[4])
        self.stage_dims: list[int] = []
        self.pooled_dim = c[4]
        self._init_weights()

    def _init_weights(self) -> None:
        """PANNs init: Xavier-uniform convs/linears, zero biases, BN (1, 0)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, logmel: torch.Tensor) -> HTSATOutput:
        if logmel.dim() != 3 or logmel.shape[2] != self.mel_bins:
            raise ValueError(f"ResNet38 expects log-mel (B, frames, {self.mel_bins}), got {tuple(logmel.shape)}")
        if logmel.shape[1] < 32:
            raise ValueError(f"ResNet38 pools time by 32: give at least 32 frames, got {logmel.shape[1]}")
        drop = self.training and self.dropout
        x = self.bn0(logmel.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)  # (B, T, mel)
        x = self.conv_block1(x.unsqueeze(1), pool=(2, 2))  # (B, c0, T/2, mel/2)
        x = F.dropout(x, p=0.2, training=drop)
        x = F.avg_pool2d(self.resnet(x), 2)  # (B, c3, T/32, mel/32)
        x = F.dropout(x, p=0.2, training=drop)
        x = F.dropout(self.conv_block_after1(x, pool=(1, 1)), p=0.2, training=drop)
        x = x.mean(dim=3)  # (B, c4, T/32): mean over frequency
        x = x.amax(dim=2) + x.mean(dim=2)  # (B, c4)
        x = F.relu(self.fc1(F.dropout(x, p=0.5, training=drop)))
        return HTSATOutput(stages=[], pooled=F.dropout(x, p=0.5, training=drop))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


class CheckpointError(ThadcrError, ValueError):
    """A checkpoint does not fit the encoder; the message names the file, key and what to do."""


@dataclass
class LoadReport:
    """What a checkpoint loader did: keys copied into the encoder and keys it skipped."""

    path: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


HTSAT_IGNORED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "tscam_conv.", "head.")
HTSAT_IGNORED_SUFFIXES = (".attn_mask", ".relative_position_index")
RESNET38_IGNORED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "fc_audioset.")


def _read_state(path: str | Path, container: str, prefix: str) -> dict[str, torch.Tensor]:
    """torch.load (weights only) -> flat state dict; `container` key and `prefix` are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found; download it or fix audio_checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line), "")
        raise CheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True): it holds more than tensors "
            f"({reason.split(' was not')[0]}). If you trust the file, "
            f"re-save its weights once: torch.save(torch.load(p, weights_only=False)['{container}'], 'weights.pt') "
            "and point audio_checkpoint at weights.pt"
        ) from err
    state = ckpt.get(container, ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        other = next((c for c in ("state_dict", "model") if c != container and isinstance(ckpt, dict) and c in ckpt), None)
        hint = (f": it holds {{'{other}': ...}}, the container of the other audio encoder's checkpoints (HTS-AT: "
                "'state_dict', ResNet38: 'model'); point audio_checkpoint at a checkpoint of this encoder, e.g. "
                "checkpoints/tiny/resnet38-tiny.pth or checkpoints/tiny/htsat-tiny.ckpt") if other else ""
        raise CheckpointError(f"{path}: expected a state dict (or {{'{container}': state dict}}) of tensors{hint}")
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _load_checked(
    model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, skip: Callable[[str], bool], what: str
) -> LoadReport:
    """Copy `state` into `model` after checking every key and shape; raise CheckpointError otherwise."""
    expected = model.state_dict()
    for key, target in expected.items():
        if key not in state:
            n_missing = sum(k not in state for k in expected)
            raise CheckpointError(
                f"{path}: key {key!r} (shape {tuple(target.shape)}) needed by the {what} encoder is missing "
                f"({n_missing} missing keys in all). Is this the official {what} checkpoint for this architecture?"
            )
        if tuple(state[key].shape) != tuple(target.shape):
            raise CheckpointError(
                f"{path}: key {key!r} has shape {tuple(state[key].shape)} but the {what} encoder expects "
                f"{tuple(target.shape)}. The checkpoint is for another architecture: use the published "
                "configuration (HTSAT('paper') / ResNet38(width=1.0)) or set audio_checkpoint=null"
            )
    buffers = dict(model.named_buffers())
    ignored = []
    for key in sorted(set(state) - set(expected)):
        if not skip(key):
            raise CheckpointError(
                f"{path}: unexpected key {key!r} is not part of the {what} encoder; "
                "the checkpoint is for another architecture (use the official one)"
            )
        if key in buffers and not torch.equal(buffers[key], state[key].to(buffers[key].dtype)):
            raise CheckpointError(
                f"{path}: buffer {key!r} differs from the one computed here: the window layout disagrees "
                "with the checkpoint's model; please report this as a bug in thadcr.audio"
            )
        ignored.append(key)
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    return LoadReport(path=str(path), loaded=sorted(expected), ignored=ignored)


def load_htsat_checkpoint(model: HTSAT, path: str | Path) -> LoadReport:
    """Load an official HTS-AT checkpoint (Lightning {'state_dict': {'sed_model.*': ...}} or a
    bare state dict) into `model`. Front end, classifier and attention buffers are ignored."""
    state = _read_state(path, "state_dict", "sed_model.")

    def skip(key: str) -> bool:
        return key.startswith(HTSAT_IGNORED_PREFIXES) or key.endswith(HTSAT_IGNORED_SUFFIXES)

    return _load_checked(model, state, path, skip, "HTS-AT")


def load_resnet38_checkpoint(model: ResNet38, path: str | Path) -> LoadReport:
    """Load a PANNs ResNet38 checkpoint ({'model': state_dict} or bare) into `model`; the
    torchlibrosa front-end buffers and the `fc_audioset` classifier are ignored."""
    state = _read_state(path, "model", "module.")
    return _load_checked(model, state, path, lambda k: k.startswith(RESNET38_IGNORED_PREFIXES), "ResNet38")
