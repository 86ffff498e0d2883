"""Fast runtime of a fixed cell: the deep stream's retrained network and the catalog cells run on it.

Everything that does not depend on the recurrent state is hoisted out of the time loop: the x parts of
all linear nodes (and the projection of x used by non-linear ops) are one matmul over all frames, nodes
that depend on x only are evaluated on whole sequences, and the hoisted sequences are `unbind`-ed once
so no step materialises a full-size gradient. Inside the loop, linear nodes reading h1 (h2) share one
matmul, and linear nodes with the same inputs are added as one block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nni_emotionnas.spaces.cells.ops import LINEAR, recurrent_op
from nni_emotionnas.spaces.cells.spec import CellSpec, Node

STATES = ("h1", "h2")


@dataclass
class _Block:
    """Consecutive linear nodes with the same inputs: one add per step, then views per node."""

    nodes: list[str]
    hoisted: Optional[tuple[int, int]]  # columns in the per-step hoisted vector
    states: dict[str, tuple[int, int]]  # state -> columns of that state's projection
    others: list[str]  # non-state, non-hoisted inputs (intermediate nodes), each with its own weights


class FixedCellLayer(nn.Module):
    """One recurrent layer: runs `cell` over (batch, time, input_dim) frames, returns the h1 sequence."""

    def __init__(self, cell: CellSpec, input_dim: int, hidden_size: int, leaky_slope: float = 0.01,
                 state_bound: Optional[float] = None) -> None:
        super().__init__()
        self.cell, self.input_dim, self.hidden_size, self.leaky_slope = cell, input_dim, hidden_size, leaky_slope
        self.state_bound = state_bound
        H = hidden_size
        nodes = list(cell.used_nodes())
        self.nodes = nodes
        static = {"x"}
        for node in nodes:
            if all(i in static for i in node.inputs):
                static.add(node.name)
        self.static = [n for n in nodes if n.name in static]
        self.dynamic = [n for n in nodes if n.name not in static]
        linear_dyn = [n for n in self.dynamic if n.op == LINEAR]
        # group dynamic linear nodes by input signature so each group's columns are contiguous everywhere
        groups: dict[tuple, list[Node]] = {}
        for node in linear_dyn:
            signature = (
                any(i in static for i in node.inputs),
                tuple(s for s in STATES if s in node.inputs),
                tuple(i for i in node.inputs if i not in static and i not in STATES),
            )
            groups.setdefault(signature, []).append(node)
        # columns of the x matmul: static linear nodes with x, then hoisted parts of dynamic linear nodes
        # (their bias lives there too), then the projection of x used by non-linear ops
        x_chunks: list[str] = [n.name for n in self.static if n.op == LINEAR and "x" in n.inputs]
        hoisted_dyn: list[str] = []
        state_chunks: dict[str, list[str]] = {s: [] for s in STATES}
        self.blocks: list[_Block] = []
        for (has_static, states, others), members in groups.items():
            names = [n.name for n in members]
            hoisted = None
            if has_static:
                hoisted = (len(hoisted_dyn) * H, (len(hoisted_dyn) + len(names)) * H)
                hoisted_dyn += names
            spans = {}
            for s in states:
                spans[s] = (len(state_chunks[s]) * H, (len(state_chunks[s]) + len(names)) * H)
                state_chunks[s] += names
            self.blocks.append(_Block(names, hoisted, spans, list(others)))
        self.block_of = {name: b for b in self.blocks for name in b.nodes}
        self.uses_x_projection = any(
            "x" in n.inputs for n in nodes if n.op != LINEAR
        )
        self.x_columns = x_chunks + [n for n in hoisted_dyn if "x" in self.cell.node(n).inputs]
        self.hoisted_dyn = hoisted_dyn
        rows = len(self.x_columns) + int(self.uses_x_projection)
        self.w_x = nn.Parameter(torch.empty(rows * H, input_dim)) if rows else None
        self.b_x = nn.Parameter(torch.empty(rows * H)) if rows else None
        self.w_state = nn.ParameterDict(
            {s: nn.Parameter(torch.empty(len(names) * H, H)) for s, names in state_chunks.items() if names}
        )
        self.state_chunks = state_chunks
        # weights of linear inputs that are not x or a state (intermediate nodes, static or dynamic)
        self.w_node = nn.ParameterDict()
        self.bias = nn.ParameterDict()
        for node in nodes:
            if node.op != LINEAR:
                continue
            for i in node.inputs:
                if i not in ("x",) + STATES:
                    self.w_node[f"{node.name}__{i}"] = nn.Parameter(torch.empty(H, H))
            if "x" not in node.inputs:
                self.bias[node.name] = nn.Parameter(torch.empty(H))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _op(self, op: str, args: Sequence[torch.Tensor]) -> torch.Tensor:
        """A parameter-free node (linear nodes are run by the blocks above), from the op table."""
        return recurrent_op(op).apply(args, self.leaky_slope)

    def _static_values(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
        """Whole-sequence values of x-only nodes, and the per-frame hoisted parts of dynamic linear nodes."""
        H = self.hidden_size
        values: dict[str, torch.Tensor] = {}
        projected = F.linear(x, self.w_x, self.b_x) if self.w_x is not None else x[..., :0]
        column = {name: projected[..., k * H:(k + 1) * H] for k, name in enumerate(self.x_columns)}
        if self.uses_x_projection:
            values["x"] = projected[..., len(self.x_columns) * H:]
        for node in self.static:
            if node.op == LINEAR:
                values[node.name] = self._linear_rest(node, column.get(node.name), values)
            else:
                values[node.name] = self._op(node.op, [values[i] for i in node.inputs])
        hoisted = []
        for name in self.hoisted_dyn:
            node = self.cell.node(name)
            parts = [column[name]] if name in column else [self.bias[name]]
            parts += [F.linear(values[i], self.w_node[f"{name}__{i}"]) for i in node.inputs
                      if i != "x" and i not in STATES and i in values]
            total = parts[0]
            for p in parts[1:]:
                total = total + p
            hoisted.append(total.expand(x.shape[0], x.shape[1], H) if total.dim() == 1 else total)
        return values, (torch.cat(hoisted, dim=-1) if hoisted else None)

    def _linear_rest(self, node: Node, x_part: Optional[torch.Tensor], values: dict) -> torch.Tensor:
        total = x_part if x_part is not None else self.bias[node.name]
        for i in node.inputs:
            if i != "x":
                total = total + F.linear(values[i], self.w_node[f"{node.name}__{i}"])
        return total

    def forward(
        self, x: torch.Tensor, state: Optional[tuple[torch.Tensor, torch.Tensor]] = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, _ = x.shape
        H = self.hidden_size
        if state is None:
            zeros = x.new_zeros(B, H)
            state = (zeros, zeros)
        values_seq, hoisted = self._static_values(x)
        if not self.dynamic:  # the new states depend on x only
            h1_seq = values_seq[self.cell.outputs["h1"]]
            h2 = values_seq[self.cell.outputs["h2"]][:, -1] if "h2" in self.cell.outputs else state[1]
            return h1_seq, (h1_seq[:, -1], h2)
        # x-only values read by non-linear ops inside the loop (linear nodes get theirs hoisted)
        read = {i for n in self.dynamic if n.op != LINEAR for i in n.inputs if i in values_seq}
        seq_names = sorted(read | {name for name in self.cell.outputs.values() if name in values_seq})
        steps_hoisted = hoisted.unbind(1) if hoisted is not None else None
        steps_values = {name: values_seq[name].unbind(1) for name in seq_names}
        h1, h2 = state
        outputs = []
        for t in range(T):
            env: dict[str, torch.Tensor] = {"h1": h1, "h2": h2}
            for name in seq_names:
                env[name] = steps_values[name][t]
            projections = {s: F.linear(h, self.w_state[s]) for s, h in (("h1", h1), ("h2", h2)) if s in self.w_state}
            for node in self.dynamic:
                if node.name in env:
                    continue
                if node.op == LINEAR:
                    self._run_block(self.block_of[node.name], env, projections,
                                    steps_hoisted[t] if steps_hoisted is not None else None)
                else:
                    env[node.name] = self._op(node.op, [env[i] for i in node.inputs])
            h1 = bound_state(env[self.cell.outputs["h1"]], self.state_bound)
            h2 = bound_state(env[self.cell.outputs["h2"]], self.state_bound) if "h2" in self.cell.outputs else h2
            outputs.append(h1)
        return torch.stack(outputs, dim=1), (h1, h2)

    def _run_block(self, block: _Block, env: dict, projections: dict, hoisted: Optional[torch.Tensor]) -> None:
        H = self.hidden_size
        parts = [_columns(hoisted, block.hoisted)] if block.hoisted and hoisted is not None else []
        parts += [_columns(projections[s], span) for s, span in block.states.items()]
        total: Optional[torch.Tensor] = parts[0] if parts else None
        for p in parts[1:]:
            total = total + p
        # one split (a single backward node) rather than a slice per node
        pieces = total.split(H, dim=1) if total is not None else [None] * len(block.nodes)
        for name, piece in zip(block.nodes, pieces):
            value = piece if piece is not None else self.bias[name]
            for i in block.others:
                value = value + F.linear(env[i], self.w_node[f"{name}__{i}"])
            if block.hoisted is None and piece is not None:
                value = value + self.bias[name]
            env[name] = value


def bound_state(state: torch.Tensor, bound: Optional[float]) -> torch.Tensor:
    """`bound * tanh(state / bound)`: keeps products of states from compounding over hundreds of steps
    (a state above 1 squared every step overflows within a few steps); `None` leaves the cell exact."""
    return state if bound is None else torch.tanh(state / bound) * bound


def _columns(tensor: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
    """Columns `span` of a step tensor; the whole tensor (no slice op) when the span covers it."""
    return tensor if span[0] == 0 and span[1] == tensor.shape[1] else tensor[:, span[0]:span[1]]


class FixedRecurrent(nn.Module):
    """`num_layers` stacked layers of the same cell (separate weights); returns the top layer's h1 sequence."""

    def __init__(self, cell: CellSpec, input_dim: int, hidden_size: int, num_layers: int = 1,
                 leaky_slope: float = 0.01, dropout: float = 0.0, state_bound: Optional[float] = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            FixedCellLayer(cell, input_dim if i == 0 else hidden_size, hidden_size, leaky_slope, state_bound)
            for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(self.dropout(x) if i else x)[0]
        return x
