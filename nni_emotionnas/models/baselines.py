"""Paper Table 2 baselines for the spectrogram stream: ResNet18 (1-channel input) and a ResNet scaled
down to about the searched C6L3 network's parameter count (~0.13M), trained by the same trainer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nni_emotionnas.errors import ConfigError


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with basic blocks; `embed` gives the pooled features (for fusion), `forward` the logits."""

    def __init__(self, widths: Sequence[int], blocks: Sequence[int], num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, c_in = [], widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for index in range(count):
                stages.append(BasicBlock(c_in, width, 2 if stage > 0 and index == 0 else 1))
                c_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding_dim = c_in
        self.classifier = nn.Linear(c_in, num_classes)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.stages(self.stem(inputs))), 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(inputs))


BASELINES = {
    "resnet18": dict(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)),
    # widths scaled by ~0.11 so the parameter count (~0.13M) matches the searched C6L3 cell network
    "resnet_small": dict(widths=(7, 14, 28, 56), blocks=(2, 2, 2, 2)),
}


def build_baseline(name: str, num_classes: int, in_channels: int = 1) -> ResNet:
    if name not in BASELINES:
        raise ConfigError(f"model.spectrogram: unknown baseline {name!r} (known: {', '.join(BASELINES)})")
    return ResNet(num_classes=num_classes, in_channels=in_channels, **BASELINES[name])
