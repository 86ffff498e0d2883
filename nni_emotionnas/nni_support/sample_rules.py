"""The rules of a stream's model space as a tuner sees them: which readable samples (the `emotionnas space-json`
form the trials get) the space refuses, and whether a search space was derived from that model space.

The model space is built from the same experiment, stream and `--space` as the nnictl trial's, and samples are
checked with the trial's own `split_parameters`: a tuner refuses exactly what a trial would refuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from nni_emotionnas.errors import ConfigError

# A space's rules do not depend on the class count or the features' width; the trial's space only differs there.
NUM_CLASSES = 2


class SampleRules:
    """The model space of `stream` in `experiment` (or `space`, as the trial's `--space`), for checking samples."""

    def __init__(self, experiment: Path, stream: str, space: Optional[Path] = None, where: str = "tuner") -> None:
        from nni_emotionnas.config.experiment import load_experiment
        from nni_emotionnas.models.networks import space_config_for
        from nni_emotionnas.search.space_json import build_space, choices, legacy_space

        if not Path(experiment).is_file():
            raise ConfigError(f"{where}.experiment: {experiment} is not a file (the experiment the trials run)")
        loaded = load_experiment(Path(experiment))
        _, config = space_config_for(loaded, stream, str(space) if space is not None else None)
        self.where, self.stream, self.source = where, stream, Path(experiment).name
        self.space = build_space(stream, config, NUM_CLASSES)
        self.labels = set(choices(self.space))
        self._legacy = legacy_space(self.space)

    def check_search_space(self, search_space: dict[str, Any]) -> None:
        """Refuses a search space that is not this model space's `space-json` (labels or values differ)."""
        for label, choice in self._legacy.items():
            given = search_space.get(label)
            if given != choice:
                problem = "lacks" if given is None else "has other values for"
                raise ConfigError(
                    f"{self.where}: the search space {problem} the {self.stream} space's choice {label!r} "
                    f"({self.source}); regenerate it with `emotionnas space-json --stream {self.stream}` from the "
                    "same space the trials use"
                )

    def refusal(self, parameters: dict[str, Any]) -> Optional[str]:
        """Why the space refuses `parameters` (the trial's message), or None when a trial would accept them."""
        from nni_emotionnas.search.space_json import InvalidSample, split_parameters

        try:
            split_parameters(self.space, parameters)
        except InvalidSample as refused:
            return str(refused)
        return None
