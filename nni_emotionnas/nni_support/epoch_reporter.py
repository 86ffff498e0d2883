"""Per-epoch supernet scores of a one-shot search, reported to NNI (one-shot runs have no trials of their own)."""

from __future__ import annotations

from typing import Any

import nni
import pytorch_lightning as pl

from nni_emotionnas.evaluator import predict_logits
from nni_emotionnas.metrics import score


class EpochReporter(pl.Callback):
    """Scores the supernet on held-out data after every training epoch and reports it to NNI."""

    def __init__(self, dataset: Any, num_classes: int, batch_size: int) -> None:
        self.dataset = dataset
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        supernet = pl_module.training_module.model if hasattr(pl_module, "training_module") else pl_module.model
        logits, labels = predict_logits(supernet, self.dataset, self.batch_size)
        scores = score(labels, logits.argmax(axis=1), self.num_classes)
        metric = {"default": scores.ua, "wa": scores.wa}
        if "train_loss" in trainer.callback_metrics:
            metric["train_loss"] = float(trainer.callback_metrics["train_loss"])
        self.history.append(metric)
        if nni.get_current_parameter() is not None:
            nni.report_intermediate_result(metric)
