"""Which network a stage builds: the search-space config of a stream and the fixed network to train."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from nni_emotionnas.config.experiment import ExperimentConfig
from nni_emotionnas.errors import ConfigError


def space_config_for(
    experiment: ExperimentConfig, stream: str, override: Optional[str], deep_dim: int = 0
) -> tuple[Any, Any]:
    """(space module, parsed space config) from --space, the experiment's `<stream>_space` or the default.

    `deep_dim` (the deep frames' width, when known) becomes the deep space's `input_dim`, and the
    spectrogram's row count the spectrogram space's `input_rows`, so a space always reads inputs as wide as the
    features the corpus was extracted with.
    """
    from nni_emotionnas.search.space_json import load_space_config
    from nni_emotionnas.spaces import space_module

    configured = override or getattr(experiment, f"{stream}_space")
    config = load_space_config(stream, experiment.resolve(configured) if configured else None)
    if stream == "deep" and deep_dim:
        config = dataclasses.replace(config, input_dim=deep_dim)
    if stream == "spectrogram":
        config = dataclasses.replace(config, input_rows=experiment.features.spectrogram.size[0])
    return space_module(stream), config


def build_model(
    experiment: ExperimentConfig, stream: str, genotype: Optional[str], classes: list[str], input_dim: int = 0
) -> Any:
    """The fixed network to train: a baseline named in `model.<stream>`, else the genotype's network.

    `input_dim` is the deep frames' width, needed by the recurrent baselines.
    """
    from nni_emotionnas.spaces.genotype import build_fixed, read_genotype

    if stream == "spectrogram" and experiment.model.spectrogram != "darts":
        from nni_emotionnas.models.baselines import build_baseline

        return build_baseline(experiment.model.spectrogram, len(classes))
    if stream == "deep" and experiment.model.deep != "searched":
        from nni_emotionnas.models.baselines_recurrent import build_recurrent_baseline

        return build_recurrent_baseline(experiment.model.deep, input_dim, len(classes))
    if genotype is None:
        raise ConfigError(f"train --stream {stream}: --genotype is required for searched networks")
    record = read_genotype(Path(genotype))
    if record["stream"] != stream:
        raise ConfigError(f"{genotype}: stream: genotype is for {record['stream']!r}, not {stream!r}")
    if int(record["num_classes"]) != len(classes):
        raise ConfigError(f"{genotype}: num_classes: {record['num_classes']} but the corpus has {len(classes)}")
    if record.get("classes") and list(record["classes"]) != list(classes):
        raise ConfigError(f"{genotype}: classes: {record['classes']} differ from the corpus' {classes}")
    return build_fixed(record, where=str(genotype))[0]
