"""Fusion trained from the fold's trained streams (`train.fusion_init: streams`), in two phases.

Joint training from random weights can leave a fused model below its own dominant stream (its validation
UA peaks at the first epoch, then falls). Starting from the trained stream networks instead, the head is
first trained alone with the streams frozen, then everything at a lower learning rate; each phase keeps its
best validation UA with the weights it started from as a candidate, so fusion can only keep or improve
the validation UA of where it started (for ISM with the zero gate: exactly the dominant stream). Given a
`FrozenStreams`, the head phase trains on the frozen streams' cached embeddings (`evaluation.frozen_streams`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from torch.utils.data import Dataset

from nni_emotionnas.config.training import TrainConfig
from nni_emotionnas.evaluation.frozen_streams import FrozenStreams
from nni_emotionnas.models.fusion import TwoStreamModel
from nni_emotionnas.training.fit import FitResult, fit_epochs, fit_fixed


def phase_configs(config: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """(name, training config) of the phases that have epochs: `head` (frozen streams), `finetune`."""
    phases = []
    if config.fusion_head_epochs:
        head_lr = config.lr if config.fusion_head_lr is None else config.fusion_head_lr
        phases.append(("head", dataclasses.replace(config, epochs=config.fusion_head_epochs, lr=head_lr)))
    if config.fusion_finetune_epochs:
        finetune = dataclasses.replace(config, epochs=config.fusion_finetune_epochs, lr=config.fusion_finetune_lr)
        phases.append(("finetune", finetune))
    return phases


def fit_fusion_from_streams(
    model: TwoStreamModel,
    train_dataset: Dataset,
    val_dataset: Dataset,
    config: TrainConfig,
    out_dir: Path,
    num_classes: int,
    frozen: Optional[FrozenStreams] = None,
) -> tuple[FitResult, str, dict[str, int]]:
    """Runs the phases on `model` (its streams already loaded); returns the last phase's fit, a label of
    where the kept weights come from (`start`, `head:<epoch>` or `finetune:<epoch>`) and how many epochs of
    each phase led to them (what `refit_fusion` repeats)."""
    origin, fit, phase_epochs = "start", None, {}
    for name, phase in phase_configs(config):
        model.freeze_streams(name == "head")
        train, val = train_dataset, val_dataset
        if name == "head" and frozen is not None:
            train = frozen.split("train", train_dataset, model, phase, augmented=True)
            val = frozen.split("val", val_dataset, model, phase, augmented=False)
        fit = fit_fixed(
            model,
            train,
            val,
            None,
            phase,
            Path(out_dir) / name,
            num_classes,
            resume=False,
            keep_initial=True,
        )
        phase_epochs[name] = fit.best_epoch + 1
        if fit.best_epoch >= 0:
            origin = f"{name}:{fit.best_epoch}"
    model.freeze_streams(False)
    assert fit is not None, "TrainConfig guarantees at least one phase"
    return fit, origin, phase_epochs


def refit_fusion(
    model: TwoStreamModel, dataset: Dataset, config: TrainConfig, phase_epochs: dict[str, int], out_dir: Path,
    num_classes: int, frozen: Optional[FrozenStreams] = None,
) -> None:
    """`train.refit`: the phases again on `dataset` (training + validation speakers), each for the epochs
    `fit_fusion_from_streams` kept, from `model` (its streams the refitted ones; `frozen` their cache)."""
    for name, phase in phase_configs(config):
        epochs = phase_epochs.get(name, 0)
        model.freeze_streams(name == "head")
        data = dataset
        if name == "head" and frozen is not None and epochs > 0:
            data = frozen.split("train+val", dataset, model, phase, augmented=True)
        fit_epochs(model, data, phase, epochs, Path(out_dir) / "refit" / name, num_classes)
    model.freeze_streams(False)
