"""The project's DARTS / GumbelDARTS (what strategy files build) search exactly as NNI's classes do, while the
architecture step's backward skips the weights' gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.strategy import DARTS as NniDARTS
from nni.nas.strategy import GumbelDARTS as NniGumbelDARTS
from torch.utils.data import TensorDataset

from nni_emotionnas.search import darts_strategies as ours
from nni_emotionnas.search.strategies import build_strategy
from nni_emotionnas.spaces import spectrogram as S
from nni_emotionnas.training.evaluator import TrainConfig, build_evaluator

CONFIG = S.SpectrogramSpaceConfig(channels=2, layers=3, nodes=2, stem=S.StemConfig(multiplier=2))
BATCHES = 3


def data(seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(8 * BATCHES, 1, 12, 12, generator=g), torch.arange(8 * BATCHES) % 4)


def search(strategy: NniDARTS, workdir: Path) -> tuple[dict[str, torch.Tensor], int, list[bool]]:
    """(supernet state after one epoch, how many times a conv weight's gradient was computed, requires_grad
    of every weight after the run)."""
    torch.manual_seed(0)
    evaluator = build_evaluator(data(1), data(2), 4, TrainConfig(epochs=1, batch_size=8), shuffle_val=True)
    space = S.build_space(CONFIG, 4)
    config = NasExperimentConfig.default(space, evaluator, strategy)
    config.experiment_working_directory = str(workdir)
    experiment = NasExperiment(space, evaluator, strategy, config)
    weight_grads = 0

    def count(grad: torch.Tensor) -> None:
        nonlocal weight_grads
        weight_grads += 1

    original_mutate = strategy.mutate_model

    def mutate_and_hook(model: torch.nn.Module) -> torch.nn.Module:
        mutated = original_mutate(model)
        mutated.stem[0].weight.register_hook(count)
        return mutated

    strategy.mutate_model = mutate_and_hook
    experiment.run()
    experiment.stop()
    state = {k: v.detach().clone() for k, v in strategy.supernet.state_dict().items()}
    return state, weight_grads, [p.requires_grad for p in strategy.supernet.parameters()]


@pytest.mark.parametrize(("nni_cls", "our_cls"), [(NniDARTS, ours.DARTS), (NniGumbelDARTS, ours.GumbelDARTS)])
def test_architecture_step_skips_weight_gradients_and_searches_the_same(
    nni_cls: type, our_cls: type, tmp_path: Path
) -> None:
    args = {"arc_learning_rate": 0.05, "gradient_clip_val": 5.0}
    nni_state, nni_grads, _ = search(nni_cls(**args), tmp_path / "nni")
    our_state, our_grads, requires_grad = search(our_cls(**args), tmp_path / "ours")
    assert nni_grads == 2 * BATCHES  # NNI: the architecture and the weight step's backward
    assert our_grads == BATCHES  # ours: the weight step's only
    assert all(requires_grad)  # nothing left frozen after the search
    assert our_state.keys() == nni_state.keys()
    alphas = [k for k in nni_state if "_arch_alpha" in k]
    assert alphas
    for name, value in nni_state.items():  # alphas, weights and batch-norm statistics
        torch.testing.assert_close(our_state[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_strategy_files_build_the_project_classes() -> None:
    assert type(build_strategy("DARTS", {})) is ours.DARTS
    assert type(build_strategy("GumbelDARTS", {"temperature": {"init": 1.0, "min": 0.5}})) is ours.GumbelDARTS


def test_weights_a_user_froze_stay_frozen() -> None:
    alpha, weight, frozen = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    frozen.requires_grad_(False)
    optimizer = ours.ArchitectureAdam(torch.optim.Adam([alpha], lr=0.1, betas=(0.5, 0.999)), [weight, frozen])
    assert optimizer.defaults["betas"] == (0.5, 0.999)
    optimizer.zero_grad()
    assert not weight.requires_grad and not frozen.requires_grad
    (alpha.sum() * 2).backward()
    optimizer.step()
    assert weight.requires_grad and not frozen.requires_grad
    assert alpha.detach().tolist() == pytest.approx([-0.1, -0.1])
