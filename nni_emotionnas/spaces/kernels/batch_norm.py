"""Training-mode batch norm for channels-last float32 activations, the same function as `F.batch_norm`, with
its reductions done as batched matrix products.

PyTorch's CPU batch norm on channels-last tensors with the few channels of a DARTS cell (6-24) vectorises
poorly and does not use a second thread (docs/search-cost.md). Here the per-channel sums the statistics and the
gradient need (sum x, sum x^2, sum g, sum g x) come from one `bmm` per sample (ones^T X, X^T X, G^T X on the
(pixels x channels) storage, multi-threaded BLAS) summed over the batch, so each partial sum runs over one
sample's pixels only (float32 error as PyTorch's pairwise sums); normalisation and the input gradient are two
fused multiply-adds. E[x^2] - E[x]^2 loses precision only for channels whose mean is thousands of standard
deviations; batch-normalised DARTS activations are not.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

CHANNELS_LAST = torch.channels_last


def _pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """(batch, pixels, channels) view of a channels-last tensor."""
    batch, channels, height, width = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)


def _channel_sums(rows: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over pixels of `rows`, sum over pixels of rows * other), per channel, each sample's sums summed."""
    ones = rows.new_ones(rows.shape[0], 1, rows.shape[1])
    sums = torch.bmm(ones, rows).sum(0)[0]
    products = torch.bmm(rows.transpose(1, 2), other).sum(0).diagonal()
    return sums, products


class ChannelsLastBatchNorm(torch.autograd.Function):
    """y = (x - mean) * rsqrt(var + eps) * weight + bias with batch statistics; also returns (mean, biased var)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eps: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = _pixel_rows(x)
        count = rows.shape[0] * rows.shape[1]
        sums, squares = _channel_sums(rows, rows)
        mean = sums / count
        var = (squares / count - mean * mean).clamp_min_(0)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        out = torch.empty_like(x)  # channels-last, written through its (pixels x channels) view
        torch.addcmul(shift, rows, scale, out=_pixel_rows(out))
        ctx.save_for_backward(x, mean, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *unused: Any) -> tuple[Optional[torch.Tensor], ...]:
        x, mean, invstd, weight = ctx.saved_tensors
        rows, grad_rows = _pixel_rows(x), _pixel_rows(grad.contiguous(memory_format=CHANNELS_LAST))
        count = rows.shape[0] * rows.shape[1]
        grad_sum, grad_x_sum = _channel_sums(grad_rows, rows)
        grad_xhat_sum = invstd * (grad_x_sum - mean * grad_sum)  # sum of grad * normalised x
        scale = invstd if weight is None else invstd * weight
        slope = -scale * invstd * grad_xhat_sum / count
        offset = -scale * grad_sum / count - slope * mean
        grad_x = torch.empty_like(x)
        torch.addcmul(offset, rows, slope, out=_pixel_rows(grad_x)).addcmul_(grad_rows, scale)
        grad_weight = grad_xhat_sum if ctx.needs_input_grad[1] else None
        grad_bias = grad_sum if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


def batch_norm(
    x: torch.Tensor,
    running_mean: Optional[torch.Tensor],
    running_var: Optional[torch.Tensor],
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    training: bool,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    """`F.batch_norm` (same arguments, same running-statistics update), through `ChannelsLastBatchNorm` for
    batch statistics of a 4-d channels-last float32 CPU tensor (on a GPU, cuDNN's kernel is used as it is), at
    every channel count: PyTorch's kernel wins alone from ~48 channels on, not inside a step (docs/search-cost.md)."""
    if not (
        training
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype == torch.float32
        and x.is_contiguous(memory_format=CHANNELS_LAST)
    ):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    out, mean, var = ChannelsLastBatchNorm.apply(x, weight, bias, eps)
    if running_mean is not None and running_var is not None:
        count = x.numel() // x.shape[1]
        with torch.no_grad():
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (count / max(count - 1, 1)), momentum)
    return out
