"""Builders for the strategy table (`nni_emotionnas.search.strategies`): NNI's other one-shot strategies and the
multi-trial ones.

A multi-trial strategy file holds the NNI strategy's arguments plus how its NNI experiment runs
(`MULTI_TRIAL_KEYS`: web UI port, trial budget, concurrency, training service); its builder returns a
`MultiTrialPlan` that `nni_support.multitrial` runs through the NNI manager. Signatures merge both sets of
keys so a typo in a strategy file is reported with the list of known keys.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

# Experiment keys a multi-trial strategy file may set next to the strategy's own arguments.
MULTI_TRIAL_KEYS = ("port", "max_trials", "concurrency", "max_duration", "training_service")


@dataclass
class MultiTrialPlan:
    """An NNI multi-trial strategy and the experiment it runs in (port = web UI and NNI manager REST)."""

    name: str
    strategy: Any
    port: int = 8080
    max_trials: int = 10
    concurrency: int = 1
    max_duration: Optional[str] = None
    training_service: dict[str, Any] = field(default_factory=lambda: {"platform": "local"})


# Strategy classes of this package, by the module defining them; any other name is NNI's (`nni.nas.strategy`).
OWN_CLASSES = {
    "ArchitectureTPE": "nni_emotionnas.search.tpe",
    "DARTS": "nni_emotionnas.search.darts_strategies",
    "GumbelDARTS": "nni_emotionnas.search.darts_strategies",
    "CatalogStrategy": "nni_emotionnas.search.catalog_strategy",
}


def strategy_class(name: str) -> type[Any]:
    """Imported on first use, so reading a strategy file does not load NNI's strategies."""
    return getattr(importlib.import_module(OWN_CLASSES.get(name, "nni.nas.strategy")), name)


# NNI 3.0 implements these with tianshou 0.4.x (on gym); without it their constructors fail.
NEEDS_TIANSHOU = {"PolicyBasedRL", "ENAS"}


def _require_tianshou(name: str) -> None:
    from nni_emotionnas.errors import BackendError

    if name not in NEEDS_TIANSHOU:
        return
    try:
        importlib.import_module("tianshou")
    except ImportError as exc:
        raise BackendError(
            f"strategy {name}: NNI 3.0 implements it with tianshou (0.4.x, on gym), which is not installed; "
            "install it (`pip install tianshou==0.4.11`) or use another strategy file"
        ) from exc


def keyword_arguments(cls: type) -> list[inspect.Parameter]:
    """Keyword arguments `cls(...)` accepts, following `**kwargs` up the base classes' `__init__`s.

    NNI's one-shot strategies pass `**kwargs` to their parents (GumbelDARTS -> DARTS), so a file may set
    any of those; the last `**kwargs` (deprecated options of the base strategy) are left out.
    """
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in found:
                found[p.name] = p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return [p for name, p in found.items() if name not in ("model_space", "engine", "mutation_hooks")]


def _signature_provider(cls_name: str, multi_trial: bool) -> Callable[[], inspect.Signature]:
    def provide() -> inspect.Signature:
        params = keyword_arguments(strategy_class(cls_name))
        if multi_trial:
            params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in MULTI_TRIAL_KEYS]
        return inspect.Signature(params)

    return provide


def _one_shot(cls_name: str) -> Callable[..., Any]:
    def build(**args: Any) -> Any:
        _require_tianshou(cls_name)
        return strategy_class(cls_name)(**args)

    return build


def _multi_trial(name: str, cls_name: str) -> Callable[..., MultiTrialPlan]:
    def build(**args: Any) -> MultiTrialPlan:
        _require_tianshou(cls_name)
        experiment = {k: args.pop(k) for k in list(args) if k in MULTI_TRIAL_KEYS}
        if experiment.get("training_service") is None:
            experiment.pop("training_service", None)
        return MultiTrialPlan(name=name, strategy=strategy_class(cls_name)(**args), **experiment)

    return build


ONE_SHOT = {"GumbelDARTS": "GumbelDARTS", "ENAS": "ENAS", "RandomOneShot": "RandomOneShot"}
# Strategy-file name -> NNI class; TPE is NNI's TPE made to accept Cell input choices (see multitrial).
MULTI_TRIAL = {
    "Random": "Random",
    "GridSearch": "GridSearch",
    "RegularizedEvolution": "RegularizedEvolution",
    "TPE": "ArchitectureTPE",
    "PolicyBasedRL": "PolicyBasedRL",
}
# One-shot strategies that learn the architecture on the evaluator's val dataloader (DARTS-style split).
SPLITS_TRAINING_DATA = {"GumbelDARTS", "ENAS"}



def register_all(register: Callable[[str, Callable[..., Any], Callable[[], inspect.Signature], bool], None]) -> None:
    """Adds the builders above through `nni_emotionnas.search.strategies.register_strategy`."""
    for name, cls in ONE_SHOT.items():
        register(name, _one_shot(cls), _signature_provider(cls, False), name in SPLITS_TRAINING_DATA)
    for name, cls in MULTI_TRIAL.items():
        register(name, _multi_trial(name, cls), _signature_provider(cls, True), False)
