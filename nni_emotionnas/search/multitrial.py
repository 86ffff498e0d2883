"""Multi-trial NAS through the NNI manager: `emotionnas search` with a Random/GridSearch/RegularizedEvolution/
TPE/PolicyBasedRL strategy file starts a `NasExperiment` on the training service named in the file, so every
sampled architecture is an NNI trial in the web UI (port from the file).

Trials rebuild their data from the experiment (features come from the cache), so the evaluator is a
`FunctionalEvaluator` over plain values (serialisable by construction) calling `evaluate_architecture`. The
evaluator and the space's init arguments go to `<run>/trial_setup.json`; a trial's NNI parameters are only its
readable architecture and that file's path (`search.trial_parameters`), and the web UI's search space is the
`emotionnas space-json` form.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Optional

import nni
from torch import nn
from torch.utils.data import Dataset

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.nni_compat import raise_rest_timeout
from nni_emotionnas.search.strategy_builders import MultiTrialPlan
from nni_emotionnas.spaces.genotype import read_genotype, write_genotype

_logger = logging.getLogger(__name__)
# Seconds NNI's client waits for its manager's REST API (NNI: 20); a strategy dies on the first timeout, and a
# loaded machine (trials training on every core) can exceed 20 s.
REST_TIMEOUT = 90


def dataset_source(dataset: Dataset, role: str) -> dict[str, Any]:
    """Plain description (experiment, stream, indices) of a `data.StreamDataset`, rebuilt inside a trial."""
    from nni_emotionnas.features.prepared import StreamDataset

    if not isinstance(dataset, StreamDataset):
        raise ConfigError(f"multi-trial search: the {role} data must come from features.prepared.prepare")
    experiment = dataclasses.asdict(dataset.corpus.experiment)
    base_dir = str(experiment.pop("base_dir"))
    return {"experiment": experiment, "base_dir": base_dir, "stream": dataset.stream, "indices": dataset.indices}


def _rebuild(sources: list[dict[str, Any]]) -> list[Dataset]:
    from nni_emotionnas.config.experiment import experiment_from_dict
    from nni_emotionnas.features.prepared import StreamDataset, prepare

    first = sources[0]
    corpus = prepare(experiment_from_dict(first["experiment"], Path(first["base_dir"])), [first["stream"]], False)
    return [StreamDataset(corpus, s["indices"], s["stream"]) for s in sources]


def evaluate_architecture(
    model: nn.Module,
    *,
    train_source: dict[str, Any],
    val_source: dict[str, Any],
    train: dict[str, Any],
    record: dict[str, Any],
) -> None:
    """Runs inside each NNI trial: trains the sampled network, reports val UA per epoch and the final dict.

    The network NNI built (`model`) is set aside: it was initialised before any seed was set. The sample is
    rebuilt after seeding, as `emotionnas train` and the nnictl trial build it, so a trial repeats exactly.
    """
    from nni_emotionnas.config.parse import parse
    from nni_emotionnas.config.training import TrainConfig
    from nni_emotionnas.spaces.genotype import build_fixed
    from nni_emotionnas.training.seeding import seed_everything
    from nni_emotionnas.training.trial_run import train_and_report, trial_output_dir

    sample = getattr(nni.get_current_parameter(), "sample", None)
    if sample is None:
        raise RuntimeError("evaluate_architecture runs inside an NNI NAS trial (no sampled architecture found)")
    train_dataset, val_dataset = _rebuild([train_source, val_source])
    config = parse(TrainConfig, train, "search")
    seed_everything(config.seed)
    seeded_model, _ = build_fixed({**record, "architecture": sample}, where="trial sample")
    train_and_report(
        seeded_model,
        train_dataset=train_dataset,
        val_dataset=val_dataset,
        num_classes=record["num_classes"],
        config=config,
        record_fields={**record, "architecture": sample},
        output_dir=trial_output_dir(),
    )


def experiment_config(plan: MultiTrialPlan, working_directory: Path) -> Any:
    from nni.nas.experiment import NasExperimentConfig

    config = NasExperimentConfig(
        execution_engine="ts", model_format="simplified", training_service=dict(plan.training_service)
    )
    config.experiment_name = f"emotionnas-{plan.name}"
    config.max_trial_number = plan.max_trials
    config.trial_concurrency = plan.concurrency
    if plan.max_duration:
        config.max_experiment_duration = plan.max_duration
    config.experiment_working_directory = str(working_directory)
    return config


def run_multitrial_search(
    *,
    space_mod: Any,
    space_config: Any,
    train_dataset: Dataset,
    val_dataset: Optional[Dataset],
    num_classes: int,
    search_config: Any,
    strategy_name: str,
    strategy_args: dict[str, Any],
    run_dir: Path,
    stream: str,
    classes: Optional[list[str]] = None,
    fold: Optional[str] = None,
) -> Any:
    """One NNI experiment of `max_trials` sampled architectures; the best trial's genotype.json -> `run_dir`."""
    from nni.nas.evaluator import FunctionalEvaluator

    from nni_emotionnas.nni_compat import ReadableNasExperiment
    from nni_emotionnas.search.export import export_best
    from nni_emotionnas.search.result import SearchResult
    from nni_emotionnas.search.space_json import input_labels, legacy_space, value_names
    from nni_emotionnas.search.strategies import build_strategy
    from nni_emotionnas.search.trial_parameters import referenced_space

    if val_dataset is None:
        raise ConfigError(f"strategy {strategy_name}: multi-trial search scores trials on the fold's validation data")
    plan = build_strategy(strategy_name, strategy_args)
    record = dict(
        stream=stream,
        space_config=dataclasses.asdict(space_config),
        num_classes=num_classes,
        classes=list(classes) if classes else None,
        fold=fold,
        seed=search_config.seed,
        strategy={"name": strategy_name, "args": strategy_args},
    )
    evaluator = FunctionalEvaluator(
        evaluate_architecture,
        train_source=dataset_source(train_dataset, "train"),
        val_source=dataset_source(val_dataset, "validation"),
        train=dataclasses.asdict(search_config),
        record=record,
    )
    space = space_mod.build_space(space_config, num_classes)
    experiment = ReadableNasExperiment(space, evaluator, plan.strategy, experiment_config(plan, Path(run_dir) / "nni"))
    experiment.web_space = legacy_space(space)
    names, inputs = value_names(space), input_labels(space)
    experiment.wrap_model_space = lambda base: referenced_space(base, Path(run_dir), names, inputs)
    _logger.info("multi-trial search %s: web UI at http://127.0.0.1:%d", strategy_name, plan.port)
    started = time.perf_counter()
    raise_rest_timeout(REST_TIMEOUT)
    try:
        experiment.run(port=plan.port)
    finally:  # NNI leaves the manager running after a finished run until interpreter exit
        experiment.stop()
    seconds = time.perf_counter() - started
    genotype_path, _ = export_best(str(Path(run_dir) / "nni" / experiment.id), Path(run_dir) / "genotype.json")
    exported = read_genotype(genotype_path)
    exported["search_metrics"]["seconds"] = round(seconds, 2)
    write_genotype(exported, genotype_path)
    drawing = Path(run_dir) / "cells.png"
    space_mod.draw(exported["genotype"], drawing)
    return SearchResult(Path(run_dir), genotype_path, drawing if drawing.is_file() else None, exported)
