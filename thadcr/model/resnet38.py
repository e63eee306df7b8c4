"""The PANNs ResNet38 audio encoder of ref [17] (paper Sec. 2.1), the CNN of the "DP (ResNet38)"
rows of Table 1. It has a pooled feature only. Parameter names equal those of the official
checkpoints (`thadcr.model.audio.load_resnet38_checkpoint`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from thadcr.model.htsat import HTSATOutput

__all__ = ["ResNet38"]


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
    log-mels (`thadcr.data.datasets.spec_augment`, off by default).
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
