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
from torch import nn
from torch.utils.data import Dataset

from nni_emotionnas.config.parse import parse
from nni_emotionnas.config.training import TrainConfig
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.spaces.genotype import make_record, parameter_count, write_genotype
from nni_emotionnas.training.evaluator import build_evaluator

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
    """Trains `model`; NNI gets val UA per epoch (SERModule) and `{"default": UA, "wa", "params"}` at the end.

    `record_fields` are `genotype.make_record` arguments (branch, architecture, space_config, ...) so the
    trial's folder holds a genotype.json that `emotionnas export` can pick when this trial is the best.
    """
    evaluator = build_evaluator(train_dataset, val_dataset, num_classes, config, default_root_dir=str(output_dir))
    evaluator.module.report_final = False
    evaluator.evaluate(model)
    metrics = evaluator.trainer.callback_metrics
    if "val_ua" not in metrics:
        raise RuntimeError("training finished without a validation epoch: no val_ua to report")
    final = {
        "default": float(metrics["val_ua"]),
        "wa": float(metrics["val_wa"]),
        "params": parameter_count(model),
    }
    record = make_record(
        **record_fields,
        search_metrics={**final, "train": dataclasses.asdict(config), "trial": os.environ.get("NNI_TRIAL_JOB_ID")},
    )
    write_genotype(record, Path(output_dir) / GENOTYPE_FILE)
    if nni.get_current_parameter() is not None:
        nni.report_final_result(final)
    return final
