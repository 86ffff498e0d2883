"""The spectrogram stream's search space: a DARTS cell network as an NNI `ModelSpace`.

Stem on the 1x140x140 spectrogram, `layers` cells (reduction cells at layers//3 and 2*layers//3, whose
ops on the cell inputs use stride 2), each an NNI `Cell` with `nodes` nodes of two (op, input) pairs.
All normal cells share one label (`normal`) and all reduction cells another (`reduce`), so the search
finds two cell types, as in DARTS. Implements the space protocol of `nni_emotionnas.spaces`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from nni.nas.nn.pytorch import Cell, ModelSpace
from torch import nn

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.spaces.darts_ops import KNOWN_OPS, NONE, PAPER_OPS, CellInputs, build_op
from nni_emotionnas.spaces.kernels.cell_checkpoint import checkpointed
from nni_emotionnas.spaces.pooling import StandardizedStatistics
from nni_emotionnas.spaces.size_limits import MAX_LAYERS, MAX_NODES, check_count, check_parameters

_logger = logging.getLogger(__name__)
DEFAULT_CONFIG_FILE = "spectrogram_darts.yml"
CELL_LABELS = ("normal", "reduce")
NUM_PREDECESSORS = 2


@dataclass
class StemConfig:
    """First conv: `in_channels` -> `multiplier` * C channels, `kernel_size`, `stride` (1 keeps 140x140)."""

    in_channels: int = 1
    multiplier: int = 3
    kernel_size: int = 3
    stride: int = 1


@dataclass
class SpectrogramSpaceConfig:
    """Knobs of `search_spaces/spectrogram_darts.yml`: C (`channels`), L (`layers`), N (`nodes`), op list."""

    channels: int = 6
    layers: int = 3
    nodes: int = 4
    ops_per_node: int = 2
    ops: list[str] = field(default_factory=lambda: list(PAPER_OPS))
    stem: StemConfig = field(default_factory=StemConfig)
    dropout: float = 0.0
    # how the last cell's C x F x T map becomes the embedding: `average` over frequency and time (DARTS' and
    # the paper's head) or `time_statistics`, mean and std over time of `frequency_bands` frequency bands per
    # channel, which keeps where in frequency the energy sits (pitch, formants): see SpectrogramPooling
    pooling: Literal["average", "time_statistics"] = "average"
    frequency_bands: int = 8
    # also append the spectrogram's own mean and std over time of every row, standardised (what the stream's
    # linear probe reads): a skip path around the cells, so they only have to add to those statistics
    input_statistics: bool = False
    input_rows: int = 0  # the spectrogram's rows (x stem.in_channels planes); set from `features.spectrogram.size`
    # PC-DARTS (Xu et al. 2020; not the paper's DARTS): ops on 1/K of each edge's channels + edge
    # normalisation, see spaces.kernels.pc_darts; 1 = off. The searched cells are retrained at full width.
    partial_channels: int = 1

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in KNOWN_OPS]
        if unknown:
            raise ValueError(f"ops: unknown operation {unknown[0]!r} (known: {', '.join(KNOWN_OPS)})")
        if not self.candidate_ops:
            raise ValueError("ops: needs at least one operation besides 'none'")
        for name in ("channels", "layers", "nodes", "ops_per_node", "frequency_bands"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.input_rows < 0:
            raise ValueError(f"input_rows: must be at least 0, got {self.input_rows}")
        check_count("nodes", self.nodes, MAX_NODES, "nodes per cell")
        check_count("ops_per_node", self.ops_per_node, MAX_NODES, "inputs per node")
        check_count("layers", self.layers, MAX_LAYERS, "cells")
        check_parameters("channels", self.channels, self.least_parameters())
        if self.channels % 2:
            raise ValueError(f"channels: must be even (reduction halves channels twice), got {self.channels}")
        if self.partial_channels < 1 or self.channels % self.partial_channels:
            raise ValueError(f"partial_channels: must be at least 1 and divide channels ({self.channels}), "
                             f"got {self.partial_channels}")
        narrow = 2 * self.channels // self.partial_channels  # the first reduction cell's op width
        if self.partial_channels > 1 and "skip_connect" in self.ops and narrow % 2:
            raise ValueError(f"partial_channels: {self.partial_channels} leaves an odd width in the reduction cells' "
                             "skip_connect (FactorizedReduce needs an even one)")

    def least_parameters(self) -> int:
        """Weights a fixed network of this config has at least, whichever ops it chose: the stem and each cell's
        two 1x1 convs on its inputs (channels double at each reduction cell, as in DARTS)."""
        c = self.channels
        c_prev_prev = c_prev = self.stem.multiplier * c
        total = self.stem.in_channels * c_prev * self.stem.kernel_size**2
        for layer in range(self.layers):
            c *= 2 if layer in self.reduction_layers else 1
            total += (c_prev_prev + c_prev) * c
            c_prev_prev, c_prev = c_prev, self.nodes * c
        return total

    @property
    def candidate_ops(self) -> list[str]:
        """Ops built as candidates; `none` is the zero path NNI's differentiable cell adds on every edge."""
        return [op for op in self.ops if op != NONE]

    @property
    def reduction_layers(self) -> set[int]:
        return {self.layers // 3, 2 * self.layers // 3}


CONFIG_CLASS = SpectrogramSpaceConfig
# keys older space files and genotype records hold -> (the value that still holds, what replaced the key)
REMOVED_KEYS = {
    "supernet": ("fast", "DARTS searches always run NNI's cell mixture computed by spaces/kernels/fast_cell.py"),
    "lean_supernet": (None, "the older spelling of `supernet`, removed with it"),
}


def upgrade_config(data: dict[str, Any], where: str, recorded: bool) -> dict[str, Any]:
    """A removed key's value that still holds is dropped with a deprecation warning (silently from a genotype's
    record); another is an error, or a warning from a record (the fixed network does not depend on it)."""
    for key, (kept, replacement) in REMOVED_KEYS.items():
        if key in data:
            value = data.pop(key)
            message = f"{where}.{key}: {value!r}: removed key ({replacement}; see CHANGELOG.md)"
            if value != kept and not recorded:
                raise ConfigError(message)
            if value != kept or not recorded:
                _logger.warning("%s; ignored", message)
    return data


def upgrade_architecture(architecture: dict[str, Any]) -> dict[str, Any]:
    return architecture


class SpectrogramPooling(nn.Module):
    """Cell map (B x C x F x T) -> embedding. `average` (the paper's, width C) averages frequency away like an
    image network; `time_statistics` (width 2 x C x bands) first averages frequency into `bands` bands, then
    takes mean and std over time, so the classifier sees which band is loud or varying, as a spectrogram
    probe does."""

    def __init__(self, kind: str, channels: int, bands: int) -> None:
        super().__init__()
        self.kind, self.bands = kind, bands
        self.width = channels if kind == "average" else 2 * channels * bands

    def forward(self, cell_map: torch.Tensor) -> torch.Tensor:
        if self.kind == "average":
            return cell_map.mean(dim=(2, 3))
        banded = nn.functional.adaptive_avg_pool2d(cell_map, (self.bands, cell_map.shape[-1]))
        mean = banded.mean(dim=-1)
        std = banded.var(dim=-1, unbiased=False).clamp(min=1e-6).sqrt()
        return torch.cat([mean.flatten(1), std.flatten(1)], dim=1)


class CellOutputs(nn.Module):
    """Passes (c_{k-1}, c_k) on, so the next cell gets its two predecessors."""

    def forward(self, this_cell: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return inputs[-1], this_cell


def _cell_op(node: int, op_index: int, input_index: Optional[int], *, op: str, channels: int, reduction: bool):
    """Op factory for `Cell`: stride 2 on the cell inputs of a reduction cell (input unknown -> 2 as well)."""
    stride = 2 if reduction and (input_index is None or input_index < NUM_PREDECESSORS) else 1
    module = build_op(op, channels, stride)
    module.darts_op = op  # type: ignore[assignment]  # what a frozen cell really contains, for tests
    return module


class SpectrogramSpace(ModelSpace):
    """DARTS supernet space over spectrograms; `forward` gives logits, `embed` the pooled cell features."""

    def __init__(self, config: SpectrogramSpaceConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        stem_channels = config.stem.multiplier * config.channels
        self.stem = nn.Sequential(
            nn.Conv2d(
                config.stem.in_channels,
                stem_channels,
                config.stem.kernel_size,
                stride=config.stem.stride,
                padding=config.stem.kernel_size // 2,
                bias=False,
            ),
            nn.BatchNorm2d(stem_channels),
        )
        c_prev_prev, c_prev, channels = stem_channels, stem_channels, config.channels
        prev_was_reduction = False
        self.cells = nn.ModuleList()
        for layer in range(config.layers):
            reduction = layer in config.reduction_layers
            if reduction:
                channels *= 2
            op_channels = channels // config.partial_channels
            factory = {
                op: partial(_cell_op, op=op, channels=op_channels, reduction=reduction) for op in config.candidate_ops
            }
            self.cells.append(
                Cell(
                    factory,
                    config.nodes,
                    config.ops_per_node,
                    NUM_PREDECESSORS,
                    "all",
                    preprocessor=CellInputs(c_prev_prev, c_prev, channels, prev_was_reduction),
                    postprocessor=CellOutputs(),
                    label=CELL_LABELS[int(reduction)],
                )
            )
            c_prev_prev, c_prev = c_prev, channels * config.nodes
            prev_was_reduction = reduction
        self.checkpoint_cells = False  # recompute each cell's activations in backward (spaces.kernels.cell_checkpoint)
        self.pool = SpectrogramPooling(config.pooling, c_prev, config.frequency_bands)
        self.embedding_dim = self.pool.width
        self.input_statistics: Optional[StandardizedStatistics] = None
        if config.input_statistics:
            if not config.input_rows:
                raise ConfigError("input_statistics: needs input_rows, the spectrogram's row count (set from "
                                  "features.spectrogram.size when the space is built for a corpus)")
            rows = config.stem.in_channels * config.input_rows
            self.input_statistics = StandardizedStatistics(rows)
            self.embedding_dim += 2 * rows
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.embedding_dim, num_classes)

    def extra_oneshot_hooks(self, strategy: Any) -> list:
        """NNI's hook for one-shot mutations: under DARTS and GumbelDARTS, NNI's cell mixture computed by
        `kernels.fast_cell` (the same function) or PC-DARTS' cell; other strategies keep NNI's own."""
        from nni.nas.strategy import DARTS, Proxyless

        from nni_emotionnas.spaces.kernels.fast_cell import FastMixedCell
        from nni_emotionnas.spaces.kernels.pc_darts import partial_channel_hook

        differentiable = isinstance(strategy, DARTS) and not isinstance(strategy, Proxyless)
        if self.config.partial_channels == 1:
            return [FastMixedCell.mutate] if differentiable else []
        if not differentiable:
            raise ConfigError(f"partial_channels: PC-DARTS needs the DARTS or GumbelDARTS strategy, not "
                              f"{type(strategy).__name__}")
        return [partial_channel_hook(self.config.partial_channels)]

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        """The fixed network; a partial-channel space's cells are retrained at full width, as in PC-DARTS."""
        if self.config.partial_channels == 1:
            return super().freeze(sample)
        return build_space(replace(self.config, partial_channels=1), self.num_classes).freeze(sample)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(inputs)
        for cell in self.cells:
            if not self.checkpoint_cells:
                s0, s1 = cell([s0, s1])
            elif hasattr(cell, "forward_checkpointed"):  # the fast DARTS cell recomputes state by state
                s0, s1 = cell.forward_checkpointed([s0, s1])
            else:
                s0, s1 = checkpointed(cell, [s0, s1])
        pooled = self.pool(s1)
        if self.input_statistics is None:
            return pooled
        if inputs.shape[2] != self.config.input_rows:
            raise ConfigError(f"input_statistics: the spectrogram has {inputs.shape[2]} rows but the space's "
                              f"input_rows is {self.config.input_rows}")
        rows = inputs.flatten(1, 2).transpose(1, 2)  # B x T x (planes x rows)
        every_frame = torch.ones(rows.shape[:2], dtype=torch.bool, device=rows.device)
        return torch.cat([pooled, self.input_statistics(rows, every_frame)], dim=1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(inputs)))


def build_space(space_config: SpectrogramSpaceConfig, num_classes: int) -> SpectrogramSpace:
    return SpectrogramSpace(space_config, num_classes)


build_oneshot_space = build_space  # no constraints to leave out


def derive_architecture(
    arch: dict[str, Any], probs: dict[str, dict[str, float]], space_config: SpectrogramSpaceConfig
) -> dict[str, Any]:
    """DARTS derivation from the softmaxed edge weights: per node, the `ops_per_node` incoming edges with the
    strongest non-`none` op, each with that op. NNI's export ranks raw alphas across edges (not the
    per-edge softmax DARTS uses) and would keep a `none` candidate, so we redo it when weights exist."""
    if not probs:
        return dict(arch)
    derived = dict(arch)
    for label in CELL_LABELS:
        for node in range(NUM_PREDECESSORS, NUM_PREDECESSORS + space_config.nodes):
            edges = []
            normalisation = probs.get(f"{label}/{node}_edges", {})  # PC-DARTS' edge weights, when searched so
            for source in range(node):
                weights = probs.get(f"{label}/{node}_{source}")
                if weights is None:
                    break
                op, weight = max(((o, w) for o, w in weights.items() if o != NONE), key=lambda item: item[1])
                edges.append((weight * normalisation.get(str(source), 1.0), source, op))
            else:
                edges.sort(key=lambda item: (-item[0], item[1]))
                for k in range(space_config.ops_per_node):
                    _, source, op = edges[k % len(edges)]
                    derived[f"{label}/op_{node}_{k}"] = op
                    derived[f"{label}/input_{node}_{k}"] = [source]
    return derived


def readable_genotype(arch: dict[str, Any], probs: Optional[dict[str, dict[str, float]]] = None) -> dict[str, Any]:
    """DARTS-style genotype: per cell type, (op, input) pairs node by node; inputs 0/1 are c_{k-2}/c_{k-1}."""
    genotype: dict[str, Any] = {}
    for label in CELL_LABELS:
        nodes = sorted({int(key.split("_")[1]) for key in arch if key.startswith(f"{label}/op_")})
        if not nodes:
            continue
        pairs = []
        for node in nodes:
            k = 0
            while f"{label}/op_{node}_{k}" in arch:
                chosen = arch[f"{label}/input_{node}_{k}"]
                pairs.append([arch[f"{label}/op_{node}_{k}"], int(chosen[0] if isinstance(chosen, list) else chosen)])
                k += 1
        genotype[label] = pairs
        genotype[f"{label}_concat"] = nodes
    return genotype


def input_names(label: str, count: int) -> Optional[list[str]]:
    """What a cell input choice's values stand for: 0/1 are the two previous cells' outputs, then nodes."""
    if "/input_" not in label:
        return None
    return ["c_k-2", "c_k-1", *(f"node{i}" for i in range(NUM_PREDECESSORS, count))][:count]


def draw(genotype: dict[str, Any], png_path: Path) -> None:
    from nni_emotionnas.spaces.spectrogram_draw import draw_cells

    draw_cells(genotype, png_path, cells=[label for label in CELL_LABELS if label in genotype])
