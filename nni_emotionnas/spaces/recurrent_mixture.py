"""A fast DARTS step of the recurrent supernet: the same function as NNI's mixtures, in far fewer tensor ops.

Under NNI's DARTS every operand `InputChoice` becomes a weighted sum of its candidates and every op
`LayerChoice` a weighted sum of all ops, each recomputing its softmax and summing term by term at every time
step: ~500 small ops a step for 8 nodes, so the step costs framework overhead, not arithmetic. Here the
softmaxes are computed once per sequence and each weighted sum is one matrix product: a node's three
operands are (3 x values) @ (values x batch*hidden), its output (1 x ops) @ (ops x batch*hidden).
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
    """The softmaxed weights of one supernet layer: `operands[i]` (3, 3 + i), node i's weights of each value
    in its operand slots a, b, z; `ops[i]` node i's op weights; `states` (2, nodes), h1's and h2's."""

    operands: list[torch.Tensor]
    ops: list[torch.Tensor]
    states: torch.Tensor
    op_names: list[str]


def layer_mixture(layer: torch.nn.Module) -> Optional[Mixture]:
    """The layer's weights when all its choices are DARTS mixtures (None otherwise: sampled or Gumbel)."""
    choices = [[node.op, *(node.operands[s if s in node.slots else "a"] for s in SLOTS)] for node in layer.nodes]
    weights = [[mixture_weights(choice) for choice in node] for node in choices]
    states = [mixture_weights(layer.outputs[state]) for state in ("h1", "h2")]
    if any(w is None for node in weights for w in node) or any(w is None for w in states):
        return None
    return Mixture(
        [torch.stack(node[1:]) for node in weights],
        [node[0] for node in weights],
        torch.stack(states),
        list(layer.nodes[0].op.names),
    )


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
    return mix(weights, outputs)


def mix(weights: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
    """sum_c weights[..., c] * values[c] as one matrix product: (k, c) @ (c, batch*hidden)."""
    out = weights @ torch.stack(values).flatten(1)
    return out.view(*weights.shape[:-1], *values[0].shape)


def run_mixture(
    layer: torch.nn.Module, steps: tuple[torch.Tensor, ...], mixture: Mixture, leaky_slope: float
) -> torch.Tensor:
    """The layer's h1 sequence (batch, time, hidden) over the projected inputs `steps`."""
    h1 = h2 = steps[0].new_zeros(steps[0].shape)
    outputs = []
    for x in steps:
        values = [x, h1, h2]
        for i, node in enumerate(layer.nodes):
            operands = mix(mixture.operands[i], values)
            values.append(node_output(node, operands, mixture.ops[i], mixture.op_names, leaky_slope))
        h1, h2 = (bound_state(s, layer.state_bound) for s in mix(mixture.states, values[3:]).unbind(0))
        outputs.append(h1)
    return torch.stack(outputs, dim=1)
