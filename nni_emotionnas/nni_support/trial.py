"""The nnictl trial: `python -m nni_emotionnas.nni_support.trial --experiment EXP.yml --stream spectrogram`.

Takes the tuner's sample (`nni.get_next_parameter()`: architecture labels of `emotionnas space-json` plus
optional TrainConfig hyperparameters such as `lr`), freezes the stream's model space with it, trains on one
fold and reports val UA per epoch and, at the end, the best epoch's `{"default": UA, "wa": ...}` with the last
epoch's, the parameter count and the seed. The experiment's `seed` (or `--seed`) is set before the network is
built, so a trial repeats exactly; a sample the space refuses (a deep cell that never reads x_t) ends the trial
with one line saying why, before anything is trained or reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from nni_emotionnas.config.parse import load_yaml, parse
from nni_emotionnas.nni_support import add_trial_arguments, trial_main, trial_parameters
from nni_emotionnas.threads import wait_passively


def load_train_config(path: Optional[str], base: Any, overrides: dict[str, Any]) -> Any:
    """TrainConfig from a YAML file (else `base`, the experiment's section), with command-line overrides."""
    from nni_emotionnas.config.training import TrainConfig

    data = load_yaml(Path(path)) if path else dataclasses.asdict(base)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse(TrainConfig, data, path or "trial")


def space_config(experiment: Any, args: argparse.Namespace, deep_dim: int) -> Any:
    """--space, else the experiment's `<stream>_space`, else the packaged space file (as `emotionnas search`)."""
    from nni_emotionnas.models.networks import space_config_for

    return space_config_for(experiment, args.stream, args.space, deep_dim)[1]


def run(args: argparse.Namespace, parameters: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """One trial; `parameters` default to NNI's next sample (or `--parameters JSON` outside nnictl), checked
    against the space before any feature is extracted."""
    from nni_emotionnas.config.experiment import load_experiment, with_seed
    from nni_emotionnas.features.prepared import prepare
    from nni_emotionnas.search.space_json import build_space, split_parameters
    from nni_emotionnas.training.seeding import seed_everything
    from nni_emotionnas.training.trial_run import train_and_report, trial_output_dir, with_hyperparameters

    if parameters is None:
        parameters = trial_parameters(args.parameters)
    experiment = with_seed(load_experiment(Path(args.experiment)), args.seed)
    split_parameters(build_space(args.stream, space_config(experiment, args, 0), 2), parameters)  # labels only
    corpus = prepare(experiment, streams=[args.stream], progress=False)
    fold = args.fold or corpus.folds[0].name
    space_settings = space_config(experiment, args, corpus.deep_dim)
    seed_everything(experiment.seed)  # before any network is built: as `emotionnas train` does
    space = build_space(args.stream, space_settings, len(corpus.classes))
    architecture, hyperparameters = split_parameters(space, parameters)  # a refused sample ends the trial here
    overrides = {"epochs": args.epochs, "limit_train_batches": args.limit_train_batches, "seed": experiment.seed}
    config = with_hyperparameters(load_train_config(args.train, experiment.train, overrides), hyperparameters)
    return train_and_report(
        space.freeze(architecture),
        train_dataset=corpus.dataset(fold, "train", args.stream),
        val_dataset=corpus.dataset(fold, "val", args.stream),
        num_classes=len(corpus.classes),
        config=config,
        record_fields=dict(
            stream=args.stream,
            architecture=architecture,
            space_config=space_settings,
            num_classes=len(corpus.classes),
            classes=list(corpus.classes),
            fold=fold,
            seed=config.seed,
            strategy={"name": "nnictl", "args": {"hyperparameters": hyperparameters}},
        ),
        output_dir=trial_output_dir(Path(args.out) if args.out else None),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trial_arguments(parser, "train")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return trial_main("trial", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    wait_passively()
    sys.exit(main())
