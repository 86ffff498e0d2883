"""One architecture search through NNI's `NasExperiment`, then export: genotype.json + cell drawing.

Generic over spaces (any module following the `nni_emotionnas.spaces` protocol) and strategies (the
`nni_emotionnas.search.strategies` table). DARTS-style strategies train the weights on the evaluator's train
dataloader and the architecture on its val dataloader, so the training speakers' data is split into a
weight half and an architecture half (stratified by class); the fold's validation speaker stays unseen.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset, Subset

from nni_emotionnas.nni_compat import DifferentiableMixedCell, OneShotStrategy, arch_alphas
from nni_emotionnas.search.result import SearchResult
from nni_emotionnas.search.strategies import SPLITS_TRAINING_DATA, build_strategy
from nni_emotionnas.search.strategy_builders import MULTI_TRIAL
from nni_emotionnas.spaces import SearchSpace
from nni_emotionnas.spaces.darts_ops import NONE
from nni_emotionnas.spaces.genotype import make_record, write_genotype
from nni_emotionnas.spaces.kernels.cell_checkpoint import enable_cell_checkpointing
from nni_emotionnas.training.evaluator import TrainConfig, build_evaluator, dataset_labels, predict_logits
from nni_emotionnas.training.metrics import score

_logger = logging.getLogger(__name__)


def split_for_search(dataset: Dataset, seed: int) -> tuple[Subset, Subset]:
    """(weight half, architecture half) of the training data, stratified by label when every class has 2+."""
    labels = dataset_labels(dataset)
    indices = np.arange(len(labels))
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 else None
    weight_idx, arch_idx = train_test_split(indices, test_size=0.5, random_state=seed, stratify=stratify)
    return Subset(dataset, sorted(weight_idx.tolist())), Subset(dataset, sorted(arch_idx.tolist()))


def edge_weights(oneshot_module: Any) -> dict[str, dict[str, float]]:
    """Softmaxed architecture weights per choice label / cell edge, including DARTS' implicit `none`.

    NNI's `export_probs` drops the zero op its differentiable cell appends to every edge; we add it back
    from the cell's alphas so the file shows how strongly each edge leaned to `none`.
    """
    try:
        weights = {label: dict(probs) for label, probs in oneshot_module.export_probs().items()}
    except (AttributeError, NotImplementedError):
        return {}
    for module in oneshot_module.supernet_modules():
        if isinstance(module, DifferentiableMixedCell):
            for label, alpha in arch_alphas(module).items():
                probs = torch.softmax(alpha.detach().float(), dim=-1).cpu().tolist()
                if label.endswith("_edges"):  # PC-DARTS' edge normalisation: a weight per source state
                    weights[label] = {str(source): p for source, p in enumerate(probs)}
                    continue
                weights[label] = dict(zip(module.op_names, probs))
                if len(probs) == len(module.op_names) + 1:
                    weights[label][NONE] = probs[-1]
    return {label: {op: float(p) for op, p in probs.items()} for label, probs in weights.items()}


def _experiment(space: Any, evaluator: Any, strategy: Any, run_dir: Path) -> Any:
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    config = NasExperimentConfig.default(space, evaluator, strategy)
    if getattr(strategy, "in_process", False):  # trains its candidates itself (catalog): no NNI manager
        config = NasExperimentConfig(training_service_platform="local", execution_engine="sequential",
                                     model_format="raw", trial_concurrency=1)
    config.experiment_working_directory = str(run_dir / "nni")
    return NasExperiment(space, evaluator, strategy, config)


def run_search(
    *,
    space_mod: SearchSpace,
    space_config: Any,
    train_dataset: Dataset,
    num_classes: int,
    search_config: TrainConfig,
    strategy_name: str,
    strategy_args: dict[str, Any],
    run_dir: Path,
    stream: str,
    classes: Optional[list[str]] = None,
    fold: Optional[str] = None,
    val_dataset: Optional[Dataset] = None,
    callbacks: Optional[list] = None,
) -> SearchResult:
    """Searches, exports and writes `genotype.json` (+ `cells.png`) into `run_dir`.

    `val_dataset` (the fold's validation speaker) is only used by strategies that do not split the
    training data; for DARTS the architecture half of the training data plays that role.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if strategy_name in MULTI_TRIAL:  # sampled architectures are NNI trials: see nni_support.multitrial
        from nni_emotionnas.search.multitrial import run_multitrial_search

        return run_multitrial_search(
            space_mod=space_mod, space_config=space_config, train_dataset=train_dataset, val_dataset=val_dataset,
            num_classes=num_classes, search_config=search_config, strategy_name=strategy_name,
            strategy_args=strategy_args, run_dir=run_dir, stream=stream, classes=classes, fold=fold,
        )
    pl.seed_everything(search_config.seed, workers=True, verbose=False)
    weight_data: Dataset
    arch_data: Optional[Dataset]
    if strategy_name in SPLITS_TRAINING_DATA:
        weight_data, arch_data = split_for_search(train_dataset, search_config.seed)
        evaluator = build_evaluator(
            weight_data, arch_data, num_classes, search_config, shuffle_val=True, default_root_dir=str(run_dir),
            callbacks=callbacks, work="supernet",
        )
    else:
        weight_data, arch_data = train_dataset, val_dataset
        evaluator = build_evaluator(
            train_dataset, val_dataset, num_classes, search_config, default_root_dir=str(run_dir), callbacks=callbacks,
            work="supernet",
        )
    space = space_mod.build_oneshot_space(space_config, num_classes)
    enable_cell_checkpointing(space, search_config.checkpoint_cells, "search.checkpoint_cells")
    strategy = build_strategy(strategy_name, strategy_args)
    experiment = _experiment(space, evaluator, strategy, run_dir)
    started = time.perf_counter()
    try:
        experiment.run()
        seconds = time.perf_counter() - started
        exported = experiment.export_top_models(formatter="dict")[0]
    finally:
        experiment.stop()
    oneshot = strategy.oneshot_module if isinstance(strategy, OneShotStrategy) else None
    weights = edge_weights(oneshot) if oneshot is not None else {}
    architecture = space_mod.derive_architecture(exported, weights, space_config)
    chosen = [label for label, value in architecture.items() if value == NONE]
    if chosen:
        raise RuntimeError(f"derived architecture keeps 'none' at {chosen}: DARTS derivation must exclude it")
    metrics: dict[str, Any] = {"seconds": round(seconds, 2), "epochs": search_config.epochs}
    callback = evaluator.trainer.callback_metrics  # one-shot strategies reuse the evaluator's trainer
    if "train_loss" in callback:
        metrics["train_loss"] = float(callback["train_loss"])
    ranking = getattr(strategy, "search_metrics", None)  # strategies that rank candidates themselves say how
    if ranking is not None:
        metrics.update(ranking())
    if oneshot is not None and arch_data is not None:
        logits, labels = predict_logits(oneshot.training_module.model, arch_data, search_config.batch_size)
        supernet = score(labels, logits.argmax(axis=1), num_classes)
        metrics["supernet_arch_half_ua"], metrics["supernet_arch_half_wa"] = supernet.ua, supernet.wa
    record = make_record(
        stream=stream,
        architecture=_jsonable(architecture),
        space_config=space_config,
        num_classes=num_classes,
        edge_weights=weights,
        classes=classes,
        fold=fold,
        seed=search_config.seed,
        strategy={"name": strategy_name, "args": strategy_args},
        search_metrics={**metrics, "search": dataclasses.asdict(search_config)},
        nni_export=_jsonable(exported),
    )
    genotype_path = write_genotype(record, run_dir / "genotype.json")
    drawing = run_dir / "cells.png"
    space_mod.draw(record["genotype"], drawing)
    _logger.info("search done in %.1fs: %s", seconds, genotype_path)
    return SearchResult(run_dir, genotype_path, drawing if drawing.is_file() else None, record)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
