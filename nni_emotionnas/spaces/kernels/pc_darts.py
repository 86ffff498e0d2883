"""Partial-channel connections (PC-DARTS, Xu et al., ICLR 2020): a different search algorithm from the
paper's DARTS, chosen with `partial_channels: K` (K > 1) in the spectrogram space file.

Each edge runs its candidate ops on 1/K of the input's channels (the ops are built K times narrower) and
passes the rest through (max-pooled 2x2 on stride-2 edges; `ceil_mode` so odd sizes match the ops'
ceil(size / 2)); the two parts are concatenated and channel-shuffled in K groups. Edge normalisation weighs
the edges into node i by softmax(beta_i) over their sources, so the node sums beta_ij * edge_ij; the
derivation ranks an edge by beta_ij times its best op's weight. The betas are architecture parameters like
the alphas (labels `{cell}/{i}_edges`) and are written to genotype.json with the edge weights.

The shuffle is a fixed permutation, so it is applied once per node to the beta-weighted sums of the mixed
and passed-through parts (the same function as shuffling every edge).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nni_emotionnas.nni_compat import arch_alphas
from nni_emotionnas.spaces.kernels.fast_cell import CHANNELS_LAST, FastMixedCell

EDGES = "edges"


def edge_label(cell_label: str, node: int) -> str:
    """Label of node `node`'s edge-normalisation weights (one per source state)."""
    return f"{cell_label}/{node}_{EDGES}"


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS' shuffle: channel g * (C/groups) + c moves to c * groups + g."""
    batch, channels, height, width = x.shape
    shuffled = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return shuffled.reshape(batch, channels, height, width).contiguous(memory_format=CHANNELS_LAST)


class PartialChannelCell(FastMixedCell):
    """NNI's DARTS cell with partial channels and edge normalisation; its ops come `partial_channels` times
    narrower from the space's op factory. Made by `partial_channel_hook`."""

    partial_channels = 1

    def add_edge_weights(self, partial_channels: int, memo: dict) -> None:
        """Registers the betas beside NNI's alphas, so the strategy trains and reports them the same way;
        cells with one label share them, as they share alphas (through NNI's mutation memo)."""
        self.partial_channels = partial_channels
        for i in range(self.num_predecessors, self.num_predecessors + self.num_nodes):
            key = edge_label(self.label, i) + "/in_cell"
            if key not in memo:
                memo[key] = nn.Parameter(torch.randn(i) * 1e-3)
            arch_alphas(self)[edge_label(self.label, i)] = memo[key]

    def forward(self, *inputs: Any) -> Any:
        processed, states, weights = self._prepare(inputs)
        first, end = self.num_predecessors, self.num_predecessors + self.num_nodes
        alphas = arch_alphas(self)
        betas = {i: F.softmax(alphas[edge_label(self.label, i)], dim=-1) for i in range(first, end)}
        mixed: dict[int, torch.Tensor] = {}
        passed: dict[int, torch.Tensor] = {}
        for j in range(end - 1):
            part = states[j].shape[1] // self.partial_channels
            x, rest = states[j][:, :part], states[j][:, part:]
            for i, term in self._edges_from(j, x, range(max(j + 1, first), end), weights):
                if rest.shape[2:] != term.shape[2:]:  # a stride-2 edge (reduction cell input)
                    rest = F.max_pool2d(rest, 2, 2, ceil_mode=True)
                beta = betas[i][j]
                mixed[i] = mixed[i].add_(term * beta) if i in mixed else term * beta
                passed[i] = passed[i].add_(rest * beta) if i in passed else rest * beta
            if j + 1 >= first:
                node = torch.cat([mixed.pop(j + 1), passed.pop(j + 1)], 1)
                states.append(channel_shuffle(node, self.partial_channels))
        return self.postprocessor(torch.cat(states[first:], self.concat_dim), processed)


def partial_channel_hook(partial_channels: int) -> Any:
    """An NNI mutation hook turning the space's `Cell`s into `PartialChannelCell`s."""

    def hook(module: Any, name: str, memo: dict, mutate_kwargs: dict) -> Any:
        cell = PartialChannelCell.mutate(module, name, memo, mutate_kwargs)
        if isinstance(cell, PartialChannelCell):
            cell.add_edge_weights(partial_channels, memo)
        return cell

    return hook
