"""Training settings as the experiment file gives them (kept free of torch/NNI imports for config loading)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union


@dataclass
class TrainConfig:
    """How a network is trained (search supernet, trial or final model); a section of the experiment file.

    `class_weights`: `none`, `balanced` (inverse class frequency of the training labels) or one weight per
    class. `scheduler`: `cosine` anneals the weights' learning rate to `lr_min` over `epochs` (DARTS'
    recipe). `limit_train_batches` caps the batches per epoch (quick runs). `threads`: torch intra-op threads
    while the network trains (null: torch's default, one per core); running N nnictl trials at once on one
    machine, give each cores / N, or the trials' thread pools fight over the cores.
    """

    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.001
    lr_min: float = 0.0
    weight_decay: float = 0.0003
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    scheduler: Literal["none", "cosine"] = "none"
    class_weights: Union[Literal["none", "balanced"], list[float]] = "none"
    num_workers: int = 0
    seed: int = 0
    accelerator: str = "auto"
    limit_train_batches: Optional[int] = None
    progress_bar: bool = False
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1 (or null for torch's default), got {self.threads}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class ModelConfig:
    """Which network each stream trains: the searched cells (`darts`) or a paper Table 2 baseline."""

    spectrogram: Literal["darts", "resnet18", "resnet_small"] = "darts"
    deep: str = "searched"
