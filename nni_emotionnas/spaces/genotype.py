"""genotype.json: what a search found, enough to rebuild the fixed network without the search.

Holds the NNI architecture dict (the sample `ModelSpace.freeze` takes), a readable genotype and the
final architecture weights per edge (both from the space module, see `nni_emotionnas.spaces`), the
space config, the number of classes, fold, seed, strategy and search metrics.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Optional

from nni.mutable import MutableAnnotation
from torch import nn

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.features.store import atomic_write_bytes
from nni_emotionnas.spaces import SearchSpace, parse_space_config, space_module

FORMAT = "nni-emotionnas/genotype"
VERSION = 1
REQUIRED_KEYS = ("stream", "architecture", "space_config", "num_classes")


def make_record(
    *,
    stream: str,
    architecture: dict[str, Any],
    space_config: Any,
    num_classes: int,
    edge_weights: Optional[dict[str, dict[str, float]]] = None,
    classes: Optional[list[str]] = None,
    fold: Optional[str] = None,
    seed: Optional[int] = None,
    strategy: Optional[dict[str, Any]] = None,
    search_metrics: Optional[dict[str, Any]] = None,
    nni_export: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The JSON record; the readable genotype comes from the stream's space module."""
    module = space_module(stream)
    return {
        "format": FORMAT,
        "version": VERSION,
        "stream": stream,
        "architecture": architecture,
        "genotype": module.readable_genotype(architecture, edge_weights or {}),
        "edge_weights": edge_weights or {},
        "space_config": space_config if isinstance(space_config, dict) else dataclasses.asdict(space_config),
        "num_classes": num_classes,
        "classes": classes,
        "fold": fold,
        "seed": seed,
        "strategy": strategy,
        "search_metrics": search_metrics or {},
        "nni_export": nni_export,
    }


def write_genotype(record: dict[str, Any], path: Path) -> Path:
    """Writes atomically (temp file + rename) so a crash never leaves half a genotype."""
    path = Path(path)
    text = json.dumps(record, indent=2) + "\n"
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))
    return path


def read_genotype(path: Path) -> dict[str, Any]:
    """Loads and checks a genotype file; errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: genotype file not found")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    if "branch" in record and "stream" not in record:  # the key's name before "stream"
        record["stream"] = record.pop("branch")
    for key in REQUIRED_KEYS:
        if key not in record:
            raise ConfigError(f"{path}: {key}: required key is missing")
    if not isinstance(record["architecture"], dict):
        raise ConfigError(f"{path}: architecture: expected an object of NNI choice labels")
    record["architecture"] = space_module(record["stream"]).upgrade_architecture(record["architecture"])
    return record


def space_config_of(record: dict[str, Any], where: str = "genotype") -> Any:
    return parse_space_config(space_module(record["stream"]), record["space_config"], f"{where}: space_config", True)


def freeze(space_factory: Callable[[], nn.Module], record: dict[str, Any], where: str = "genotype") -> nn.Module:
    """The fixed network: the space from `space_factory`, frozen with the record's architecture dict.

    Labels missing from or unknown to the space, and values outside a choice, are `ConfigError`s.
    """
    space = space_factory()
    architecture = record["architecture"]
    mutables = space.simplify()
    labels = {label: m for label, m in mutables.items() if not isinstance(m, MutableAnnotation)}  # not choices
    missing = sorted(set(labels) - set(architecture))
    extra = sorted(set(architecture) - set(labels))
    if missing or extra:
        raise ConfigError(
            f"genotype architecture does not fit the space: missing {missing[:3]}, unknown {extra[:3]}"
        )
    for label, mutable in labels.items():
        try:
            mutable.validate({label: architecture[label]})
        except Exception as exc:  # nni raises its own SampleValidationError
            raise ConfigError(f"genotype architecture.{label}: {architecture[label]!r} not allowed ({exc})") from exc
    for label, mutable in mutables.items():  # the space's own validity rules (constraints)
        if label not in labels and (error := mutable.check_contains(architecture)) is not None:
            raise ConfigError(f"{where}: architecture is not a valid sample of the space (rule {label}): {error}")
    return space.freeze(architecture)


def build_fixed(record: dict[str, Any], where: str = "genotype") -> tuple[nn.Module, SearchSpace]:
    """Fixed network of a genotype record, via its stream's space module."""
    module = space_module(record["stream"])
    config = space_config_of(record, where)
    return freeze(lambda: module.build_space(config, int(record["num_classes"])), record, where), module


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
