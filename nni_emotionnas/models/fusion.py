"""Two-stream fusion: the paper's ISM and its comparison fusions (Concat, Sum, Max, Min)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from nni_emotionnas.config.experiment import FUSION_VARIANTS as FUSION_MODES

FusionMode = Literal["ism", "concat", "sum", "max", "min"]


class FusionHead(nn.Module):
    """Fuses the spectrogram embedding X1 and the deep embedding X2, then classifies.

    The dominant stream is kept intact; the other one is projected to its width:
    ISM: H = Proj(X_other); A = tanh(Proj(X_dom) * H); F = X_dom + A * H (`gate="paper"`), or
    F = X_dom + g * A * H with a learned per-dimension supply gate g that starts at 0 (`gate="zero"`), so
    an ISM started from trained streams (`start_from`) first outputs exactly its dominant stream's logits.
    Sum/Max/Min combine H and X_dom element-wise; Concat classifies [X1; X2].
    """

    def __init__(
        self,
        mode: FusionMode,
        spectrogram_dim: int,
        deep_dim: int,
        num_classes: int,
        dominant: Literal["deep", "spectrogram"] = "deep",
        dropout: float = 0.0,
        gate: Literal["zero", "paper"] = "zero",
    ) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode {mode!r} is not one of {', '.join(FUSION_MODES)}")
        if dominant not in ("deep", "spectrogram"):
            raise ValueError(f"dominant stream {dominant!r} is not 'deep' or 'spectrogram'")
        if gate not in ("zero", "paper"):
            raise ValueError(f"ISM gate {gate!r} is not 'zero' or 'paper'")
        self.mode = mode
        self.dominant = dominant
        other_dim, dominant_dim = (spectrogram_dim, deep_dim) if dominant == "deep" else (deep_dim, spectrogram_dim)
        self.project_other = nn.Linear(other_dim, dominant_dim) if mode != "concat" else None
        self.project_dominant = nn.Linear(dominant_dim, dominant_dim) if mode == "ism" else None
        self.gate = nn.Parameter(torch.zeros(dominant_dim)) if mode == "ism" and gate == "zero" else None
        self.output_dim = spectrogram_dim + deep_dim if mode == "concat" else dominant_dim
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.output_dim, num_classes)

    def fuse(self, x_spectrogram: torch.Tensor, x_deep: torch.Tensor) -> torch.Tensor:
        if self.mode == "concat":
            return torch.cat([x_spectrogram, x_deep], dim=-1)
        dominant, other = (x_deep, x_spectrogram) if self.dominant == "deep" else (x_spectrogram, x_deep)
        h = self.project_other(other)
        if self.mode == "ism":
            supply = torch.tanh(self.project_dominant(dominant) * h) * h
            return dominant + (supply if self.gate is None else self.gate * supply)
        if self.mode == "sum":
            return dominant + h
        if self.mode == "max":
            return torch.maximum(dominant, h)
        return torch.minimum(dominant, h)

    def forward(self, x_spectrogram: torch.Tensor, x_deep: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.fuse(x_spectrogram, x_deep)))

    @torch.no_grad()
    def start_from(self, dominant_classifier: nn.Linear) -> None:
        """Starts as the trained dominant stream: its classifier; Concat reads the other half with zero
        weights; Sum adds a zero projection. With the zero gate ISM then equals the dominant stream."""
        if self.mode == "concat":
            self.classifier.weight.zero_()
            offset = self.classifier.in_features - dominant_classifier.in_features if self.dominant == "deep" else 0
            self.classifier.weight[:, offset:offset + dominant_classifier.in_features].copy_(dominant_classifier.weight)
        else:
            self.classifier.weight.copy_(dominant_classifier.weight)
        self.classifier.bias.copy_(dominant_classifier.bias)
        if self.mode == "sum":
            self.project_other.weight.zero_()
            self.project_other.bias.zero_()


class TwoStreamModel(nn.Module):
    """The EmotionNAS model: both fixed stream networks feed their embeddings to a fusion head."""

    def __init__(self, spectrogram_net: nn.Module, deep_net: nn.Module, head: FusionHead) -> None:
        super().__init__()
        self.spectrogram_net = spectrogram_net
        self.deep_net = deep_net
        self.head = head
        self.streams_frozen = False

    def freeze_streams(self, frozen: bool) -> None:
        """Frozen streams get no gradient and stay in eval mode (batch-norm statistics and dropout fixed),
        so training the head alone changes no stream parameter or buffer."""
        self.streams_frozen = frozen
        for net in (self.spectrogram_net, self.deep_net):
            net.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> TwoStreamModel:
        super().train(mode)
        if self.streams_frozen:
            self.spectrogram_net.eval()
            self.deep_net.eval()
        return self

    def stream_embedding(self, stream: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """`stream`'s embedding of a batch: its network's, or `inputs["<stream>_embedding"]` when the batch
        carries it (cached by `evaluation.frozen_streams`, which only holds for frozen streams)."""
        cached = inputs.get(f"{stream}_embedding")
        if cached is not None:
            if not self.streams_frozen:
                raise RuntimeError(f"a cached {stream} embedding reached a model whose streams are not frozen")
            return cached
        if stream == "spectrogram":
            return self.spectrogram_net.embed(inputs["spectrogram"])
        return self.deep_net.embed({"frames": inputs["frames"], "mask": inputs["mask"]})

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.stream_embedding("spectrogram", inputs), self.stream_embedding("deep", inputs))
