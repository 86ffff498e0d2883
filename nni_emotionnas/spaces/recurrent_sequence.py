"""The recurrent supernet layer under DARTS as one autograd function over the whole sequence.

Autograd records ~30 nodes per cell node and time step for the mixture step of `recurrent_mixture`, and at
727 steps recording and replaying them costs more than the arithmetic. Here the forward runs without
recording and keeps only every step's values (x, h1, h2 and the nodes' outputs, 11 x batch x hidden for 8
nodes); the backward walks the steps in reverse with the hand-derived gradients of the same function
(operands recomputed from the saved values). What a step does is written into preallocated buffers (no
stacking copies), the op weights are Python numbers there (scalar arguments of fused multiply-adds instead of
separate products), and the linear ops' weight gradients, sums over time of (batch x hidden)^T (batch x
hidden) products, are one large matrix product per node after the loop instead of a small one per step.
The function is `recurrent_mixture.run_mixture`'s; `tests/test_recurrent_space.py` checks logits and
gradients against NNI's own mixtures.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

aten = torch.ops.aten


def _ops_into(
    out: torch.Tensor, names: list[str], a: torch.Tensor, b: torch.Tensor, z: torch.Tensor,
    linear: Optional[tuple], slope: float,
) -> None:
    """Every op's output written into `out[k]` (ops x batch x hidden), in `names` order (as
    `recurrent_ops.SlotOp` computes them)."""
    for k, name in enumerate(names):
        o = out[k]
        if name == "linear":
            torch.addmm(linear[1], a, linear[0].t(), out=o)
        elif name == "blend":
            torch.lerp(b, a, z, out=o)
        elif name == "product":
            torch.mul(a, b, out=o)
        elif name == "sum":
            torch.add(a, b, out=o)
        elif name == "tanh":
            torch.tanh(a, out=o)
        elif name == "sigmoid":
            torch.sigmoid(a, out=o)
        else:
            aten.leaky_relu.out(a, slope, out=o)


class MixedSequence(torch.autograd.Function):
    """h1 for every step of a DARTS-mixed recurrent layer; see the module docstring."""

    @staticmethod
    def forward(
        ctx: Any, steps: torch.Tensor, state_weights: torch.Tensor, meta: tuple, *weights: torch.Tensor
    ) -> torch.Tensor:
        names, count, bound, slope = meta
        operand_w, op_w, linear = _unpack(weights, names, count)
        batch, time, hidden = steps.shape
        values_t = steps.new_empty(time, 3 + count, batch, hidden)  # every step's x, h1, h2 and node outputs
        states_t = steps.new_empty(time, 2, batch, hidden)  # every step's new h1, h2
        values_t[:, 0] = steps.transpose(0, 1)
        values_t[0, 1:3] = 0
        outputs = steps.new_empty(len(names), batch, hidden)
        for t in range(time):
            values = values_t[t]
            if t:
                values[1:3] = states_t[t - 1]
            for i in range(count):
                a, b, z = (operand_w[i] @ values[: 3 + i].flatten(1)).view(3, batch, hidden)
                _ops_into(outputs, names, a, b, z, linear[i], slope)
                torch.mm(op_w[i][None], outputs.flatten(1), out=values[3 + i].view(1, -1))
            states = states_t[t]
            torch.mm(state_weights, values[3:].flatten(1), out=states.view(2, -1))
            if bound is not None:
                states.div_(bound).tanh_().mul_(bound)
        ctx.meta = meta
        ctx.save_for_backward(values_t, states_t, state_weights, *weights)
        return states_t[:, 0].transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        names, count, bound, slope = ctx.meta
        values_t, states_t, state_weights, *weights = ctx.saved_tensors
        operand_w, op_w, linear = _unpack(weights, names, count)
        op_scalars = [w.tolist() for w in op_w]  # constant over the sequence: scalar arguments below
        time, _, batch, hidden = values_t.shape
        g_state_w = torch.zeros_like(state_weights)
        g_operand = [torch.zeros_like(w) for w in operand_w]
        g_op = [torch.zeros_like(w) for w in op_w]
        has_linear = "linear" in names
        # per step and node: the linear op's input a and its output's gradient (without the op weight)
        linear_a = values_t.new_empty(count, time, batch, hidden) if has_linear else None
        linear_g = values_t.new_empty(count, time, batch, hidden) if has_linear else None
        g_out = grad_out.transpose(0, 1)
        g_steps = grad_out.new_empty(time, batch, hidden)
        g_values = grad_out.new_empty(3 + count, batch, hidden)
        g_operands = grad_out.new_empty(3, batch, hidden)
        g_mixed = grad_out.new_zeros(2, batch, hidden)  # the gradient reaching h1, h2 of step t from t + 1
        outputs = grad_out.new_empty(len(names), batch, hidden)
        for t in reversed(range(time)):
            values = values_t[t]
            g_mixed[0] += g_out[t]
            if bound is not None:
                states = states_t[t]
                g_mixed.mul_(torch.addcmul(torch.ones_like(states), states, states, value=-1.0 / bound**2))
            flat_mixed = g_mixed.flatten(1)
            g_state_w.addmm_(flat_mixed, values[3:].flatten(1).t())
            g_values[:3] = 0
            torch.mm(state_weights.t(), flat_mixed, out=g_values[3:].flatten(1))
            for i in reversed(range(count)):
                inputs = values[: 3 + i].flatten(1)
                a, b, z = (operand_w[i] @ inputs).view(3, batch, hidden)
                g_node = g_values[3 + i]
                _ops_into(outputs, names, a, b, z, linear[i], slope)
                g_op[i].addmv_(outputs.flatten(1), g_node.flatten())
                g_operands.zero_()
                _op_grads(names, op_scalars[i], g_node, a, b, z, outputs, linear[i], g_operands, slope)
                if has_linear:
                    linear_a[i, t], linear_g[i, t] = a, g_node
                flat_operands = g_operands.flatten(1)
                g_operand[i].addmm_(flat_operands, inputs.t())
                g_values[: 3 + i].flatten(1).addmm_(operand_w[i].t(), flat_operands)
            g_steps[t] = g_values[0]
            g_mixed.copy_(g_values[1:3])
        g_linear = []
        if has_linear:
            k = names.index("linear")
            for i in range(count):
                flat_g, flat_a = linear_g[i].flatten(0, 1), linear_a[i].flatten(0, 1)
                g_linear += [(flat_g.t() @ flat_a).mul_(op_w[i][k]), flat_g.sum(0).mul_(op_w[i][k])]
        return (g_steps.transpose(0, 1), g_state_w, None, *g_operand, *g_op, *g_linear)


def _unpack(weights: tuple, names: list[str], count: int) -> tuple[list, list, list]:
    operand_w, op_w, rest = list(weights[:count]), list(weights[count : 2 * count]), list(weights[2 * count :])
    if "linear" in names:
        linear = [(rest[2 * i], rest[2 * i + 1]) for i in range(count)]
    else:
        linear = [None] * count
    return operand_w, op_w, linear


def _op_grads(
    names: list[str],
    w: list[float],
    g: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    z: torch.Tensor,
    outputs: torch.Tensor,
    linear: Optional[tuple],
    g_operands: torch.Tensor,
    slope: float,
) -> None:
    """Adds the gradients of sum_k w_k op_k(a, b, z) with respect to a, b, z into `g_operands` (3 x batch x
    hidden); the linear ops' weight gradients are left to the caller (summed over time in one product)."""
    g_a, g_b, g_z = g_operands
    for k, name in enumerate(names):
        wk, out = w[k], outputs[k]
        if name == "linear":
            g_a.addmm_(g, linear[0], alpha=wk)
        elif name == "blend":  # b + z (a - b)
            g_a.addcmul_(g, z, value=wk)
            g_b.add_(g, alpha=wk).addcmul_(g, z, value=-wk)
            g_z.addcmul_(g, a, value=wk).addcmul_(g, b, value=-wk)
        elif name == "product":
            g_a.addcmul_(g, b, value=wk)
            g_b.addcmul_(g, a, value=wk)
        elif name == "sum":
            g_a.add_(g, alpha=wk)
            g_b.add_(g, alpha=wk)
        elif name == "tanh":
            g_a.add_(aten.tanh_backward(g, out), alpha=wk)
        elif name == "sigmoid":
            g_a.add_(aten.sigmoid_backward(g, out), alpha=wk)
        else:
            g_a.add_(aten.leaky_relu_backward(g, a, slope, False), alpha=wk)
