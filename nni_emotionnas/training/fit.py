"""Final training of a fixed network (searched or baseline) with the same SER evaluator as the search.

Keeps the checkpoint with the best validation UA (Lightning `ModelCheckpoint`), plus `last.ckpt` so an
interrupted run resumes, then scores the best weights on the validation and test speakers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import Dataset

from nni_emotionnas.training.evaluator import TrainConfig, build_evaluator, predict_logits
from nni_emotionnas.training.metrics import SERScores, score


@dataclass
class FitResult:
    val: SERScores
    test: Optional[SERScores]
    val_predictions: np.ndarray
    test_predictions: Optional[np.ndarray]
    test_labels: Optional[np.ndarray]
    best_checkpoint: str
    best_val_ua: float

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
) -> FitResult:
    """Trains `model` from its current weights, restores the best-val-UA epoch and scores val/test."""
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    pl.seed_everything(config.seed, workers=True, verbose=False)
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best-{epoch}", monitor="val_ua", mode="max", save_top_k=1, save_last=True
    )
    evaluator = build_evaluator(
        train_dataset,
        val_dataset,
        num_classes,
        config,
        callbacks=[checkpoint],
        logger=CSVLogger(str(out_dir), name="logs"),
        default_root_dir=str(out_dir),
        enable_checkpointing=True,
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
    test_scores = test_pred = test_labels = None
    if test_dataset is not None:
        test_logits, test_labels = predict_logits(model, test_dataset, config.batch_size)
        test_pred = test_logits.argmax(axis=1)
        test_scores = score(test_labels, test_pred, num_classes)
    best_score = checkpoint.best_model_score
    return FitResult(
        val=score(val_labels, val_pred, num_classes),
        test=test_scores,
        val_predictions=val_pred,
        test_predictions=test_pred,
        test_labels=test_labels,
        best_checkpoint=best,
        best_val_ua=float(best_score) if best_score is not None else float("nan"),
    )
