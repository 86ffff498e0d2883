"""The deep space's recurrent-cell ops, one entry each: the only place an op is defined.

Every path reads `OPS`: cell validation (`spec`: arity), the supernet's slot op (`recurrent.SlotOp`: operand
slots, `apply`), the fused DARTS sequence step (`kernels.recurrent_sequence`: `fused`, in TorchScript) and the
fixed cell (`fixed`: `apply` on any number of inputs). `recurrent_op` is the one lookup, so a name missing
here is an error naming it on every path. `linear` is the op with weights: the layers that run it hold its
maps (the fixed cell hoists them out of the time loop), so its `apply` is never called.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch import Tensor as T  # short, for the fused ops' signatures

from nni_emotionnas.errors import ConfigError

SLOTS = ("a", "b", "z")
LINEAR = "linear"


class FusedOp(nn.Module):
    """An op inside the fused DARTS step (compiled by TorchScript with the step). `forward` writes op(a, b, z)
    into `out` (nothing recorded for autograd); `grad` adds `w` times the gradient of <g, op(a, b, z)> with
    respect to a, b, z into `g_abz` (3 x batch x hidden), `out` being what `forward` wrote. `weight`,
    `bias` are the node's linear map, read by the linear op only."""

    def forward(self, out: T, a: T, b: T, z: T, weight: T, bias: T, slope: float) -> None:
        raise NotImplementedError

    def grad(self, g_abz: T, g: T, w: float, a: T, b: T, z: T, out: T, weight: T, slope: float) -> None:
        raise NotImplementedError


class FusedLinear(FusedOp):
    def forward(self, out: T, a: T, b: T, z: T, weight: T, bias: T, slope: float) -> None:
        torch.addmm(bias, a, weight.t(), out=out)

    @torch.jit.export
    def grad(self, g_abz: T, g: T, w: float, a: T, b: T, z: T, out: T, weight: T, slope: float) -> None:
        g_abz[0].addmm_(g, weight, alpha=w)


class FusedBlend(FusedOp):  # b + z (a - b)
    def forward(self, out: T, a: T, b: T, z: T, weight: T, bias: T, slope: float) -> None: torch.lerp(b, a, z, out=out)

    @torch.jit.export
    def grad(self, g_abz: T, g: T, w: float, a: T, b: T, z: T, out: T, weight: T, slope: float) -> None:
        g_abz[0].addcmul_(g, z, value=w)
        g_abz[1].add_(g, alpha=w).addcmul_(g, z, value=-w)
        g_abz[2].addcmul_(g, a, value=w).addcmul_(g, b, value=-w)


class FusedProduct(FusedOp):
    def forward(self, out: T, a: T, b: T, z: T, weight: T, bias: T, slope: float) -> None: torch.mul(a, b, out=out)

    @torch.jit.export
    def grad(self, g_abz: T, g: T, w: float, a: T, b: T, z: T, out: T, weight: T, slope: float) -> None:
        g_abz[0].addcmul_(g, b, value=w)
        g_abz[1].addcmul_(g, a, value=w)


class FusedSum(FusedOp):
    def forward(self, out: T, a: T, b: T, z: T, weight: T, bias: T, slope: float) -> None: torch.add(a, b, out=out)

    @torch.jit.export
    def grad(self, g_abz: T, g: T, w: float, a: T, b: T, z: T, out: T, weight: T, slope: float) -> None:
        g_abz[0].add_(g, alpha=w)
        g_abz[1].add_(g, alpha=w)


class FusedTanh(FusedOp):
    def forward(self, out: T, a: T, b: T, z: T, weight: T, bias: T, slope: float) -> None: torch.tanh(a, out=out)

    @torch.jit.export
    def grad(self, g_abz: T, g: T, w: float, a: T, b: T, z: T, out: T, weight: T, slope: float) -> None:
        g_abz[0].add_(torch.ops.aten.tanh_backward(g, out), alpha=w)


class FusedSigmoid(FusedOp):
    def forward(self, out: T, a: T, b: T, z: T, weight: T, bias: T, slope: float) -> None: torch.sigmoid(a, out=out)

    @torch.jit.export
    def grad(self, g_abz: T, g: T, w: float, a: T, b: T, z: T, out: T, weight: T, slope: float) -> None:
        g_abz[0].add_(torch.ops.aten.sigmoid_backward(g, out), alpha=w)


class FusedLeakyReLU(FusedOp):
    def forward(self, out: T, a: T, b: T, z: T, weight: T, bias: T, slope: float) -> None:
        torch._C._nn.leaky_relu(a, slope, out=out)

    @torch.jit.export
    def grad(self, g_abz: T, g: T, w: float, a: T, b: T, z: T, out: T, weight: T, slope: float) -> None:
        g_abz[0].add_(torch.ops.aten.leaky_relu_backward(g, a, slope, False), alpha=w)


def _weighted(inputs: Sequence[Tensor], slope: float) -> Tensor:
    raise TypeError("linear holds weights: the layer that runs it applies its own linear maps")


@dataclass(frozen=True)
class RecurrentOp:
    """`slots`: the supernet operand slots it reads (a, b, z), in the order a cell node lists its inputs;
    `arity`: (fewest, most) inputs a cell node may give it, None = unbounded; `apply(inputs, leaky_slope)`: the
    op with autograd, inputs in slot order (any number up to the arity); `fused`: its form in the fused step."""

    slots: tuple[str, ...]
    arity: tuple[int, Optional[int]]
    apply: Callable[[Sequence[Tensor], float], Tensor]
    fused: type[FusedOp]


OPS: dict[str, RecurrentOp] = {
    # sum of one learned linear map per input, plus a bias (the supernet's slot op reads one input)
    LINEAR: RecurrentOp(("a",), (1, None), _weighted, FusedLinear),
    "blend": RecurrentOp(("z", "a", "b"), (3, 3), lambda x, _: x[2] + x[0] * (x[1] - x[2]), FusedBlend),
    "product": RecurrentOp(("a", "b"), (2, None), lambda x, _: functools.reduce(operator.mul, x), FusedProduct),
    "sum": RecurrentOp(("a", "b"), (2, None), lambda x, _: functools.reduce(operator.add, x), FusedSum),
    "tanh": RecurrentOp(("a",), (1, 1), lambda x, _: torch.tanh(x[0]), FusedTanh),
    "sigmoid": RecurrentOp(("a",), (1, 1), lambda x, _: torch.sigmoid(x[0]), FusedSigmoid),
    "leaky_relu": RecurrentOp(("a",), (1, 1), lambda x, slope: F.leaky_relu(x[0], slope), FusedLeakyReLU),
}


def recurrent_op(name: str, where: str = "op") -> RecurrentOp:
    """The table's entry; an unknown name is a `ConfigError` naming it and the known ones."""
    if name not in OPS:
        raise ConfigError(f"{where}: unknown recurrent op {name!r} (known: {', '.join(OPS)})")
    return OPS[name]
