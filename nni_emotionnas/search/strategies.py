"""Strategy files (`strategies/*.yml`: `{name: DARTS, args: {...}}`) -> NNI strategy objects.

A name -> builder table, so further strategies are one entry each. Arguments are checked against the
builder's signature, so a typo names the offending key instead of failing deep inside NNI.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Union

from nni_emotionnas.config.parse import load_yaml
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.search import strategy_builders as nni_strategies


def _darts_signature() -> inspect.Signature:
    """DARTS' own keyword arguments; NNI's trailing `**kwargs` only feed deprecated base-class options."""
    from nni.nas.strategy import DARTS

    params = inspect.signature(DARTS.__init__).parameters.values()
    return inspect.Signature([p for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD])


# name -> (builder, signature provider); the provider avoids importing NNI until a strategy file is checked.
STRATEGIES: dict[str, tuple[Callable[..., Any], Callable[[], inspect.Signature]]] = {
    "DARTS": (lambda **args: nni_strategies.strategy_class("DARTS")(**args), _darts_signature),
    # the paper's deep-stream procedure: train each given cell briefly, keep the lowest validation loss
    "catalog": (lambda **args: nni_strategies.strategy_class("CatalogStrategy")(**args),
                lambda: inspect.signature(nni_strategies.strategy_class("CatalogStrategy").__init__)),
}

# Strategies whose search consumes the evaluator's val dataloader as architecture data (DARTS-style split).
SPLITS_TRAINING_DATA = {"DARTS"}


def register_strategy(
    name: str, builder: Callable[..., Any], signature: Callable[[], inspect.Signature], splits_training_data: bool
) -> None:
    """Adds a strategy to the table (used by modules offering more strategies)."""
    STRATEGIES[name] = (builder, signature)
    if splits_training_data:
        SPLITS_TRAINING_DATA.add(name)


def check_args(name: str, args: dict[str, Any], signature: inspect.Signature, where: str) -> None:
    params = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = sorted(n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD)
    for key in args:
        if key not in params and not accepts_any:
            raise ConfigError(f"{where}.args.{key}: unknown argument of {name} (known: {', '.join(known)})")


def strategy_spec(data: Any, where: str) -> tuple[str, dict[str, Any]]:
    """Validated (name, args) of a strategy mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with 'name' and 'args', got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "args"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: args, name)")
    name = data.get("name")
    if name is None:
        raise ConfigError(f"{where}.name: required key is missing")
    if name not in STRATEGIES:
        raise ConfigError(f"{where}.name: unknown strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})")
    args = data.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{where}.args: expected a mapping, got {type(args).__name__}")
    check_args(name, args, STRATEGIES[name][1](), where)
    return name, dict(args)


def load_strategy_spec(path: Union[str, Path]) -> tuple[str, dict[str, Any]]:
    path = Path(path)
    return strategy_spec(load_yaml(path), path.name)


def build_strategy(name: str, args: dict[str, Any]) -> Any:
    try:
        return STRATEGIES[name][0](**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"strategy {name}: {exc}") from exc


# NNI's other one-shot strategies and the multi-trial ones (run through the NNI manager): nni_support.
nni_strategies.register_all(register_strategy)
