"""Per-epoch supernet scores of a one-shot search, reported to NNI (one-shot runs have no trials of their own).

NNI runs a one-shot search through its sequential engine, which swaps the process' trial command channel and
NNI's current parameters while the search trains; reports made with `nni.report_*` then never reach the NNI
manager. `TrialReporter` keeps the trial's own channel and parameter id, taken before the search starts.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from nni_emotionnas.nni_compat import current_trial_record, send_trial_metric, trial_channel
from nni_emotionnas.training.evaluator import predict_logits
from nni_emotionnas.training.metrics import score


class TrialReporter:
    """Sends metrics on the trial's own channel (None outside an NNI trial: then it only keeps them)."""

    def __init__(self) -> None:
        record = current_trial_record()
        self.parameter_id = record["parameter_id"] if record else None
        self.channel = trial_channel() if record else None
        self.sequence = 0

    def intermediate(self, metric: dict[str, Any]) -> None:
        self._send("PERIODICAL", self.sequence, metric)
        self.sequence += 1

    def final(self, metric: dict[str, Any]) -> None:
        self._send("FINAL", 0, metric)

    def _send(self, kind: str, sequence: int, metric: dict[str, Any]) -> None:
        if self.channel is not None:
            send_trial_metric(self.channel, self.parameter_id, kind, sequence, metric)


class EpochReporter(pl.Callback):
    """Scores the supernet on held-out data after every training epoch and reports it to NNI."""

    def __init__(self, dataset: Any, num_classes: int, batch_size: int, reporter: TrialReporter) -> None:
        self.reporter = reporter
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
        self.reporter.intermediate(metric)
