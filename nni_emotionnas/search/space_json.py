"""Search-space JSON for NNI's HPO tuners, derived from a model space's own mutables (never hand-kept).

`Cell` input choices are `CategoricalMultiple`s (NNI has no legacy form for them): one chosen input becomes
a plain `choice` over the candidates and is wrapped back into a list when a sample freezes the space.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Optional

from nni.mutable import Categorical, CategoricalMultiple
from nni.nas.nn.pytorch import ModelSpace

from nni_emotionnas.config.parse import load_yaml, parse
from nni_emotionnas.config.resources import default_file
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.features.store import atomic_write_bytes
from nni_emotionnas.spaces import space_module

# Hyperparameters a trial accepts next to the architecture (keys of TrainConfig), in HPO JSON form.
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "lr": {"_type": "loguniform", "_value": [1e-4, 1e-2]},
    "batch_size": {"_type": "choice", "_value": [16, 32, 64]},
}


def load_space_config(branch: str, path: Optional[Path] = None) -> Any:
    """The branch's space config from `path`, or from the packaged default file."""
    module = space_module(branch)
    path = Path(path) if path is not None else default_file("search_spaces", module.DEFAULT_CONFIG_FILE)
    return parse(module.CONFIG_CLASS, load_yaml(path), path.name)


def build_space(branch: str, space_config: Any, num_classes: int) -> ModelSpace:
    return space_module(branch).build_space(space_config, num_classes)


def legacy_choice(label: str, mutable: Any) -> dict[str, Any]:
    """`{"_type": "choice", "_value": [...]}` for one simplified mutable of a model space."""
    if isinstance(mutable, CategoricalMultiple):
        if mutable.n_chosen == 1:
            return {"_type": "choice", "_value": list(mutable.values)}
        if mutable.n_chosen is None:
            raise ConfigError(f"{label}: a choice of any number of inputs has no HPO search-space form")
        combinations = itertools.combinations(mutable.values, mutable.n_chosen)
        return {"_type": "choice", "_value": [list(c) for c in combinations]}
    if isinstance(mutable, Categorical):
        return mutable.as_legacy_dict()
    raise ConfigError(f"{label}: {type(mutable).__name__} has no HPO search-space form")


def legacy_space(space: ModelSpace) -> dict[str, dict[str, Any]]:
    """The whole architecture space as NNI's HPO search-space dict, label by label."""
    return {label: legacy_choice(label, mutable) for label, mutable in space.simplify().items()}


def split_parameters(space: ModelSpace, parameters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(architecture sample ready for `space.freeze`, remaining hyperparameters) from a tuner's parameters.

    Missing architecture labels are an error naming the label: a search space from another space config.
    """
    mutables = space.simplify()
    missing = sorted(set(mutables) - set(parameters))
    if missing:
        raise ConfigError(f"trial parameters: architecture label {missing[0]!r} missing (search space of another "
                          "space config? regenerate it with `emotionnas space-json`)")
    architecture = {}
    for label, mutable in mutables.items():
        value = parameters[label]
        if isinstance(mutable, CategoricalMultiple) and not isinstance(value, list):
            value = [value]
        architecture[label] = value
    return architecture, {k: v for k, v in parameters.items() if k not in mutables}


def write_space_json(
    branch: str, out: Path, space_file: Optional[Path] = None, hyperparameters: bool = False, force: bool = False
) -> dict[str, Any]:
    """Writes the HPO search-space JSON of a branch's model space (plus `HYPERPARAMETERS` when asked).

    An existing file holding another space is kept unless `force`: it may be the one an nnictl experiment
    was written for, and a silently replaced space fails trials later with an unrelated "unknown key".
    """
    space = build_space(branch, load_space_config(branch, space_file), num_classes=2)
    search_space = legacy_space(space)
    if hyperparameters:
        search_space.update(HYPERPARAMETERS)
    out = Path(out)
    text = json.dumps(search_space, indent=2) + "\n"
    if out.is_file() and not force and out.read_text() != text:
        source = space_file or f"the packaged {branch} space"
        raise ConfigError(f"{out}: exists and holds another search space than {source}; pass --force to replace "
                          "it, or --out another file")
    atomic_write_bytes(out, lambda handle: handle.write(text.encode()))
    return search_space
