"""Final training of a fixed network (searched or baseline) with the same SER evaluator as the search.

Keeps the checkpoint with the best validation UA (Lightning `ModelCheckpoint`), plus `last.ckpt` so an
interrupted run resumes, stops early when `patience` epochs bring no better validation UA (Lightning
`EarlyStopping`), then scores the best weights on the validation and test speakers. With `keep_initial` the
weights the fit started from are a candidate too (fusion started from trained streams can only keep or
improve its validation UA).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import Dataset

from nni_emotionnas.errors import storage_error
from nni_emotionnas.spaces.kernels.cell_checkpoint import enable_cell_checkpointing
from nni_emotionnas.training.evaluator import TrainConfig, build_evaluator, predict_logits
from nni_emotionnas.training.metrics import SERScores, score


class RunFolderCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint` whose full-disk / permission failures name the checkpoint in the run folder:
    Lightning writes through fsspec, which stages the file in the system's temporary folder first, so the
    OSError names a temporary file the user never asked for."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        try:
            super()._save_checkpoint(trainer, filepath)
        except OSError as exc:
            converted = storage_error(OSError(exc.errno, exc.strerror, filepath), "saving a training checkpoint")
            if converted is None:
                raise
            raise converted from exc


@dataclass
class FitResult:
    val: SERScores
    test: Optional[SERScores]
    test_predictions: Optional[np.ndarray]
    best_checkpoint: str
    best_val_ua: float
    best_epoch: int = -1  # -1: the initial weights (keep_initial) or unknown

    def summary(self) -> dict:
        out = {"val": self.val.as_dict(), "best_checkpoint": self.best_checkpoint, "best_val_ua": self.best_val_ua}
        if self.test is not None:
            out["test"] = self.test.as_dict()
        return out


def fit_fixed(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    test_dataset: Optional[Dataset],
    config: TrainConfig,
    out_dir: Path,
    num_classes: int,
    resume: bool = True,
    keep_initial: bool = False,
) -> FitResult:
    """Trains `model` from its current weights (training batches augmented as `config.augment` says),
    restores the best-val-UA epoch (or the initial weights, with `keep_initial`, when no epoch beat them)
    and scores val/test."""
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    enable_cell_checkpointing(model, config.checkpoint_cells, "train.checkpoint_cells")
    pl.seed_everything(config.seed, workers=True, verbose=False)
    initial = None
    if keep_initial:
        initial = copy.deepcopy(model.state_dict())
        logits, labels = predict_logits(model, val_dataset, config.batch_size)
        initial_ua = score(labels, logits.argmax(axis=1), num_classes).ua
    checkpoint = RunFolderCheckpoint(
        dirpath=ckpt_dir, filename="best-{epoch}", monitor="val_ua", mode="max", save_top_k=1, save_last=True
    )
    stopping = [EarlyStopping(monitor="val_ua", mode="max", patience=config.patience)] if config.patience else []
    evaluator = build_evaluator(
        train_dataset,
        val_dataset,
        num_classes,
        config,
        callbacks=[checkpoint, *stopping],
        logger=CSVLogger(str(out_dir), name="logs"),
        default_root_dir=str(out_dir),
        enable_checkpointing=True,
        augment=True,
    )
    last = ckpt_dir / "last.ckpt"
    if resume and last.is_file():
        evaluator.fit_kwargs["ckpt_path"] = str(last)
    evaluator.evaluate(model)
    best = checkpoint.best_model_path or str(last)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    evaluator.module.load_state_dict(state)
    val_logits, val_labels = predict_logits(model, val_dataset, config.batch_size)
    val_pred = val_logits.argmax(axis=1)
    epoch = re.search(r"epoch=(\d+)", Path(best).name)
    best_epoch = int(epoch.group(1)) if epoch else -1
    if initial is not None and score(val_labels, val_pred, num_classes).ua <= initial_ua:
        model.load_state_dict(initial)
        best, best_epoch = "initial weights", -1
        val_logits, val_labels = predict_logits(model, val_dataset, config.batch_size)
        val_pred = val_logits.argmax(axis=1)
    test_scores = test_pred = test_labels = None
    if test_dataset is not None:
        test_logits, test_labels = predict_logits(model, test_dataset, config.batch_size)
        test_pred = test_logits.argmax(axis=1)
        test_scores = score(test_labels, test_pred, num_classes)
    val_scores = score(val_labels, val_pred, num_classes)
    return FitResult(
        val=val_scores,
        test=test_scores,
        test_predictions=test_pred,
        best_checkpoint=best,
        best_val_ua=val_scores.ua,
        best_epoch=best_epoch,
    )


class StopAfterEpochs(Callback):
    """Ends training after `epochs` epochs while the optimiser and schedule keep the full run's settings,
    so a refit follows the learning-rate trajectory of the fit that chose its length."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def fit_epochs(
    model: nn.Module, dataset: Dataset, config: TrainConfig, epochs: int, out_dir: Path, num_classes: int
) -> None:
    """Trains `model` on `dataset` for exactly `epochs` epochs (0: leaves it as it is) and keeps the last
    weights: nothing is held out to choose from, the count was chosen by an earlier fit with validation."""
    if epochs <= 0:
        return
    enable_cell_checkpointing(model, config.checkpoint_cells, "train.checkpoint_cells")
    pl.seed_everything(config.seed, workers=True, verbose=False)
    evaluator = build_evaluator(
        dataset,
        None,
        num_classes,
        config,
        callbacks=[StopAfterEpochs(epochs)],
        logger=CSVLogger(str(out_dir), name="logs"),
        default_root_dir=str(out_dir),
        augment=True,
    )
    evaluator.evaluate(model)
