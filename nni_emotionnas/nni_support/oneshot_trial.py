"""The one-shot-in-a-trial entry: each nnictl trial runs one one-shot search (DARTS, GumbelDARTS, ENAS, ...).

One-shot strategies never reach the NNI manager on their own; run inside a trial, every epoch's supernet
score on the fold's validation speaker goes to `nni.report_intermediate_result`, the final metric carries the
architecture found (one `arch <label>` key per choice), and the search's genotype.json lands in the trial folder,
so one-shot runs show in the web UI and `emotionnas export` works.
The strategy comes from the tuner's sample (`{"strategy": "gumbel_darts"}` = `strategies/gumbel_darts.yml`)
or from `--strategy FILE`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.nni_support import add_trial_arguments, trial_main, trial_parameters
from nni_emotionnas.threads import wait_passively


def strategy_file(args: argparse.Namespace, parameters: dict[str, Any]) -> Path:
    """`--strategy FILE`, else the packaged `strategies/<sample's strategy>.yml`."""
    from nni_emotionnas.config.resources import default_file

    if args.strategy:
        return Path(args.strategy)
    name = parameters.get("strategy")
    if not isinstance(name, str):
        raise ConfigError("trial parameters.strategy: missing (give --strategy FILE or a 'strategy' choice)")
    return default_file("strategies", f"{name}.yml")


def run(args: argparse.Namespace, parameters: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    from nni_emotionnas.config.experiment import load_experiment, with_seed
    from nni_emotionnas.features.prepared import prepare
    from nni_emotionnas.nni_support.trial import load_train_config, space_config
    from nni_emotionnas.search.run import run_search
    from nni_emotionnas.search.strategies import load_strategy_spec
    from nni_emotionnas.spaces import space_module
    from nni_emotionnas.training.epoch_reporter import EpochReporter, TrialReporter
    from nni_emotionnas.training.trial_run import trial_output_dir, with_hyperparameters

    if parameters is None:
        parameters = trial_parameters(args.parameters)
    name, strategy_args = load_strategy_spec(strategy_file(args, parameters))
    experiment = with_seed(load_experiment(Path(args.experiment)), args.seed)
    corpus = prepare(experiment, streams=[args.stream], progress=False)
    fold = args.fold or corpus.folds[0].name
    hyperparameters = {k: v for k, v in parameters.items() if k != "strategy"}
    overrides = {"epochs": args.epochs, "limit_train_batches": args.limit_train_batches, "seed": experiment.seed}
    config = with_hyperparameters(load_train_config(args.train, experiment.search, overrides), hyperparameters)
    val = corpus.dataset(fold, "val", args.stream)
    trial = TrialReporter()  # before the search: NNI's one-shot run swaps the trial's channel and parameters
    reporter = EpochReporter(val, len(corpus.classes), config.batch_size, trial)
    result = run_search(
        space_mod=space_module(args.stream),
        space_config=space_config(experiment, args, corpus.deep_dim),
        train_dataset=corpus.dataset(fold, "train", args.stream),
        num_classes=len(corpus.classes),
        search_config=config,
        strategy_name=name,
        strategy_args=strategy_args,
        run_dir=trial_output_dir(Path(args.out) if args.out else None),
        stream=args.stream,
        classes=list(corpus.classes),
        fold=fold,
        val_dataset=val,
        callbacks=[reporter],
    )
    if not reporter.history:
        raise RuntimeError(f"one-shot search with {name} ran no training epoch")
    final = {**reporter.history[-1], "strategy": name, "seed": config.seed, **found_architecture(result.record)}
    trial.final(final)
    return final


def found_architecture(record: dict[str, Any]) -> dict[str, Any]:
    """The architecture the search exported, as the final metric's extra keys (the web UI shows them on the
    trial's row): every choice in its readable form (`arch n1/operand_a: h1`)."""
    from nni_emotionnas.search.space_json import build_space, readable_sample
    from nni_emotionnas.spaces.genotype import space_config_of

    space = build_space(record["stream"], space_config_of(record), int(record["num_classes"]))
    return {f"arch {label}": value for label, value in readable_sample(space, record["architecture"]).items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_trial_arguments(parser, "search")
    parser.add_argument("--strategy", help="strategy YAML (default: the sample's 'strategy' packaged file)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return trial_main("oneshot_trial", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    wait_passively()
    sys.exit(main())
