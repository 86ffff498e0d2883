"""A fast DARTS step of the recurrent supernet: the same function as NNI's mixtures, in far fewer tensor ops.

Under NNI's DARTS every operand `InputChoice` becomes a weighted sum of its candidates and every op
`LayerChoice` a weighted sum of all ops, each recomputing its softmax and summing term by term at every time
step: ~500 small ops a step for 8 nodes, so the step costs framework overhead, not arithmetic. Here the
softmaxes are computed once per sequence, each weighted sum is one matrix product (a node's three operands
are (3 x values) @ (values x batch*hidden), its output (1 x ops) @ (ops x batch*hidden)), and the whole
sequence is one autograd function with a hand-written backward (`recurrent_sequence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from nni_emotionnas.nni_compat import mixture_weights
from nni_emotionnas.spaces.cells.ops import LINEAR, SLOTS
from nni_emotionnas.spaces.kernels.recurrent_sequence import MixedSequence, row_blocks, step_buffers


@dataclass
class Mixture:
    """The softmaxed weights of one supernet layer: `operands[i]` (3, 3 + i), node i's weights of each value
    in its operand slots a, b, z; `ops[i]` node i's op weights; `states` (2, nodes), h1's and h2's."""

    operands: list[torch.Tensor]
    ops: list[torch.Tensor]
    states: torch.Tensor
    op_names: list[str]


def layer_mixture(layer: Any) -> Optional[Mixture]:
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


def run_mixture(layer: Any, projected: torch.Tensor, mixture: Mixture, leaky_slope: float) -> torch.Tensor:
    """The layer's h1 sequence (batch, time, hidden) over the projected inputs (batch, time, hidden)."""
    linear = []
    if LINEAR in mixture.op_names:
        for node in layer.nodes:
            linear += [node.op[LINEAR].linear.weight, node.op[LINEAR].linear.bias]
    bound = None if layer.state_bound is None else float(layer.state_bound)
    meta = (mixture.op_names, len(mixture.ops), bound, leaky_slope, row_blocks(projected), step_buffers(layer))
    return MixedSequence.apply(projected, mixture.states, meta, *mixture.operands, *mixture.ops, *linear)
