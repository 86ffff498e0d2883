"""The DARTS candidate operations (the paper's 8 minus `none`) and the cell pre-processing blocks.

`none` is not built here: NNI's differentiable cell mixes a zero operation into every edge itself, so a
`none` candidate would be a second zero; a derived cell never keeps it (DARTS convention).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

NONE = "none"
PAPER_OPS = [
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    NONE,
]


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convs (the first carries the stride), as in DARTS."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, dilation=1),
            DilConv(c_in, c_out, kernel_size, 1, padding, dilation=1),
        )


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset stride-2 1x1 convs (a skip that keeps all pixels' info)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        if x.shape[2] % 2 or x.shape[3] % 2:  # odd sizes: pad so both branches give ceil(size / 2)
            shifted = nn.functional.pad(shifted, (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class CellInputs(nn.Module):
    """Brings c_{k-2} and c_{k-1} to C channels and the same resolution (c_{k-2} halves after a reduction)."""

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, prev_was_reduction: bool) -> None:
        super().__init__()
        if prev_was_reduction:
            self.pre0: nn.Module = FactorizedReduce(c_prev_prev, channels)
        else:
            self.pre0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_prev, channels, 1, 1, 0)

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.pre0(inputs[0]), self.pre1(inputs[1])]


def _pool(kind: str) -> Callable[[int, int], nn.Module]:
    def build(channels: int, stride: int) -> nn.Module:
        if kind == "max":
            return nn.MaxPool2d(3, stride=stride, padding=1)
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    return build


def _skip(channels: int, stride: int) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels)


OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "max_pool_3x3": _pool("max"),
    "avg_pool_3x3": _pool("avg"),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, s: SepConv(c, c, 3, s, 1),
    "sep_conv_5x5": lambda c, s: SepConv(c, c, 5, s, 2),
    "dil_conv_3x3": lambda c, s: DilConv(c, c, 3, s, 2, 2),
    "dil_conv_5x5": lambda c, s: DilConv(c, c, 5, s, 4, 2),
}
KNOWN_OPS = [*OPS, NONE]


def build_op(name: str, channels: int, stride: int) -> nn.Module:
    """One candidate operation keeping `channels` and dividing the resolution by `stride`."""
    return OPS[name](channels, stride)
