"""Search spaces, one module per stream and named after it, each implementing `SearchSpace`, which mypy checks
(`tests/test_types.py`).

A new space is a module `spaces/<stream>.py` with the protocol's names, one entry in `STREAMS` and one in `_CHECKED`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol, cast

from nni_emotionnas.config.parse import parse
from nni_emotionnas.errors import ConfigError

STREAMS = ("spectrogram", "deep")
Probs = dict[str, dict[str, float]]  # softmaxed edge weights, {label: {choice: prob}} (NNI's `export_probs`)


class SearchSpace(Protocol):
    """What `search.run`, `search.space_json`, `spaces.genotype` and the CLI call on a space module."""

    CONFIG_CLASS: type[Any]  # the dataclass its YAML file (`search_spaces/<name>.yml`) parses into
    DEFAULT_CONFIG_FILE: str  # the packaged YAML's file name

    def build_space(self, space_config: Any, num_classes: int) -> Any:
        """An NNI `ModelSpace`: `forward(batch)` gives logits, `embed(batch)` the embedding (`embedding_dim` wide)."""

    def build_oneshot_space(self, space_config: Any, num_classes: int) -> Any:
        """The space without its `Constraint`s, which NNI's one-shot strategies refuse (`derive_architecture`)."""

    def derive_architecture(self, arch: dict[str, Any], probs: Probs, space_config: Any) -> dict[str, Any]:
        """The strategy's export made to follow the space's rules (e.g. DARTS never keeps `none`)."""

    def readable_genotype(self, arch: dict[str, Any], probs: Optional[Probs] = None) -> dict[str, Any]:
        """JSON-ready human view of `arch` (e.g. DARTS cells as `{"normal": [[op, input], ...], ...}`)."""

    def draw(self, genotype: dict[str, Any], png_path: Path) -> None:
        """A PNG picture of the readable genotype (matplotlib only)."""

    def input_names(self, label: str, count: int) -> Optional[list[str]]:
        """What an input choice's values 0..count-1 stand for (the web UI shows `n1/operand_a: h1`), or None."""

    def upgrade_architecture(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """An older genotype file's architecture dict in today's labels."""

    def upgrade_config(self, data: dict[str, Any], where: str, recorded: bool) -> dict[str, Any]:
        """An older space file (or genotype record, `recorded`) without its removed keys (CHANGELOG.md)."""


if TYPE_CHECKING:  # mypy checks that every space module implements the protocol
    from nni_emotionnas.spaces import deep, spectrogram

    _CHECKED: tuple[SearchSpace, ...] = (spectrogram, deep)


def space_module(stream: str) -> SearchSpace:
    """The module implementing `SearchSpace` for a stream (`spectrogram` or `deep`)."""
    if stream not in STREAMS:
        raise ConfigError(f"stream: {stream!r} is not one of {', '.join(map(repr, STREAMS))}")
    return cast(SearchSpace, importlib.import_module(f"nni_emotionnas.spaces.{stream}"))


def parse_space_config(module: SearchSpace, data: Any, where: str, recorded: bool = False) -> Any:
    """A space file's (or a genotype record's, `recorded`) mapping as the module's `CONFIG_CLASS`."""
    if isinstance(data, dict):
        data = module.upgrade_config(dict(data), where, recorded)
    return parse(module.CONFIG_CLASS, data, where)

