"""The SER evaluator: one NNI Lightning evaluator for one-shot search, trial training and final training.

NNI's own `Classification` evaluator breaks on current torchmetrics and reports accuracy only; SER needs
UA (balanced accuracy) over a whole epoch, so `SERModule` collects the epoch's predictions and scores them
with scikit-learn (`nni_emotionnas.training.metrics`), which makes the logged numbers equal sklearn's by design.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any, Optional, Union

import nni
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from nni.nas.evaluator.pytorch import DataLoader, Lightning, LightningModule, Trainer
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import Dataset, Subset

from nni_emotionnas.config.training import AugmentConfig, TrainConfig
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.threads import Work, policy_threads, torch_threads
from nni_emotionnas.training.augment import augment_batch
from nni_emotionnas.training.metrics import score

__all__ = ["SERModule", "TrainConfig", "build_evaluator", "predict_logits"]


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Integer labels of a dataset, read without loading features when the dataset exposes them."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    for attr in ("labels", "targets"):
        if hasattr(dataset, attr) and not callable(getattr(dataset, attr)):
            return np.asarray(getattr(dataset, attr), dtype=np.int64)
    if hasattr(dataset, "corpus") and hasattr(dataset, "indices"):  # nni_emotionnas.features.prepared.StreamDataset
        return np.asarray(dataset.corpus.labels, dtype=np.int64)[np.asarray(dataset.indices, dtype=np.int64)]
    return np.array([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def class_weight_vector(
    setting: Union[str, Sequence[float]], labels: np.ndarray, num_classes: int
) -> Optional[list[float]]:
    """Cross-entropy class weights; `balanced` = n_samples / (n_classes * count), as sklearn defines it."""
    if isinstance(setting, str):
        if setting == "none":
            return None
        if setting != "balanced":
            raise ConfigError(f"class_weights: {setting!r} is not one of 'none', 'balanced' or a list")
        missing = sorted(set(range(num_classes)) - set(labels.tolist()))
        if missing:
            raise ConfigError(f"class_weights: balanced weights need every class in training data, missing {missing}")
        return compute_class_weight("balanced", classes=np.arange(num_classes), y=labels).tolist()
    if len(setting) != num_classes:
        raise ConfigError(f"class_weights: {len(setting)} weights given for {num_classes} classes")
    return [float(w) for w in setting]


@nni.trace
class SERModule(LightningModule):
    """Cross-entropy training; logs `train_loss` per epoch and `val_loss`, `val_ua`, `val_wa` per epoch.

    The model's `forward` gets the batched inputs as they are (tensor or dict) and returns logits.
    Under a one-shot strategy NNI wraps this module and calls `training_step` for both data halves.
    `report_final = False` leaves the final NNI metric to the caller (e.g. a trial reporting a dict).
    """

    report_final: bool = True

    def __init__(
        self,
        num_classes: int,
        learning_rate: float = 0.001,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        momentum: float = 0.9,
        scheduler: str = "none",
        max_epochs: int = 1,
        lr_min: float = 0.0,
        class_weights: Optional[list[float]] = None,
        augment: Optional[dict[str, Any]] = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.optimizer_name = optimizer
        self.momentum = momentum
        self.scheduler_name = scheduler
        self.max_epochs = max_epochs
        self.lr_min = lr_min
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.augment = AugmentConfig(**augment) if augment is not None else None
        self.augment_generator = torch.Generator().manual_seed(seed)
        self._val_preds: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.model(inputs)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=self.class_weights)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        if self.augment is not None:
            inputs = augment_batch(inputs, self.augment, self.augment_generator)
        loss = self._loss(self(inputs), targets)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(targets))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        inputs, targets = batch
        logits = self(inputs)
        self.log("val_loss", self._loss(logits, targets), on_epoch=True, prog_bar=True, batch_size=len(targets))
        self._val_preds.append(logits.argmax(dim=1).detach().cpu())
        self._val_targets.append(targets.detach().cpu())

    def on_validation_epoch_start(self) -> None:
        self._val_preds, self._val_targets = [], []

    def on_validation_epoch_end(self) -> None:
        if not self._val_preds:
            return
        scores = score(torch.cat(self._val_targets).numpy(), torch.cat(self._val_preds).numpy(), self.num_classes)
        self.log("val_ua", scores.ua, prog_bar=True)
        self.log("val_wa", scores.wa, prog_bar=True)
        if nni.get_current_parameter() is not None and not self.trainer.sanity_checking:
            nni.report_intermediate_result(scores.ua)

    def on_fit_end(self) -> None:
        metrics = self.trainer.callback_metrics
        if self.report_final and nni.get_current_parameter() is not None and "val_ua" in metrics:
            nni.report_final_result(float(metrics["val_ua"]))

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(
                params, lr=self.learning_rate, momentum=self.momentum, weight_decay=self.weight_decay
            )
        else:
            optimizer = torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        if self.scheduler_name != "cosine":
            return optimizer
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.max_epochs, eta_min=self.lr_min)
        return {"optimizer": optimizer, "lr_scheduler": schedule}


class TorchThreads(pl.Callback):
    """The fit's torch threads (`TrainConfig.threads` or the thread policy) while it runs; the caller's count
    comes back after."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._held = ExitStack()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._held.enter_context(torch_threads(self.threads))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._held.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._held.close()


def make_loader(dataset: Dataset, config: TrainConfig, shuffle: bool) -> DataLoader:
    """An NNI-traced DataLoader (so the evaluator stays serialisable for multi-trial strategies)."""
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        num_workers=config.num_workers,
        generator=generator if shuffle else None,
    )


def build_module(config: TrainConfig, num_classes: int, train_dataset: Dataset, augment: bool = False) -> SERModule:
    """`augment`: perturb training batches as `config.augment` says (final training; searches train clean)."""
    weights = class_weight_vector(config.class_weights, dataset_labels(train_dataset), num_classes)
    return SERModule(
        num_classes=num_classes,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        optimizer=config.optimizer,
        momentum=config.momentum,
        scheduler=config.scheduler,
        max_epochs=config.epochs,
        lr_min=config.lr_min,
        class_weights=weights,
        augment=dataclasses.asdict(config.augment) if augment and config.augment.enabled else None,
        seed=config.seed,
    )


def build_evaluator(
    train_dataset: Dataset,
    val_dataset: Optional[Dataset],
    num_classes: int,
    config: TrainConfig,
    *,
    shuffle_val: bool = False,
    callbacks: Optional[list] = None,
    logger: Any = False,
    default_root_dir: Optional[str] = None,
    enable_checkpointing: bool = False,
    augment: bool = False,
    work: Work = "stream",
) -> Lightning:
    """NNI `Lightning` evaluator over an `SERModule`; GPU when present (accelerator `auto`), CPU otherwise.

    For DARTS pass the weight half as `train_dataset` and the architecture half as `val_dataset` with
    `shuffle_val=True`: NNI's DARTS draws its architecture batches from the evaluator's val dataloader.
    `work` names the kind of work for the thread policy (`config.threads` wins when set).
    """
    trainer = Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        precision=config.precision,
        devices=1,
        logger=logger,
        callbacks=[*(callbacks or []), TorchThreads(config.threads or policy_threads(work))],
        enable_checkpointing=enable_checkpointing,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=config.limit_train_batches,
        default_root_dir=default_root_dir,
    )
    val_loader = make_loader(val_dataset, config, shuffle=shuffle_val) if val_dataset is not None else None
    return Lightning(
        build_module(config, num_classes, train_dataset, augment),
        trainer,
        train_dataloaders=make_loader(train_dataset, config, shuffle=True),
        val_dataloaders=val_loader,
    )


@torch.no_grad()
def predict_logits(model: torch.nn.Module, dataset: Dataset, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of a whole dataset in eval mode, on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs, labels = [], []
    for inputs, targets in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
        inputs = {k: v.to(device) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.to(device)
        outputs.append(model(inputs).float().cpu())
        labels.append(targets)
    model.train(was_training)
    return torch.cat(outputs).numpy(), torch.cat(labels).numpy()
