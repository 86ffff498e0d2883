"""The recurrent supernet layer under DARTS as one autograd function over the whole sequence.

Autograd records ~30 nodes per cell node and time step for the mixture step of `recurrent_mixture`, and at
727 steps recording and replaying them costs more than the arithmetic. Here the forward runs without
recording and keeps only every step's values (x, h1, h2 and the nodes' outputs, 11 x batch x hidden for 8
nodes); the backward walks the steps in reverse with the hand-derived gradients of the same function
(operands recomputed from the saved values). What a step does is written into preallocated buffers (no
stacking copies), the op weights are numbers there (scalar arguments of fused multiply-adds instead of
separate products), and the linear ops' weight gradients, sums over time of (batch x hidden)^T (batch x
hidden) products, are one large matrix product per node after the loop instead of a small one per step. The
backward does not recompute the linear op's output (a batch x hidden x hidden product per node and step): its
share of the op weights' gradient, sum over steps of <g, a W^T + bias>, is <W, sum g^T a> + <bias, sum g>,
taken from those same products. The large buffers are kept from one step for the next (`StepBuffers`).

Both loops are TorchScript (`torch.jit.script`, compiled on first use for each list of ops, whose forward and
gradient are the `fused` forms of their entries in `cells.ops.OPS`): its interpreter dispatches the ~40
small ops of a node and step at a fraction of Python's cost, and it releases the GIL, so with several torch
threads the batch is split into that many row blocks, each run by its own Python thread with one intra-op
thread (rows of a batch never interact; the weight gradients are summed over the blocks): the ops of a step
are too small for torch's own intra-op parallelism. The function is `recurrent_mixture.run_mixture`'s;
`tests/test_recurrent_space.py` checks logits and gradients against NNI's own mixtures, split and unsplit.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from nni_emotionnas.spaces.cells.ops import LINEAR, RecurrentOp, recurrent_op
from nni_emotionnas.threads import torch_threads


class SequenceKernel(nn.Module):
    """The step loops for one list of ops (their `cells.ops.OPS` entries' `fused` forms, one submodule each);
    compiled by TorchScript once per list (`sequence_kernel`), which unrolls the loops over the ops."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(recurrent_op(name, "ops").fused() for name in names)
        self.linear = names.index(LINEAR) if LINEAR in names else -1  # the op whose weights are summed over time

    def ops_into(self, out: Tensor, a: Tensor, b: Tensor, z: Tensor, linear_w: list[Tensor], linear_b: list[Tensor],
                 node: int, slope: float, with_linear: bool) -> None:
        """Every op's output written into `out[k]` (ops x batch x hidden), in the ops' order; without
        `with_linear` the linear op's row is left as it is."""
        weight, bias = (linear_w[node], linear_b[node]) if self.linear >= 0 else (a, a)
        for k, op in enumerate(self.ops):
            if with_linear or k != self.linear:
                op(out[k], a, b, z, weight, bias, slope)

    def op_grads(self, w: list[float], g: Tensor, a: Tensor, b: Tensor, z: Tensor, outputs: Tensor,
                 linear_w: list[Tensor], node: int, g_operands: Tensor, slope: float) -> None:
        """Adds the gradients of sum_k w_k op_k(a, b, z) with respect to a, b, z into `g_operands` (3 x batch x
        hidden); the linear ops' weight gradients are left to the caller (summed over time in one product)."""
        weight = linear_w[node] if self.linear >= 0 else a
        for k, op in enumerate(self.ops):
            op.grad(g_operands, g, w[k], a, b, z, outputs[k], weight, slope)

    def forward(
        self, steps: Tensor, state_weights: Tensor, operand_w: list[Tensor], op_w: list[Tensor],
        linear_w: list[Tensor], linear_b: list[Tensor], bound: Optional[float], slope: float, values_t: Tensor,
        states_t: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Fills and returns (every step's x, h1, h2 and node outputs: `values_t`, time x (3 + nodes) x batch x
        hidden; every step's new h1, h2: `states_t`, time x 2 x batch x hidden) for a block of batch rows."""
        batch, hidden = steps.shape[0], steps.shape[2]
        time, count = values_t.shape[0], len(operand_w)
        values_t[:, 0] = steps.transpose(0, 1)
        values_t[0, 1:3] = 0
        outputs = steps.new_empty([len(self.ops), batch, hidden])
        for t in range(time):
            values = values_t[t]
            if t > 0:
                values[1:3] = states_t[t - 1]
            for i in range(count):
                abz = torch.mm(operand_w[i], values[: 3 + i].flatten(1)).view(3, batch, hidden)
                self.ops_into(outputs, abz[0], abz[1], abz[2], linear_w, linear_b, i, slope, True)
                torch.mm(op_w[i].unsqueeze(0), outputs.flatten(1), out=values[3 + i].view(1, -1))
            states = states_t[t]
            torch.mm(state_weights, values[3:].flatten(1), out=states.view(2, -1))
            if bound is not None:
                states.div_(bound).tanh_().mul_(bound)
        return values_t, states_t

    @torch.jit.export
    def backward_rows(
        self, grad_out: Tensor, values_t: Tensor, states_t: Tensor, state_weights: Tensor, operand_w: list[Tensor],
        op_w: list[Tensor], op_scalars: list[list[float]], linear_w: list[Tensor], linear_b: list[Tensor],
        bound: Optional[float], slope: float, linear_a: Tensor, linear_g: Tensor, g_steps: Tensor,
    ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Gradients from a block of rows: (inputs, state weights, operand weights, op weights, linear weights,
        linear biases); the weights' are this block's share of the sum over the batch. `op_scalars` are `op_w` as
        numbers (constant over the sequence: scalar arguments of the fused multiply-adds). `linear_a`, `linear_g`
        (nodes x time x batch x hidden, or 0 x ... without a linear op) and `g_steps` (time x batch x hidden) are
        scratch, overwritten; the inputs' gradient is returned in `g_steps`."""
        time, batch, hidden = values_t.shape[0], values_t.shape[2], values_t.shape[3]
        count = len(operand_w)
        g_state_w = torch.zeros_like(state_weights)
        g_operand = [torch.zeros_like(w) for w in operand_w]
        g_op = [torch.zeros_like(w) for w in op_w]
        has_linear = len(linear_w) > 0
        # linear_a, linear_g: per node and step, the linear op's input a and its output's gradient (no op weight)
        g_out = grad_out.transpose(0, 1)
        g_values = grad_out.new_empty([3 + count, batch, hidden])
        g_operands = grad_out.new_empty([3, batch, hidden])
        g_mixed = grad_out.new_zeros([2, batch, hidden])  # the gradient reaching h1, h2 of step t from t + 1
        # the linear op's row stays zero: its share of the op weights' gradient is added after the loop (docstring)
        outputs = grad_out.new_zeros([len(self.ops), batch, hidden])
        for t in range(time - 1, -1, -1):
            values = values_t[t]
            g_mixed[0] += g_out[t]
            if bound is not None:
                states = states_t[t]
                g_mixed.mul_(torch.addcmul(torch.ones_like(states), states, states, value=-1.0 / (bound * bound)))
            flat_mixed = g_mixed.flatten(1)
            g_state_w.addmm_(flat_mixed, values[3:].flatten(1).t())
            g_values[:3] = 0
            torch.mm(state_weights.t(), flat_mixed, out=g_values[3:].flatten(1))
            for i in range(count - 1, -1, -1):
                inputs = values[: 3 + i].flatten(1)
                abz = torch.mm(operand_w[i], inputs).view(3, batch, hidden)
                a = abz[0]
                g_node = g_values[3 + i]
                self.ops_into(outputs, a, abz[1], abz[2], linear_w, linear_b, i, slope, False)
                g_op[i].addmv_(outputs.flatten(1), g_node.flatten())
                g_operands.zero_()
                self.op_grads(op_scalars[i], g_node, a, abz[1], abz[2], outputs, linear_w, i, g_operands, slope)
                if has_linear:
                    linear_a[i, t] = a
                    linear_g[i, t] = g_node
                flat_operands = g_operands.flatten(1)
                g_operand[i].addmm_(flat_operands, inputs.t())
                g_values[: 3 + i].flatten(1).addmm_(operand_w[i].t(), flat_operands)
            g_steps[t] = g_values[0]
            g_mixed.copy_(g_values[1:3])
        g_linear_w: list[Tensor] = []
        g_linear_b: list[Tensor] = []
        if has_linear:
            k = self.linear
            for i in range(count):
                flat_g, flat_a = linear_g[i].flatten(0, 1), linear_a[i].flatten(0, 1)
                product, g_sum = torch.mm(flat_g.t(), flat_a), flat_g.sum(0)
                g_op[i][k] += (product * linear_w[i]).sum() + torch.dot(g_sum, linear_b[i])
                g_linear_w.append(product.mul_(op_scalars[i][k]))
                g_linear_b.append(g_sum.mul_(op_scalars[i][k]))
        return g_steps.transpose(0, 1), g_state_w, g_operand, g_op, g_linear_w, g_linear_b


@functools.cache
def _kernel(ops: tuple[RecurrentOp, ...], names: tuple[str, ...]) -> Any:
    return torch.jit.freeze(torch.jit.script(SequenceKernel(list(names)).eval()), ["backward_rows"])


def sequence_kernel(names: list[str]) -> Any:
    """The compiled `SequenceKernel` of `names`, once per process and list of table entries, on first use."""
    return _kernel(tuple(recurrent_op(name, "ops") for name in names), tuple(names))


def row_blocks(steps: Tensor) -> int:
    """How many row blocks a step over `steps` (batch x time x hidden) runs in parallel: on CPU one per torch
    thread, at most one per row; elsewhere one (a GPU parallelises each op by itself)."""
    return max(1, min(torch.get_num_threads(), steps.shape[0])) if steps.device.type == "cpu" else 1


def _in_parallel(function: Callable[..., Any], jobs: list[tuple]) -> list[Any]:
    """`function(*job)` for every job, each in its own thread with one intra-op thread and the caller's grad
    mode (TorchScript releases the GIL); the caller's torch thread count is restored afterwards."""
    if len(jobs) == 1:
        return [function(*jobs[0])]
    grad_mode = torch.is_grad_enabled()

    def run(job: tuple) -> Any:
        torch.set_num_threads(1)  # a new thread starts with the process default, not the caller's count
        with torch.set_grad_enabled(grad_mode):  # thread-local: off inside an autograd function, as here
            return function(*job)

    with torch_threads(1), ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(run, jobs))


class StepBuffers:
    """The sequence function's large buffers, kept from one step for the next: glibc maps blocks that large
    anew, so fresh ones would fault their pages in every step (docs/search-cost.md). Buffers are kept for one
    argument signature (shape, dtype, device) at a time; another signature drops them."""

    def __init__(self) -> None:
        self._signature: tuple = ()
        self._free: dict[tuple[int, ...], list[Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, signature: tuple, shape: list[int], like: Tensor) -> Tensor:
        """A kept buffer of `shape`, or a new one (contents undefined either way)."""
        with self._lock:
            if signature != self._signature:
                self._signature, self._free = signature, {}
            kept = self._free.get(tuple(shape))
            if kept:
                return kept.pop()
        return like.new_empty(shape)

    def kept(self) -> list[Tensor]:
        """The buffers kept now, for the next `take`s."""
        with self._lock:
            return [buffer for buffers in self._free.values() for buffer in buffers]

    def give(self, signature: tuple, buffers: Iterable[Tensor]) -> None:
        """Keeps `buffers` for later `take`s; nothing may use them afterwards."""
        with self._lock:
            if signature == self._signature:
                for buffer in buffers:
                    self._free.setdefault(tuple(buffer.shape), []).append(buffer)


_BUFFERS: weakref.WeakKeyDictionary[Any, StepBuffers] = weakref.WeakKeyDictionary()


def step_buffers(owner: Any) -> StepBuffers:
    """`owner`'s buffers (a supernet layer's), freed with it."""
    return _BUFFERS.setdefault(owner, StepBuffers())


class MixedSequence(torch.autograd.Function):
    """h1 for every step of a DARTS-mixed recurrent layer; see the module docstring. `meta` is (op names, node
    count, state bound, leaky slope, row blocks, `StepBuffers`)."""

    @staticmethod
    def forward(
        ctx: Any, steps: Tensor, state_weights: Tensor, meta: tuple, *weights: Tensor
    ) -> Tensor:
        names, count, bound, slope, blocks, buffers = meta
        operand_w, op_w, linear_w, linear_b = _unpack(weights, count)
        signature = (steps.shape, steps.dtype, steps.device, count)
        jobs = []
        for block in steps.tensor_split(blocks):
            rows, time, hidden = block.shape
            values_t = buffers.take(signature, [time, 3 + count, rows, hidden], block)
            states_t = buffers.take(signature, [time, 2, rows, hidden], block)
            jobs.append((block, state_weights, operand_w, op_w, linear_w, linear_b, bound, slope, values_t, states_t))
        saved = _in_parallel(sequence_kernel(names), jobs)
        ctx.meta, ctx.signature = meta, signature
        ctx.save_for_backward(state_weights, *weights, *(t for pair in saved for t in pair))
        # back to the pool when autograd frees this node (after backward, or unused): safe with retain_graph
        weakref.finalize(ctx, buffers.give, signature, [t for pair in saved for t in pair]).atexit = False
        return torch.cat([states_t[:, 0].transpose(0, 1) for _, states_t in saved])

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple:
        names, count, bound, slope, blocks, buffers = ctx.meta
        state_weights, *rest = ctx.saved_tensors
        weights, saved = rest[: len(rest) - 2 * blocks], rest[len(rest) - 2 * blocks :]
        operand_w, op_w, linear_w, linear_b = _unpack(tuple(weights), count)
        op_scalars = [w.tolist() for w in op_w]
        linear_count = count if linear_w else 0
        jobs, scratch = [], []
        for j, g in enumerate(grad_out.tensor_split(blocks)):
            rows, time, hidden = g.shape
            block_scratch = [
                buffers.take(ctx.signature, [linear_count, time, rows, hidden], g),
                buffers.take(ctx.signature, [linear_count, time, rows, hidden], g),
                buffers.take(ctx.signature, [time, rows, hidden], g),
            ]
            scratch += block_scratch
            jobs.append((g, saved[2 * j], saved[2 * j + 1], state_weights, operand_w, op_w, op_scalars, linear_w,
                         linear_b, bound, slope, *block_scratch))
        grads = _in_parallel(sequence_kernel(names).backward_rows, jobs)
        g_steps = torch.cat([g[0] for g in grads])
        buffers.give(ctx.signature, scratch)  # g_steps was copied by the cat, the rest is consumed
        g_state_w = torch.stack([g[1] for g in grads]).sum(0)
        g_lists = [[torch.stack(parts).sum(0) for parts in zip(*(g[k] for g in grads))] for k in range(2, 6)]
        g_operand, g_op, g_linear_w, g_linear_b = g_lists
        g_linear = [g for pair in zip(g_linear_w, g_linear_b) for g in pair]
        return (g_steps, g_state_w, None, *g_operand, *g_op, *g_linear)


def _unpack(weights: tuple, count: int) -> tuple[list, list, list, list]:
    """(operand weights, op weights, linear weights, linear biases) from the flat argument list."""
    operand_w, op_w, rest = list(weights[:count]), list(weights[count : 2 * count]), list(weights[2 * count :])
    return operand_w, op_w, rest[0::2], rest[1::2]
