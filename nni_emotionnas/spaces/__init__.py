"""Search spaces, one module per stream, all plugged into the generic search/export code by one protocol.

Protocol (what `nni_emotionnas.search.run`, `nni_emotionnas.spaces.genotype` and the CLI call; no registration needed
beyond adding the module name to `SPACE_MODULES`):

- ``CONFIG_CLASS``: the dataclass its YAML file (``search_spaces/<name>.yml``) parses into, via
  ``configparse.parse``; ``DEFAULT_CONFIG_FILE``: the packaged YAML's file name.
- ``build_space(space_config, num_classes) -> nni.nas.nn.pytorch.ModelSpace``: a fresh model space.
  Its ``forward(inputs)`` takes the batched inputs as the data layer gives them (tensor or dict) and returns
  logits; ``embed(inputs)`` returns the pooled embedding; ``embedding_dim`` is an int attribute.
  Freezing it with an architecture dict (``space.freeze(arch)``) gives the fixed network.
- optional ``derive_architecture(arch, probs, space_config) -> dict``: turns the strategy's exported dict and the
  softmaxed edge weights (``{label: {choice: prob}}``, from ``export_probs``) into the final
  architecture dict, enforcing the space's conventions (e.g. DARTS never keeps ``none``). Without it the
  strategy's export is kept as is. ``probs`` is ``{}`` for strategies without architecture weights.
- ``readable_genotype(arch, probs) -> dict``: JSON-ready human view of ``arch`` (e.g. DARTS cells as
  ``{"normal": [[op, input], ...], "reduce": [...]}``).
- ``draw(genotype: dict, png_path) -> None``: a PNG picture of the readable genotype (matplotlib only).
- optional ``input_names(label, count) -> list[str] | None``: what an input choice's values 0..count-1 stand
  for, so search-space JSON, trial parameters and the web UI show `n1/operand_a: h1`, not an index.
- Validity rules of a space are NNI `Constraint`s among its mutables (NNI's sampling and `freeze` honour them);
  optional ``build_oneshot_space(space_config, num_classes)`` gives the space without them for one-shot
  strategies (NNI's differentiable ones accept choices only), whose export ``derive_architecture`` then fixes.

`space_module(branch)` maps a CLI branch (``spectrogram`` | ``deep``) to its module.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nni_emotionnas.errors import ConfigError

SPACE_MODULES = {"spectrogram": "spectrogram", "deep": "recurrent"}


def space_module(branch: str) -> ModuleType:
    """The module implementing the protocol above for a stream (`spectrogram` or `deep`)."""
    if branch not in SPACE_MODULES:
        raise ConfigError(f"branch: {branch!r} is not one of {', '.join(map(repr, SPACE_MODULES))}")
    return importlib.import_module(f"nni_emotionnas.spaces.{SPACE_MODULES[branch]}")
