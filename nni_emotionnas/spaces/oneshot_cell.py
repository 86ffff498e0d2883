"""A leaner forward for NNI's DARTS cell mixture, plugged in through NNI's own `extra_oneshot_hooks`.

NNI's `DifferentiableMixedCell` stacks every candidate's output on each edge, concatenates a zero tensor
for its implicit `none` and then weights and sums: three extra copies of all candidate outputs kept for
backward. Summing `w_k * op_k(x)` directly is the same function and gradient (the zero op adds
`w_none * 0`, its weight still enters through the softmax), with less memory traffic. Labels, alphas,
`export` and `export_probs` stay NNI's.
"""

from __future__ import annotations

from typing import Any

import torch
from nni.nas.nn.pytorch.cell import preprocess_cell_inputs

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.nni_compat import DifferentiableMixedCell, arch_alphas, arch_softmax


class WeightedSumMixedCell(DifferentiableMixedCell):
    def forward(self, *inputs: Any) -> Any:
        processed = preprocess_cell_inputs(self.num_predecessors, *inputs)
        states: list[torch.Tensor] = self.preprocessor(processed)
        for i, ops in enumerate(self.ops, start=self.num_predecessors):
            node: Any = 0
            for j in range(i):
                weights = arch_softmax(self, arch_alphas(self)[f"{self.label}/{i}_{j}"])
                for k, op in enumerate(ops[j].values()):
                    node = node + weights[k] * op(states[j])
            states.append(node)
        return self.postprocessor(torch.cat(states[self.num_predecessors:], self.concat_dim), processed)


def differentiable_cell_hooks(strategy: Any, supernet: str, partial_channels: int = 1) -> list:
    """Mutation hooks for `ModelSpace.extra_oneshot_hooks`: our cell (`supernet`: fast | lean | nni, or
    PC-DARTS' with `partial_channels` > 1) for DARTS / GumbelDARTS only (other one-shot strategies such as
    ENAS or RandomOneShot keep NNI's own cell handling, which has no partial channels)."""
    from nni.nas.strategy import DARTS, Proxyless

    from nni_emotionnas.spaces.fast_cell import FastMixedCell
    from nni_emotionnas.spaces.pc_darts import partial_channel_hook

    # NNI's DARTS and GumbelDARTS and the project's subclasses of them (search.darts_strategies); not Proxyless
    differentiable = isinstance(strategy, DARTS) and not isinstance(strategy, Proxyless)
    if partial_channels > 1:
        if not differentiable:
            raise ConfigError(f"partial_channels: PC-DARTS needs the DARTS or GumbelDARTS strategy, not "
                              f"{type(strategy).__name__}")
        return [partial_channel_hook(partial_channels)]
    cells = {"fast": FastMixedCell, "lean": WeightedSumMixedCell}
    if differentiable and supernet in cells:
        return [cells[supernet].mutate]
    return []
