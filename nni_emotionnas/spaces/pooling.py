"""Attention pooling over valid frames, shared by the searched recurrent network and the baselines."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from nni_emotionnas.errors import ConfigError


class AttentionPooling(nn.Module):
    """Learned frame scores, softmax over the valid frames only: padding frames get exactly zero weight
    (an utterance without a valid frame pools to zeros instead of NaN)."""

    def __init__(self, dim: int, attention_dim: int = 128) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1, bias=False))

    def weights(self, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(sequence).squeeze(-1)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) * mask

    def forward(self, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bt,btd->bd", self.weights(sequence, mask), sequence)


class StatisticsPooling(nn.Module):
    """Mean and standard deviation over the valid frames, concatenated (2 x dim): the utterance statistics
    SER x-vector-style systems pool; an alternative to the paper's attention, not its default."""

    def forward(self, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(sequence.dtype).unsqueeze(-1)
        count = weights.sum(dim=1).clamp(min=1.0)
        mean = (sequence * weights).sum(dim=1) / count
        variance = (((sequence - mean.unsqueeze(1)) ** 2) * weights).sum(dim=1) / count
        return torch.cat([mean, variance.clamp(min=1e-6).sqrt()], dim=-1)


class StandardizedStatistics(StatisticsPooling):
    """The input frames' mean and std, standardised per dimension as the stream's linear probe standardises
    them: batch statistics in training, running statistics (of the training batches only) in evaluation. A
    training batch of one utterance is standardised with the running statistics (a batch norm cannot)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(2 * dim, affine=False)  # the classifier after it is the affine part

    def forward(self, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        statistics = super().forward(sequence, mask)
        if self.training and statistics.shape[0] == 1:
            norm = self.norm
            return nn.functional.batch_norm(statistics, norm.running_mean, norm.running_var, eps=norm.eps)
        return self.norm(statistics)


def build_pooling(config: Any) -> tuple[nn.Module, Optional[StandardizedStatistics], int]:
    """(pooling module, input-statistics skip or None, embedding width) for a deep space config: pooling
    `attention` (the paper's, width H) or `statistics` (2 x H), plus 2 x input_dim with `input_statistics`."""
    dim = config.hidden_size
    pool, width = (StatisticsPooling(), 2 * dim) if config.pooling == "statistics" else (
        AttentionPooling(dim, config.attention_dim), dim)
    if not config.input_statistics:
        return pool, None, width
    return pool, StandardizedStatistics(config.input_dim), width + 2 * config.input_dim


class PooledSequenceMixin:
    """`embed`/`forward` on the data layer's `{"frames": B x T x D, "mask": B x T}` for models defining
    `encode(frames) -> B x T x H`, `pool` (AttentionPooling), `dropout`, `classifier`, `input_dim` and
    `input_statistics`: None, or a StandardizedStatistics whose standardised mean and std of the input frames are
    appended to the embedding (a skip path around the recurrent cell, see `RecurrentSpaceConfig.input_statistics`)."""

    input_dim: int
    pool: nn.Module
    dropout: nn.Module
    classifier: nn.Module
    input_statistics: Optional[nn.Module]
    encode: Callable[[torch.Tensor], torch.Tensor]

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        frames, mask = inputs["frames"], inputs["mask"].bool()
        if frames.shape[-1] != self.input_dim:
            raise ConfigError(
                f"deep features have {frames.shape[-1]} dims per frame but the model's input_dim is "
                f"{self.input_dim}: set input_dim in the deep stream's config to {frames.shape[-1]}"
            )
        pooled = self.pool(self.encode(frames), mask)
        if self.input_statistics is None:
            return pooled
        return torch.cat([pooled, self.input_statistics(frames, mask)], dim=-1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(inputs)))
