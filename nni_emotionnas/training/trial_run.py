"""One architecture trained inside an NNI trial: per-epoch val UA to NNI, a final metric dict, genotype.json.

Shared by the nnictl trial (HPO tuner samples) and the multi-trial NAS evaluator (NNI strategy samples), so
both report the same numbers and leave the same files for `emotionnas export`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

import nni
import pytorch_lightning as pl
from torch import nn
from torch.utils.data import Dataset

from nni_emotionnas.config.parse import parse
from nni_emotionnas.config.training import TrainConfig
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.spaces.genotype import make_record, parameter_count, write_genotype
from nni_emotionnas.training.evaluator import build_evaluator
from nni_emotionnas.training.seeding import seed_everything

GENOTYPE_FILE = "genotype.json"


def trial_output_dir(default: Optional[Path] = None) -> Path:
    """NNI's per-trial output folder (`trials/<id>/` of the experiment), or `default` outside NNI."""
    folder = os.environ.get("NNI_OUTPUT_DIR")
    if folder:
        return Path(folder)
    if default is None:
        raise ConfigError("NNI_OUTPUT_DIR is not set: run the trial under nnictl or pass an output folder")
    return Path(default)


def with_hyperparameters(config: TrainConfig, hyperparameters: dict[str, Any]) -> TrainConfig:
    """The train config with sampled hyperparameters (TrainConfig keys) applied; other keys are errors."""
    merged = {**dataclasses.asdict(config), **hyperparameters}
    if "batch_size" in hyperparameters:
        merged["batch_size"] = int(hyperparameters["batch_size"])
    return parse(TrainConfig, merged, "trial parameters")


class ValidationHistory(pl.Callback):
    """Val UA/WA of every epoch, so a trial reports the epoch `emotionnas train` would keep (best val UA)."""

    def __init__(self) -> None:
        self.epochs: list[tuple[float, float, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics  # the epoch's validation ran just before (module hooks come after ours)
        if "val_ua" in metrics:
            self.epochs.append((float(metrics["val_ua"]), float(metrics["val_wa"]), float(metrics["val_loss"])))

    def final(self) -> dict[str, Any]:
        """`default`: the best val UA (first epoch reaching it, as the checkpoint `train` keeps); the last beside."""
        if not self.epochs:
            raise RuntimeError("training finished without a validation epoch: no val_ua to report")
        best = max(range(len(self.epochs)), key=lambda i: self.epochs[i][0])
        (ua, wa, loss), (last_ua, last_wa, _) = self.epochs[best], self.epochs[-1]
        return {"default": ua, "wa": wa, "val_loss": loss, "best_epoch": best, "last_ua": last_ua, "last_wa": last_wa}


def train_and_report(
    model: nn.Module,
    *,
    train_dataset: Dataset,
    val_dataset: Dataset,
    num_classes: int,
    config: TrainConfig,
    record_fields: dict[str, Any],
    output_dir: Path,
) -> dict[str, Any]:
    """Trains `model`; NNI gets val UA per epoch (SERModule) and at the end the best epoch's
    `{"default": UA, "wa", "val_loss", "best_epoch", "last_ua", "last_wa", "params", "seed"}`.

    `record_fields` are `genotype.make_record` arguments (stream, architecture, space_config, ...) so the
    trial's folder holds a genotype.json that `emotionnas export` can pick when this trial is the best.
    """
    history = ValidationHistory()
    evaluator = build_evaluator(
        train_dataset, val_dataset, num_classes, config, default_root_dir=str(output_dir), callbacks=[history]
    )
    evaluator.module.report_final = False
    seed_everything(config.seed)  # as `fit.fit_fixed` does after building: same dropout draws and data order
    evaluator.evaluate(model)
    final = {**history.final(), "params": parameter_count(model), "seed": config.seed}
    record = make_record(
        **record_fields,
        search_metrics={**final, "train": dataclasses.asdict(config), "trial": os.environ.get("NNI_TRIAL_JOB_ID")},
    )
    write_genotype(record, Path(output_dir) / GENOTYPE_FILE)
    if nni.get_current_parameter() is not None:
        nni.report_final_result(final)
    return final
