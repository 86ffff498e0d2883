"""A fast DARTS step of the recurrent supernet: the same function as NNI's mixtures, in far fewer tensor ops.

Under NNI's DARTS every operand `InputChoice` becomes a weighted sum of its candidates and every op
`LayerChoice` a weighted sum of all ops, each recomputing its softmax and summing term by term at every time
step: ~500 small ops a step for 8 nodes, so the step costs framework overhead, not arithmetic. Here the
softmaxes are computed once per sequence, and every operand and output state is accumulated as values
appear: when value c (x, h1, h2 or a node) is computed, one outer product adds w[:, c] * value to all the
operand slots that may read it. A node is then its operands, 7 ops and one weighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from nni_emotionnas.nni_compat import mixture_weights
from nni_emotionnas.spaces.cells.fixed import bound_state
from nni_emotionnas.spaces.recurrent_ops import SLOTS


@dataclass
class Mixture:
    """The softmaxed weights of one supernet layer, laid out for the accumulation.

    `reads[c]`: (slots, 1) column of value c's weight in every operand slot (0 where the slot's node comes
    before c); slot rows are node-major (a, b, z per node), then h1, h2. `ops[i]`: node i's op weights."""

    reads: list[torch.Tensor]
    ops: list[torch.Tensor]
    op_names: list[str]


def layer_mixture(layer: torch.nn.Module) -> Optional[Mixture]:
    """The layer's weights when all its choices are DARTS mixtures (None otherwise: sampled or Gumbel)."""
    nodes = list(layer.nodes)
    count = len(nodes)
    rows: list[torch.Tensor] = []
    ops: list[torch.Tensor] = []
    for node in nodes:
        op_weights = mixture_weights(node.op)
        if op_weights is None:
            return None
        ops.append(op_weights)
        for slot in SLOTS:  # an op slot no op reads takes operand a, as SearchNode does
            weights = mixture_weights(node.operands[slot if slot in node.slots else "a"])
            if weights is None:
                return None
            rows.append(F.pad(weights, (0, 3 + count - weights.numel())))
    for state in ("h1", "h2"):
        weights = mixture_weights(layer.outputs[state])
        if weights is None:
            return None
        rows.append(F.pad(weights, (3, 0)))
    table = torch.stack(rows)  # (slots, 3 + nodes): weight of value c in each slot
    return Mixture(list(table.t().unsqueeze(-1).unbind(0)), ops, list(nodes[0].op.names))


def node_output(
    node: torch.nn.Module, operands: torch.Tensor, weights: torch.Tensor, names: list[str], leaky_slope: float
) -> torch.Tensor:
    """sum_k w_k * op_k(a, b, z), each op as `recurrent_ops.SlotOp` computes it."""
    a, b, z = operands.unbind(0)
    outputs = []
    for name in names:
        if name == "linear":
            outputs.append(node.op[name].linear(a))
        elif name == "blend":
            outputs.append(torch.lerp(b, a, z))
        elif name == "product":
            outputs.append(a * b)
        elif name == "sum":
            outputs.append(a + b)
        elif name == "tanh":
            outputs.append(torch.tanh(a))
        elif name == "sigmoid":
            outputs.append(torch.sigmoid(a))
        else:
            outputs.append(F.leaky_relu(a, leaky_slope))
    return (weights @ torch.stack(outputs).flatten(1)).view_as(a)


def run_mixture(
    layer: torch.nn.Module, steps: tuple[torch.Tensor, ...], mixture: Mixture, leaky_slope: float
) -> torch.Tensor:
    """The layer's h1 sequence (batch, time, hidden) over the projected inputs `steps`."""
    nodes = list(layer.nodes)
    batch, hidden = steps[0].shape
    h1 = h2 = steps[0].new_zeros(batch, hidden)
    outputs = []
    for x in steps:
        slots = None
        for c, value in enumerate((x, h1, h2)):
            slots = _read(slots, mixture.reads[c], value)
        for i, node in enumerate(nodes):
            operands = slots[3 * i : 3 * i + 3].view(3, batch, hidden)
            value = node_output(node, operands, mixture.ops[i], mixture.op_names, leaky_slope)
            slots = _read(slots, mixture.reads[3 + i], value)
        states = slots[-2:].view(2, batch, hidden)
        h1 = bound_state(states[0], layer.state_bound)
        h2 = bound_state(states[1], layer.state_bound)
        outputs.append(h1)
    return torch.stack(outputs, dim=1)


def _read(slots: Optional[torch.Tensor], column: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """slots + column * value, every slot at once (slots x batch*hidden)."""
    flat = value.reshape(1, -1)
    return column * flat if slots is None else torch.addmm(slots, column, flat)
