"""The paper's procedure as a strategy: train each given cell briefly, keep the lowest validation loss.

Runs on a deep space built with `cells: [...]` (one choice labelled `cell`); trains every candidate
in-process with the evaluator's module and dataloaders (the fold's training and validation speakers), so
it needs no NNI manager. `in_process = True` tells the search to use NNI's sequential engine.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from nni.nas.space import ExecutableModelSpace
from nni.nas.strategy import Strategy

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.nni_compat import RunOverride
from nni_emotionnas.training.evaluator import TorchThreads

_logger = logging.getLogger(__name__)
LABEL = "cell"


class _BestValLoss(pl.Callback):
    def __init__(self) -> None:
        self.best = float("inf")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get("val_loss")
        if value is not None and not trainer.sanity_checking:
            self.best = min(self.best, float(value))


class CatalogStrategy(RunOverride, Strategy):
    """`epochs` of training per candidate cell; `results` maps each cell to its lowest validation loss."""

    in_process = True

    def __init__(self, epochs: int = 3, limit_train_batches: Optional[int] = None, seed: int = 0) -> None:
        super().__init__()
        self.epochs, self.limit_train_batches, self.seed = epochs, limit_train_batches, seed
        self.results: dict[str, float] = {}
        self._best: Optional[ExecutableModelSpace] = None

    def search_loop(self) -> None:
        space = self.model_space
        mutables = space.simplify()
        if set(mutables) != {LABEL}:
            raise ConfigError("strategy catalog: the deep space must list candidate cells under `cells:` "
                              f"(got choices {sorted(mutables)[:4]})")
        evaluator = space.evaluator
        threads = [c for c in evaluator.trainer.callbacks if isinstance(c, TorchThreads)]  # train.threads
        for value in mutables[LABEL].values:
            pl.seed_everything(self.seed, workers=True, verbose=False)
            model = space.freeze({LABEL: value}).executable_model()
            module = copy.deepcopy(evaluator.module)
            module.report_final = False
            module.set_model(model)
            tracker = _BestValLoss()
            trainer = pl.Trainer(max_epochs=self.epochs, limit_train_batches=self.limit_train_batches,
                                 logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, accelerator="auto",
                                 callbacks=[tracker, *threads])
            trainer.fit(module, evaluator.train_dataloaders, evaluator.val_dataloaders)
            self.results[value] = tracker.best
            _logger.info("catalog cell %s: lowest validation loss %.4f", value, tracker.best)
        best = min(self.results, key=lambda v: (not torch.isfinite(torch.tensor(self.results[v])), self.results[v]))
        self._best = space.freeze({LABEL: best})

    def search_metrics(self) -> dict[str, Any]:
        """What `genotype.json` records of the ranking: every candidate's lowest validation loss (null when it
        diverged, so the file stays standard JSON)."""
        losses = {cell: loss if math.isfinite(loss) else None for cell, loss in self.results.items()}
        return {"candidate_val_loss": losses}

    def list_models(self, sort: bool = True, limit: Optional[int] = None) -> Iterator[ExecutableModelSpace]:
        if self._best is not None:
            yield self._best
