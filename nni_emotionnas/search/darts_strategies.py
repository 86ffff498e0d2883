"""NNI's DARTS and GumbelDARTS with an architecture step that computes the alphas' gradients only.

First-order DARTS alternates an architecture step (forward + backward on an architecture batch, the alphas'
optimiser steps) and a weight step. The naive step, NNI's included, also computes every weight's gradient in
the architecture step's backward, and the weight step then zeroes it unused. NNI calls the architecture
optimiser's `zero_grad()` right before that forward and its `step()` right after that backward (relied on
through `nni_compat.reclass_darts_module`); the optimiser here takes the network's weights out of autograd in
between, so the backward skips the convs' weight gradients (about half of a spectrogram supernet's backward).
Alphas and weights evolve exactly as with NNI's classes: only discarded work is skipped
(`tests/test_darts_strategies.py`).
"""

from __future__ import annotations

from typing import Any

import torch
from nni.nas.strategy import DARTS as NniDARTS
from nni.nas.strategy import GumbelDARTS as NniGumbelDARTS
from torch import nn

from nni_emotionnas.nni_compat import DartsLightningModule, GumbelDartsLightningModule, reclass_darts_module


class ArchitectureAdam(torch.optim.Adam):
    """The alphas' Adam; from `zero_grad()` to the next `step()` the network's weights do not require grad."""

    def __init__(self, nni_optimizer: torch.optim.Adam, weights: list[nn.Parameter]) -> None:
        super().__init__(nni_optimizer.param_groups, **nni_optimizer.defaults)
        self._weights = weights
        # mutated in place, never rebound: Lightning's LightningOptimizer wraps this with a shallow copy of
        # its __dict__ and calls zero_grad() on the copy but step() on the original
        self._frozen: list[nn.Parameter] = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        self._thaw()
        self._frozen.extend(w for w in self._weights if w.requires_grad)  # weights a user froze stay frozen
        for weight in self._frozen:
            weight.requires_grad_(False)

    def step(self, closure: Any = None) -> Any:  # as Adam's: None, or a closure whose loss it returns
        self._thaw()
        return super().step(closure)

    def _thaw(self) -> None:
        for weight in self._frozen:
            weight.requires_grad_(True)
        self._frozen.clear()


class _AlphasOnlyArchitectureStep:
    """Mixin for NNI's DARTS Lightning modules: their architecture optimiser becomes `ArchitectureAdam`."""

    def configure_architecture_optimizers(self) -> torch.optim.Optimizer:
        nni_optimizer = super().configure_architecture_optimizers()  # type: ignore[misc]
        alphas = {id(p) for group in nni_optimizer.param_groups for p in group["params"]}
        weights = [p for p in self.parameters() if id(p) not in alphas]  # type: ignore[attr-defined]
        return ArchitectureAdam(nni_optimizer, weights)


class DartsModule(_AlphasOnlyArchitectureStep, DartsLightningModule):
    pass


class GumbelDartsModule(_AlphasOnlyArchitectureStep, GumbelDartsLightningModule):
    pass


class DARTS(NniDARTS):
    __doc__ = f"NNI's DARTS; the architecture step computes the alphas' gradients only.\n{NniDARTS.__doc__}"

    def configure_oneshot_module(self, training_module: Any) -> Any:
        return reclass_darts_module(super().configure_oneshot_module(training_module), DartsModule, GumbelDartsModule)


class GumbelDARTS(NniGumbelDARTS):
    __doc__ = f"NNI's GumbelDARTS; the architecture step computes the alphas' gradients only.\n{NniGumbelDARTS.__doc__}"

    def configure_oneshot_module(self, training_module: Any) -> Any:
        return reclass_darts_module(super().configure_oneshot_module(training_module), DartsModule, GumbelDartsModule)
