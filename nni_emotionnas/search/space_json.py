"""Search-space JSON for NNI's HPO tuners, derived from a model space's own mutables (never hand-kept).

This is also the readable form of a sample that trial parameters and the web UI show. Input choices are
`CategoricalMultiple`s over indices (NNI has no legacy form for them, and the web UI cannot show them): one
chosen input becomes a plain `choice` over the candidates' names (`n1/operand_a: h1`, from the space module's
`input_names`) and is mapped back to `[index]` when a sample freezes the space. The space's constraints
(`nni.mutable.Constraint`) are not choices: they refuse samples (`InvalidSample`).
"""

from __future__ import annotations

import inspect
import itertools
import json
from pathlib import Path
from typing import Any, Optional

from nni.mutable import Categorical, CategoricalMultiple, MutableAnnotation
from nni.nas.nn.pytorch import ModelSpace

from nni_emotionnas.config.parse import load_yaml
from nni_emotionnas.config.resources import default_file
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.features.store import atomic_write_bytes
from nni_emotionnas.spaces import parse_space_config, space_module

# Hyperparameters a trial accepts next to the architecture (keys of TrainConfig), in HPO JSON form.
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "lr": {"_type": "loguniform", "_value": [1e-4, 1e-2]},
    "batch_size": {"_type": "choice", "_value": [16, 32, 64]},
}


def load_space_config(stream: str, path: Optional[Path] = None) -> Any:
    """The stream's space config from `path`, or from the packaged default file."""
    module = space_module(stream)
    path = Path(path) if path is not None else default_file("search_spaces", module.DEFAULT_CONFIG_FILE)
    return parse_space_config(module, load_yaml(path), path.name)


def build_space(stream: str, space_config: Any, num_classes: int) -> ModelSpace:
    return space_module(stream).build_space(space_config, num_classes)


class InvalidSample(ConfigError):
    """A sample every choice of which is allowed but that breaks a rule of the space (e.g. a blind recurrent cell)."""


def choices(space: ModelSpace) -> dict[str, Any]:
    """The space's choices by label (its constraints, which NNI lists among the mutables too, left out)."""
    return {label: m for label, m in space.simplify().items() if not isinstance(m, MutableAnnotation)}


def value_names(space: ModelSpace) -> dict[str, list[str]]:
    """label -> names of an input choice's candidates, from the space module's `input_names` (if it has one)."""
    names_of = getattr(inspect.getmodule(type(space)), "input_names", None)
    out = {}
    for label, mutable in choices(space).items():
        names = names_of(label, len(mutable.values)) if names_of and isinstance(mutable, CategoricalMultiple) else None
        if names is not None:
            out[label] = list(names)
    return out


def legacy_choice(label: str, mutable: Any, names: Optional[list[str]] = None) -> dict[str, Any]:
    """`{"_type": "choice", "_value": [...]}` for one simplified mutable of a model space."""
    if isinstance(mutable, CategoricalMultiple):
        values = names if names is not None else list(mutable.values)
        if mutable.n_chosen == 1:
            return {"_type": "choice", "_value": values}
        if mutable.n_chosen is None:
            raise ConfigError(f"{label}: a choice of any number of inputs has no HPO search-space form")
        combinations = itertools.combinations(values, mutable.n_chosen)
        return {"_type": "choice", "_value": [list(c) for c in combinations]}
    if isinstance(mutable, Categorical):
        return mutable.as_legacy_dict()
    raise ConfigError(f"{label}: {type(mutable).__name__} has no HPO search-space form")


def legacy_space(space: ModelSpace) -> dict[str, dict[str, Any]]:
    """The whole architecture space as NNI's HPO search-space dict, label by label."""
    names = value_names(space)
    return {label: legacy_choice(label, mutable, names.get(label)) for label, mutable in choices(space).items()}


def readable_sample(space: ModelSpace, architecture: dict[str, Any]) -> dict[str, Any]:
    """An NNI sample in the form of the search-space JSON: input choices by candidate name, one value each."""
    return encode_sample(architecture, value_names(space))


def encode_sample(architecture: dict[str, Any], names: dict[str, list[str]]) -> dict[str, Any]:
    readable = {}
    for label, value in architecture.items():
        if isinstance(value, (list, tuple)):
            value = [names[label][int(v)] if label in names else v for v in value]
            value = value[0] if len(value) == 1 else value
        readable[label] = value
    return readable


def decode_sample(parameters: dict[str, Any], names: dict[str, list[str]], inputs: list[str]) -> dict[str, Any]:
    """The NNI sample of readable `parameters`: `inputs` (input choices' labels) get lists of indices back."""
    architecture = dict(parameters)
    for label in inputs:
        value = parameters[label]
        value = value if isinstance(value, list) else [value]
        if label in names:  # candidate names (current space JSON) or indices (older files)
            value = [names[label].index(v) if v in names[label] else v for v in value]
        architecture[label] = value
    return architecture


def input_labels(space: ModelSpace) -> list[str]:
    return [label for label, m in choices(space).items() if isinstance(m, CategoricalMultiple)]


def split_parameters(space: ModelSpace, parameters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(architecture sample ready for `space.freeze`, remaining hyperparameters) from a tuner's parameters.

    Missing architecture labels are an error naming the label: a search space from another space config. A
    sample the space's constraints refuse is an `InvalidSample` saying why.
    """
    mutables = choices(space)
    missing = sorted(set(mutables) - set(parameters))
    if missing:
        raise ConfigError(f"trial parameters: architecture label {missing[0]!r} missing (search space of another "
                          "space config? regenerate it with `emotionnas space-json`)")
    architecture = decode_sample({k: parameters[k] for k in mutables}, value_names(space), input_labels(space))
    for label, mutable in space.simplify().items():
        if label not in mutables and (error := mutable.check_contains(architecture)) is not None:
            raise InvalidSample(f"trial parameters: sample refused by the space's rule {label!r}: {error}")
    return architecture, {k: v for k, v in parameters.items() if k not in mutables}


def write_space_json(
    stream: str, out: Path, space_file: Optional[Path] = None, hyperparameters: bool = False, force: bool = False
) -> dict[str, Any]:
    """Writes the HPO search-space JSON of a stream's model space (plus `HYPERPARAMETERS` when asked).

    An existing file holding another space is kept unless `force`: it may be the one an nnictl experiment
    was written for, and a silently replaced space fails trials later with an unrelated "unknown key".
    """
    space = build_space(stream, load_space_config(stream, space_file), num_classes=2)
    search_space = legacy_space(space)
    if hyperparameters:
        search_space.update(HYPERPARAMETERS)
    out = Path(out)
    text = json.dumps(search_space, indent=2) + "\n"
    if out.is_file() and existing_space(out) != text and not force:  # a file not a space is refused even so
        source = space_file or f"the packaged {stream} space"
        raise ConfigError(f"{out}: exists and holds another search space than {source}; pass --force to replace "
                          "it, or --out another file")
    atomic_write_bytes(out, lambda handle: handle.write(text.encode()))
    return search_space


def existing_space(path: Path) -> str:
    """The text of a search-space JSON at `path`; any other file (binary, not a JSON object) is refused even with
    --force, which replaces search spaces only: it is a file of the user's that `--out` named by mistake."""
    try:
        text = path.read_bytes().decode("utf-8")
        if isinstance(json.loads(text), dict):
            return text
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        pass
    raise ConfigError(f"{path}: exists and is not a search-space JSON; it is left as it is: choose another --out")
