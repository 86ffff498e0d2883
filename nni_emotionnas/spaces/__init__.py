"""Search spaces, one module per stream, each implementing `SearchSpace`, which mypy checks (`tests/test_types.py`).

A new space is a module with the protocol's names, one entry in `SPACE_MODULES` and one in `_CHECKED` below.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, cast

from nni_emotionnas.config.parse import parse
from nni_emotionnas.errors import ConfigError

SPACE_MODULES = {"spectrogram": "spectrogram", "deep": "recurrent"}
Probs = dict[str, dict[str, float]]  # softmaxed edge weights, {label: {choice: prob}} (NNI's `export_probs`)


class SearchSpace(Protocol):
    """What `search.run`, `search.space_json`, `spaces.genotype` and the CLI call on a space module."""

    @property
    def CONFIG_CLASS(self) -> type[Any]:
        """The dataclass its YAML file (`search_spaces/<name>.yml`) parses into (`parse_space_config`)."""

    @property
    def DEFAULT_CONFIG_FILE(self) -> str:
        """The packaged YAML's file name."""

    def build_space(self, space_config: Any, num_classes: int) -> Any:
        """A fresh NNI `ModelSpace`: `forward(inputs)` takes the batch as the data layer gives it (tensor or dict)
        and returns logits, `embed(inputs)` the pooled embedding, `embedding_dim` is an int; `freeze(arch)` gives
        the fixed network."""

    def build_oneshot_space(self, space_config: Any, num_classes: int) -> Any:
        """The space for one-shot strategies, without the space's `Constraint`s (NNI's differentiable strategies
        accept choices only); `derive_architecture` then fixes their export."""

    def derive_architecture(self, arch: dict[str, Any], probs: Probs, space_config: Any) -> dict[str, Any]:
        """The final architecture dict from the strategy's export and `probs` (`{}` for strategies without
        architecture weights), enforcing the space's conventions (e.g. DARTS never keeps `none`)."""

    def readable_genotype(self, arch: dict[str, Any], probs: Optional[Probs] = None) -> dict[str, Any]:
        """JSON-ready human view of `arch` (e.g. DARTS cells as `{"normal": [[op, input], ...], ...}`)."""

    def draw(self, genotype: dict[str, Any], png_path: Path) -> None:
        """A PNG picture of the readable genotype (matplotlib only)."""

    def input_names(self, label: str, count: int) -> Optional[list[str]]:
        """What an input choice's values 0..count-1 stand for, so search-space JSON, trial parameters and the
        web UI show `n1/operand_a: h1`, not an index; None for other labels."""

    def upgrade_architecture(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """An older genotype file's architecture dict in today's labels."""

    def upgrade_config(self, data: dict[str, Any], where: str, recorded: bool) -> dict[str, Any]:
        """An older space config without its removed keys (CHANGELOG.md), before it is parsed: a removed key with
        a value that no longer holds is a one-line error naming it and what replaced it, unless the mapping is
        a genotype's record of its search (`recorded`), which only warns."""


if TYPE_CHECKING:  # mypy checks that every space module implements the protocol
    from nni_emotionnas.spaces import recurrent, spectrogram

    _CHECKED: tuple[SearchSpace, ...] = (spectrogram, recurrent)


def space_module(branch: str) -> SearchSpace:
    """The module implementing `SearchSpace` for a stream (`spectrogram` or `deep`)."""
    if branch not in SPACE_MODULES:
        raise ConfigError(f"branch: {branch!r} is not one of {', '.join(map(repr, SPACE_MODULES))}")
    return cast(SearchSpace, importlib.import_module(f"nni_emotionnas.spaces.{SPACE_MODULES[branch]}"))


def parse_space_config(module: SearchSpace, data: Any, where: str, recorded: bool = False) -> Any:
    """A space file's (or a genotype record's, `recorded`) mapping as the module's `CONFIG_CLASS`."""
    if isinstance(data, dict):
        data = module.upgrade_config(dict(data), where, recorded)
    return parse(module.CONFIG_CLASS, data, where)

