"""Candidate ops of the recurrent search space. Every op takes the same operand slots (a, b, z), each an
`InputChoice` over the node's predecessors, and uses as many as its arity needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# op -> operand slots it reads, in the order the cell format lists its inputs (blend is z*a + (1-z)*b)
OP_SLOTS: dict[str, tuple[str, ...]] = {
    "linear": ("a",), "blend": ("z", "a", "b"), "product": ("a", "b"), "sum": ("a", "b"),
    "tanh": ("a",), "sigmoid": ("a",), "leaky_relu": ("a",),
}
SLOTS = ("a", "b", "z")


class SlotOp(nn.Module):
    def __init__(self, op: str, hidden_size: int, leaky_slope: float) -> None:
        super().__init__()
        self.op, self.leaky_slope = op, leaky_slope
        self.linear = nn.Linear(hidden_size, hidden_size) if op == "linear" else None

    def forward(self, operands: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        a, b, z = operands
        op = self.op
        if op == "linear":
            return self.linear(a)
        if op == "blend":
            return b + z * (a - b)
        if op == "product":
            return a * b
        if op == "sum":
            return a + b
        if op == "tanh":
            return torch.tanh(a)
        if op == "sigmoid":
            return torch.sigmoid(a)
        return F.leaky_relu(a, self.leaky_slope)
