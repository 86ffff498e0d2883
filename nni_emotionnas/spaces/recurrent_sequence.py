"""The recurrent supernet layer under DARTS as one autograd function over the whole sequence.

Autograd records ~30 nodes per cell node and time step for the mixture step of `recurrent_mixture`, and at
727 steps recording and replaying them costs more than the arithmetic. Here the forward runs without
recording and keeps only every step's values (x, h1, h2 and the nodes' outputs, 11 x batch x hidden for 8
nodes); the backward walks the steps in reverse with the hand-derived gradients of the same function
(operands recomputed from the saved values) and accumulates the weights' gradients itself. The function is
`recurrent_mixture.run_mixture`'s; `tests/test_recurrent_space.py` checks logits and gradients against NNI's
own mixtures.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F


def _ops(
    names: list[str], a: torch.Tensor, b: torch.Tensor, z: torch.Tensor, linear: Optional[tuple], slope: float
) -> list[torch.Tensor]:
    """Every op's output, in `names` order (as `recurrent_ops.SlotOp` computes them)."""
    table = {
        "blend": lambda: torch.lerp(b, a, z),
        "product": lambda: a * b,
        "sum": lambda: a + b,
        "tanh": lambda: torch.tanh(a),
        "sigmoid": lambda: torch.sigmoid(a),
        "leaky_relu": lambda: F.leaky_relu(a, slope),
    }
    return [torch.addmm(linear[1], a, linear[0].t()) if name == "linear" else table[name]() for name in names]


class MixedSequence(torch.autograd.Function):
    """h1 for every step of a DARTS-mixed recurrent layer; see the module docstring."""

    @staticmethod
    def forward(
        ctx: Any, steps: torch.Tensor, state_weights: torch.Tensor, meta: tuple, *weights: torch.Tensor
    ) -> torch.Tensor:
        names, count, bound, slope = meta
        operand_w, op_w, linear = _unpack(weights, names, count)
        batch, time, hidden = steps.shape
        h1 = h2 = steps.new_zeros(batch, hidden)
        values_t, states_t = [], []
        for t in range(time):
            values = [steps[:, t], h1, h2]
            for i in range(count):
                a, b, z = _mix(operand_w[i], values)
                values.append(_mix(op_w[i][None], _ops(names, a, b, z, linear[i], slope))[0])
            mixed = _mix(state_weights, values[3:])
            h1, h2 = (torch.tanh(mixed / bound) * bound if bound is not None else mixed).unbind(0)
            values_t.append(torch.stack(values))
            states_t.append(torch.stack([h1, h2]))
        ctx.meta = meta
        ctx.save_for_backward(torch.stack(values_t), torch.stack(states_t), state_weights, *weights)
        return torch.stack([s[0] for s in states_t], dim=1)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        names, count, bound, slope = ctx.meta
        values_t, states_t, state_weights, *weights = ctx.saved_tensors
        operand_w, op_w, linear = _unpack(weights, names, count)
        time, _, batch, hidden = values_t.shape
        g_state_w = torch.zeros_like(state_weights)
        g_operand = [torch.zeros_like(w) for w in operand_w]
        g_op = [torch.zeros_like(w) for w in op_w]
        g_linear = [None if lin is None else (torch.zeros_like(lin[0]), torch.zeros_like(lin[1])) for lin in linear]
        g_steps = grad_out.new_empty(batch, time, hidden)
        g_h1 = g_h2 = grad_out.new_zeros(batch, hidden)
        for t in reversed(range(time)):
            values = values_t[t]
            g_mixed = torch.stack([g_h1 + grad_out[:, t], g_h2])
            if bound is not None:
                g_mixed = g_mixed * (1 - (states_t[t] / bound).square())
            flat_nodes = values[3:].flatten(1)
            g_state_w += g_mixed.flatten(1) @ flat_nodes.t()
            g_values = values.new_zeros(values.shape[0], batch * hidden)
            g_values[3:] = state_weights.t() @ g_mixed.flatten(1)
            for i in reversed(range(count)):
                inputs = values[: 3 + i].flatten(1)
                a, b, z = (operand_w[i] @ inputs).view(3, batch, hidden).unbind(0)
                g_node = g_values[3 + i].view(batch, hidden)
                outputs = _ops(names, a, b, z, linear[i], slope)
                g_op[i] += torch.stack(outputs).flatten(1) @ g_node.flatten()
                g_a, g_b, g_z = _op_grads(names, op_w[i], g_node, a, b, z, outputs, linear[i], g_linear[i], slope)
                g_operands = torch.stack([g_a, g_b, g_z]).flatten(1)
                g_operand[i] += g_operands @ inputs.t()
                g_values[: 3 + i] += operand_w[i].t() @ g_operands
            g_steps[:, t] = g_values[0].view(batch, hidden)
            g_h1, g_h2 = g_values[1].view(batch, hidden), g_values[2].view(batch, hidden)
        g_weights = [*g_operand, *g_op, *(g for lin in g_linear if lin is not None for g in lin)]
        return (g_steps, g_state_w, None, *g_weights)


def _unpack(weights: tuple, names: list[str], count: int) -> tuple[list, list, list]:
    operand_w, op_w, rest = list(weights[:count]), list(weights[count : 2 * count]), list(weights[2 * count :])
    if "linear" in names:
        linear = [(rest[2 * i], rest[2 * i + 1]) for i in range(count)]
    else:
        linear = [None] * count
    return operand_w, op_w, linear


def _mix(weights: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
    """(k, c) weights times c values of one shape -> k weighted sums."""
    return (weights @ torch.stack(values).flatten(1)).view(weights.shape[0], *values[0].shape)


def _op_grads(
    names: list[str],
    w: torch.Tensor,
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    z: torch.Tensor,
    outputs: list[torch.Tensor],
    linear: Optional[tuple],
    g_linear: Optional[tuple],
    slope: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of sum_k w_k op_k(a, b, z) with respect to a, b, z (and into the linear's weight and bias)."""
    g_a = torch.zeros_like(a)
    g_b = torch.zeros_like(b)
    g_z = torch.zeros_like(z)
    for k, name in enumerate(names):
        gk = g * w[k]
        out = outputs[k]
        if name == "linear":
            g_a += gk @ linear[0]
            g_linear[0].add_(gk.t() @ a)
            g_linear[1].add_(gk.sum(0))
        elif name == "blend":  # b + z (a - b)
            g_a += gk * z
            g_b += gk * (1 - z)
            g_z += gk * (a - b)
        elif name == "product":
            g_a += gk * b
            g_b += gk * a
        elif name == "sum":
            g_a += gk
            g_b += gk
        elif name == "tanh":
            g_a += gk * (1 - out.square())
        elif name == "sigmoid":
            g_a += gk * out * (1 - out)
        else:
            g_a += torch.where(a > 0, gk, gk * slope)
    return g_a, g_b, g_z
