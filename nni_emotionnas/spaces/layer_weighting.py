"""SUPERB-style learned weighted sum of encoder layers, for deep features extracted with `layer: weighted`.

The `hf` and `resemblyzer` backends with `layer: weighted` store every layer side by side, frames x
(layers * dim), layer-major (the extractor's `n_stacked_layers` says how many). Prepend this module to a
deep-stream model to learn the mix end to end, e.g. `nn.Sequential(LayerWeightedSum(13), model)`: it takes
the batched tensor (..., layers * dim) or the data layer's dict `{"frames", "mask"}` and returns the same
kind with frames of width dim. The weights start equal, as in SUPERB.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn

Inputs = Union[torch.Tensor, dict[str, torch.Tensor]]


class LayerWeightedSum(nn.Module):
    """softmax(w)-weighted sum over the stacked layers; `layer_norm` standardises each layer first."""

    def __init__(self, n_layers: int, layer_norm: bool = False) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        self.n_layers = n_layers
        self.layer_norm = layer_norm
        self.weights = nn.Parameter(torch.zeros(n_layers))

    def mix(self, frames: torch.Tensor) -> torch.Tensor:
        width = frames.shape[-1]
        if width % self.n_layers:
            raise ValueError(f"feature width {width} is not a multiple of n_layers={self.n_layers}")
        layers = frames.reshape(*frames.shape[:-1], self.n_layers, width // self.n_layers)
        if self.layer_norm:
            layers = nn.functional.layer_norm(layers, layers.shape[-1:])
        return torch.einsum("...ld,l->...d", layers, torch.softmax(self.weights, dim=0))

    def forward(self, inputs: Inputs) -> Inputs:
        if isinstance(inputs, dict):
            return {**inputs, "frames": self.mix(inputs["frames"])}
        return self.mix(inputs)

    def layer_weights(self) -> list[float]:
        """The learned mix, for reports: which layers the model relies on."""
        return torch.softmax(self.weights.detach(), dim=0).tolist()
