"""Every NNI internal the product relies on exists in the installed NNI, and another NNI is refused up front."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

from nni_emotionnas import nni_compat
from nni_emotionnas.errors import BackendError


def test_other_nni_versions_are_refused_with_the_supported_one_named() -> None:
    nni_compat.check_nni_version("3.0")
    with pytest.raises(BackendError, match=r"supports NNI 3\.0 only \(found NNI 3\.1\).*pip install nni==3\.0"):
        nni_compat.check_nni_version("3.1")


def test_public_names_resolve() -> None:
    for name in nni_compat.__all__:
        assert getattr(nni_compat, name) is not None, name


def test_differentiable_cell_internals() -> None:
    """A real DARTS supernet cell exposes the alphas and normalisation the compat layer reads."""
    from nni.nas.strategy import DARTS

    from nni_emotionnas.spaces import spectrogram as S

    supernet = DARTS().mutate_model(S.build_space(S.SpectrogramSpaceConfig(channels=2, layers=1, nodes=1), 3))
    cells = [m for m in supernet.modules() if isinstance(m, nni_compat.DifferentiableMixedCell)]
    assert cells, "the spectrogram space yields NNI differentiable cells under DARTS"
    alphas = nni_compat.arch_alphas(cells[0])
    alpha = next(iter(alphas.values()))
    probs = nni_compat.arch_softmax(cells[0], alpha)
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))


def test_mixture_internals() -> None:
    """DARTS' LayerChoice / InputChoice mixtures expose their softmaxed weights; GumbelDARTS' are left alone."""
    from nni.nas.strategy import DARTS, GumbelDARTS

    from nni_emotionnas.spaces import deep as R

    config = R.RecurrentSpaceConfig(input_dim=3, hidden_size=3, nodes=1)
    darts = DARTS().mutate_model(R.build_oneshot_space(config, 2))
    probs = nni_compat.mixture_weights(darts.recurrent[0].nodes[0].op)
    assert probs.shape == (len(config.ops),)
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    gumbel = GumbelDARTS().mutate_model(R.build_oneshot_space(config, 2))
    assert nni_compat.mixture_weights(gumbel.recurrent[0].nodes[0].op) is None


def test_trial_internals_outside_a_trial() -> None:
    """In a fresh interpreter (an in-process search earlier in this session leaves NNI's record set)."""
    code = "from nni_emotionnas import nni_compat; print(nni_compat.current_trial_record())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "None"
    assert nni_compat.trial_channel() is not None


def test_strategy_internals_on_nni_tpe() -> None:
    from nni.nas.strategy.hpo import TPE

    strategy = TPE()
    with nni_compat.strategy_lock(strategy):
        first = nni_compat.next_model_index(strategy)
        assert nni_compat.claim_model_index(strategy, object()) == first
        assert nni_compat.next_model_index(strategy) == first + 1
        nni_compat.skip_model_index(strategy)
        assert nni_compat.next_model_index(strategy) == first + 2


def test_readable_nas_experiment_overrides_nni_hooks() -> None:
    """NNI's `NasExperiment` still sends its space from `_send_space_to_nni_manager` and builds what trials get
    in `executable_model_factory`: the two methods `ReadableNasExperiment` replaces."""
    from nni.nas.experiment import NasExperiment

    for name in ("_send_space_to_nni_manager", "executable_model_factory"):
        assert name in vars(NasExperiment) and name in vars(nni_compat.ReadableNasExperiment), name


def test_serializable_object_rebuilds_a_traced_symbol() -> None:
    """What `SimplifiedModelSpace._load` (and `ReferencedModelSpace._load`) rebuild a model space with."""
    rebuilt = nni_compat.SerializableObject(dict, [], {"a": 1})
    assert rebuilt.trace_symbol is dict and rebuilt.trace_kwargs == {"a": 1} and rebuilt.get() == {"a": 1}


def test_rest_timeout_only_grows() -> None:
    import nni.experiment.rest as rest

    before = rest.timeout
    nni_compat.raise_rest_timeout(before + 5)
    assert rest.timeout == before + 5
    nni_compat.raise_rest_timeout(1)
    assert rest.timeout == before + 5
    rest.timeout = before


def test_run_override_is_nni_strategy_entry() -> None:
    """NNI's `Strategy.run` reaches the subclass' `search_loop` through the private `_run`."""
    from nni.nas.strategy.base import Strategy

    assert "_run" in vars(Strategy) or hasattr(Strategy, "_run")

    class Loop(nni_compat.RunOverride, Strategy):
        def search_loop(self) -> None:
            self.ran = True

    loop = Loop()
    loop._run()
    assert loop.ran


def test_unknown_experiment_has_no_registered_folder() -> None:
    assert nni_compat.registered_log_dir("no-such-experiment-id") is None


def test_cell_internals_the_fast_cell_and_the_genotype_reader_rely_on() -> None:
    """`preprocess_cell_inputs` takes a cell's arguments as NNI's `Cell.forward` does, and a frozen `Cell` holds a
    `ChosenInputs` per input choice (what `conftest.fixed_genotype` reads)."""
    from nni_emotionnas.spaces import spectrogram as S

    a, b = torch.zeros(1), torch.ones(1)
    assert nni_compat.preprocess_cell_inputs(2, [a, b]) == nni_compat.preprocess_cell_inputs(2, a, b) == [a, b]
    config = S.SpectrogramSpaceConfig(channels=2, layers=1, nodes=1)
    space = S.build_space(config, 3)
    frozen = space.freeze({label: "max_pool_3x3" if "/op_" in label else [1] for label in space.simplify()})
    chosen = frozen.cells[0].inputs[0][0]
    assert isinstance(chosen, nni_compat.ChosenInputs) and chosen.chosen == [1]


def test_darts_architecture_step_calls_zero_grad_then_backward_then_step() -> None:
    """The order `search.darts_strategies.ArchitectureAdam` relies on, in NNI's DARTS training step, and the class
    swap `reclass_darts_module` makes on the modules NNI's DARTS and GumbelDARTS build."""
    import inspect

    from nni.nas.strategy import DARTS, GumbelDARTS

    from nni_emotionnas.search.darts_strategies import DartsModule, GumbelDartsModule
    from nni_emotionnas.spaces import deep as R

    source = inspect.getsource(nni_compat.DartsLightningModule.training_step)
    calls = [source.index(call) for call in ("arc_optim.zero_grad()", "self.manual_backward(arc_step_loss)",
                                              "arc_optim.step()")]
    assert calls == sorted(calls) and source.count("arc_optim.zero_grad()") == source.count("arc_optim.step()") == 1
    assert "training_step" not in vars(nni_compat.GumbelDartsLightningModule)  # GumbelDARTS runs the same step
    config = R.RecurrentSpaceConfig(input_dim=3, hidden_size=3, nodes=1)
    for strategy, base, expected in ((DARTS(), nni_compat.DartsLightningModule, DartsModule),
                                     (GumbelDARTS(), nni_compat.GumbelDartsLightningModule, GumbelDartsModule)):
        module = strategy.configure_oneshot_module(R.build_oneshot_space(config, 2))  # as NNI builds it
        assert nni_compat.reclass_darts_module(module, DartsModule, GumbelDartsModule) is module
        assert type(module) is expected and isinstance(module, base)


def test_builtin_tuner_registry_names_and_builds_evolution() -> None:
    names = nni_compat.builtin_tuner_names()
    assert {"TPE", "Evolution", "Random", "GridSearch"} <= set(names)
    module, cls_name, preset, validator = nni_compat.builtin_tuner("Evolution")
    cls = getattr(importlib.import_module(module), cls_name)
    assert cls.__name__ == "EvolutionTuner" and isinstance(preset, dict)
    validator.validate_class_args(optimize_mode="maximize", population_size=4)
