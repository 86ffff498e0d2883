"""Fusion over the streams' class evidence (`train.fusion_init: crossfit`): ISM and its comparison fusions
applied to each stream's log-probabilities, for any number of streams, with a soft dominant stream.

The head learns from held-out stream outputs (`evaluation.heldout`), which only a representation that
means the same in every inner model can give: a stream's log-probabilities over the classes do, a cell's
embedding does not. ISM keeps the dominant stream X_dom intact and adds every supplementary stream i:
H_i = Proj_i(X_i); A_i = tanh(Proj_dom,i(X_dom) * H_i); F = X_dom + sum_i g_i * A_i * H_i, then a linear
classifier. X_dom itself is soft: X_dom = X_0 + sum_i m_i (X_i - X_0), the stream named first blended with
the others by learnt weights m (a hard pick of one stream sinks the fusion whenever the pick is wrong).
Each input is first calibrated by its stream's temperature (`temperature`, fitted with the head). Two starts
are exact: the first stream alone (m = 0, gates zero, projections and classifier identity) and
the mean of all streams (m = 1/n, `pool`); a head trained with a penalty on its distance from its start
(`evaluation.stacking`) moves only as far as the data asks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nni_emotionnas.config.experiment import FUSION_VARIANTS, PROBE_VARIANTS


def _identity(width: int) -> nn.Linear:
    layer = nn.Linear(width, width)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(width))
        layer.bias.zero_()
    return layer


class OutputFusionHead(nn.Module):
    """Fuses `streams` (names, the dominant one first) of `num_classes` log-probabilities each.

    ISM as above; Sum adds the projections (starting at zero), Max/Min take the element-wise maximum or
    minimum of X_dom and the projections (starting as the identity), Concat classifies all streams side by side
    (starting with the dominant stream's block as the identity, the others zero).
    """

    def __init__(self, mode: str, streams: Sequence[str], num_classes: int) -> None:
        super().__init__()
        if mode not in FUSION_VARIANTS:
            raise ValueError(f"fusion mode {mode!r} is not one of {', '.join(FUSION_VARIANTS)}")
        if len(streams) < 2 or len(set(streams)) != len(streams):
            raise ValueError(f"a fusion needs two or more distinct streams, got {list(streams)}")
        self.mode = mode
        self.streams = list(streams)
        self.register_buffer("temperature", torch.ones(len(streams), dtype=torch.float64))
        supplementary = len(streams) - 1
        width = num_classes
        if mode == "concat":
            self.classifier = nn.Linear(width * len(streams), width)
            with torch.no_grad():
                self.classifier.weight.zero_()
                self.classifier.weight[:, :width].copy_(torch.eye(width))
                self.classifier.bias.zero_()
            return
        self.mix = nn.Parameter(torch.zeros(supplementary))
        self.project = nn.ModuleList(_identity(width) for _ in range(supplementary))
        if mode == "sum":
            for layer in self.project:
                nn.init.zeros_(layer.weight)
        if mode == "ism":
            self.project_dominant = nn.ModuleList(_identity(width) for _ in range(supplementary))
            self.gate = nn.Parameter(torch.zeros(supplementary, width))
        self.classifier = _identity(width)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        state_dict.setdefault(prefix + "temperature", torch.ones_like(self.temperature))  # saved uncalibrated
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def dominant(self) -> str:
        return self.streams[0]

    @torch.no_grad()
    def pool(self) -> None:
        """Starts as the mean of all streams' log-probabilities instead of the first stream alone."""
        share = 1.0 / len(self.streams)
        if self.mode == "concat":
            width = self.classifier.out_features
            self.classifier.weight.copy_(torch.eye(width).repeat(1, len(self.streams)) * share)
        else:
            self.mix.fill_(share)

    def base(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """X_dom: the first stream blended with the others by the mix weights."""
        first = inputs[0]
        return first + sum((m * (x - first) for m, x in zip(self.mix, inputs[1:])), torch.zeros_like(first))

    def fuse(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """`inputs` in `streams` order."""
        if self.mode == "concat":
            return torch.cat(list(inputs), dim=-1)
        dominant = fused = self.base(inputs)
        for i, other in enumerate(inputs[1:]):
            h = self.project[i](other)
            if self.mode == "ism":
                fused = fused + self.gate[i] * torch.tanh(self.project_dominant[i](dominant) * h) * h
            elif self.mode == "sum":
                fused = fused + h
            elif self.mode == "max":
                fused = torch.maximum(fused, h)
            else:
                fused = torch.minimum(fused, h)
        return fused

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        calibrated = [torch.log_softmax(x / t.to(x.dtype), dim=-1) for x, t in zip(inputs, self.temperature)]
        return self.classifier(self.fuse(calibrated))


class LinearStream(nn.Module):
    """A linear baseline (scaler + logistic regression, fitted by scikit-learn) as a stream whose weights
    travel in a fusion's `model.pt` (tensors only: no pickled estimator in a run folder)."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(features, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(num_classes, features, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(num_classes, dtype=torch.float64))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        for name in ("mean", "scale", "weight", "bias"):  # the width comes with the weights
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.double() - self.mean) / self.scale) @ self.weight.T + self.bias


def input_statistics(stream: str, inputs: dict[str, object]) -> torch.Tensor:
    """What a `probe_<stream>` reads, from a batch of stream inputs: per utterance the mean and (population)
    std over time of each spectrogram row, or of each deep-frame dimension over the valid frames
    (`evaluation.probe.utterance_statistics` for one utterance at a time)."""
    if stream == "spectrogram":
        values = inputs["spectrogram"][:, 0].double()  # batch x rows x time
        return torch.cat([values.mean(dim=-1), values.std(dim=-1, unbiased=False)], dim=-1)
    frames, mask = inputs["frames"].double(), inputs["mask"].double()[..., None]  # batch x time x dims
    count = mask.sum(dim=1)
    mean = (frames * mask).sum(dim=1) / count
    std = ((((frames - mean[:, None]) ** 2) * mask).sum(dim=1) / count).sqrt()
    return torch.cat([mean, std], dim=-1)


class StackedFusion(nn.Module):
    """A fusion model for new audio: the fold's stream networks and linear streams, then the head on
    their log-probabilities. `inputs` as `TwoStreamModel` takes them (`spectrogram`, `frames`, `mask`), plus
    each linear stream's features under its name (`probe_<stream>` streams compute theirs from the inputs)."""

    def __init__(self, networks: dict[str, nn.Module], linear: dict[str, LinearStream], head: OutputFusionHead):
        super().__init__()
        self.networks = nn.ModuleDict(networks)
        self.linear = nn.ModuleDict(linear)
        self.head = head

    def forward(self, inputs: dict[str, object]) -> torch.Tensor:
        outputs = []
        for name in self.head.streams:
            if name in self.networks:
                reads = {"frames": inputs["frames"], "mask": inputs["mask"]} if name == "deep" else inputs[name]
                logits = self.networks[name](reads)
            else:
                reads = input_statistics(PROBE_VARIANTS[name], inputs) if name in PROBE_VARIANTS else inputs[name]
                logits = self.linear[name](reads)
            outputs.append(torch.log_softmax(logits.float(), dim=-1))
        return self.head(outputs)
