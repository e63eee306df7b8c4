"""HTS-AT, the Swin-Transformer audio encoder of ref [18] (paper Sec. 2.1).

`HTSAT` returns the frame-level features of stages 2-4, ``A_h = HTSAT(A) = {A^s2, A^s3, A^s4}``
(Sec. 2.1), taken before each stage's patch merging, and the average-pooled global feature
``a_bar`` (Sec. 2.2), as an `HTSATOutput`. The Swin pieces (window attention, shifted-window
masks, patch merging) are here too. Parameter names equal those of the official checkpoints
(`thadcr.model.audio.load_htsat_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "HTSATConfig",
    "HTSAT_CONFIGS",
    "HTSATOutput",
    "HTSAT",
    "window_partition",
    "window_reverse",
    "relative_position_index",
    "shifted_window_mask",
    "reshape_wav2img",
]

MASK_VALUE = -100.0  # additive attention mask of the official Swin / HTS-AT code


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
    """Output of the audio encoders (HTS-AT here, and `thadcr.model.resnet38.ResNet38`).

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
