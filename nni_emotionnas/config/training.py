"""Training settings as the experiment file gives them (kept free of torch/NNI imports for config loading)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, Optional, Union


@dataclass
class AugmentConfig:
    """SpecAugment-style perturbation of training batches (spectrogram: frequency rows x time columns; deep
    frames: time only): `time_shift` rolls each example by up to that many columns/frames, then `masks`
    frequency bands of up to `freq_width` rows and `masks` time spans of up to `time_width` columns are set
    to zero (the training mean, once inputs are standardised). `enabled: false` trains on clean inputs."""

    enabled: bool = True
    streams: list[Literal["spectrogram", "deep"]] = field(default_factory=lambda: ["spectrogram"])
    masks: int = 2
    freq_width: int = 8
    time_width: int = 8
    time_shift: int = 4

    def __post_init__(self) -> None:
        for name in ("masks", "freq_width", "time_width", "time_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


def require_finite(rates: dict[str, Optional[float]]) -> None:
    """NaN passes every comparison, and an infinite rate trains every network at chance: both are refused."""
    for name, value in rates.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")


@dataclass
class SearchConfig:
    """How a network is trained while it is searched (supernet or trial): the `search` section, and the part
    of `train` that both share.

    `class_weights`: `none`, `balanced` (inverse class frequency of the training labels) or one weight per
    class. `scheduler`: `cosine` anneals the weights' learning rate to `lr_min` over `epochs` (DARTS'
    recipe). `limit_train_batches` caps the batches per epoch (quick runs). `threads`: torch intra-op threads
    while the network trains (null: the thread policy of `nni_emotionnas.threads`: 1 for stream networks,
    every core for a search step, `EMOTIONNAS_THREADS` for all); running N nnictl trials at once on one
    machine, give each cores / N, or the trials' thread pools fight over the cores. `accelerator` and
    `precision` (`32`, `16-mixed`, `bf16-mixed`) go to Lightning's Trainer: `auto` trains on a GPU when there
    is one. `checkpoint_cells` (spectrogram networks only) recomputes each cell's activations in backward:
    a fraction of the memory a step holds, for one more forward per step.
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
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = "auto"  # Lightning's names
    precision: Literal[32, "32", "16-mixed", "bf16-mixed"] = "32"
    checkpoint_cells: bool = False
    limit_train_batches: Optional[int] = None
    progress_bar: bool = False
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        require_finite({"lr": self.lr, "lr_min": self.lr_min, "weight_decay": self.weight_decay,
                        "momentum": self.momentum})
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1 (or null for the thread policy), got {self.threads}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.lr_min < self.lr:
            raise ValueError(f"lr_min must be at least 0 and below lr ({self.lr}), got {self.lr_min}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must not be negative, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")


@dataclass
class TrainConfig(SearchConfig):
    """How a fixed network is trained (the `train` section): the search's keys and these.

    `augment` perturbs training batches only (never validation or test). `patience` stops a fit after that many
    epochs without a better validation UA (0: run every epoch); the best-validation-UA weights are kept either way.
    The stream networks named in `probe_start` (which need the input-statistics skip) start as their own linear
    probe (`nni_emotionnas.evaluation.probe_start`), the start kept as a candidate; the others train from their
    random initial weights. `refit: true` trains every network a second time, from the same start, on the training
    and validation speakers together for the epochs the first fit chose on the validation speakers (what the probes
    learn from; reported validation scores stay the first fit's); a list of streams refits those stream networks
    only (and the fusions, when it names any). `fusion_init` says how fusion variants train: `crossfit` trains the
    fusion head alone on held-out outputs of the fold's streams (`nni_emotionnas.evaluation.heldout`,
    `run.crossfit_folds` speaker groups) and tests it on the fold's streams; `streams` starts them from the fold's
    trained stream networks, first the head alone with the streams frozen for `fusion_head_epochs` at
    `fusion_head_lr` (null: `lr`), then everything at `fusion_finetune_lr` for `fusion_finetune_epochs`
    (`nni_emotionnas.evaluation.fusion_fit`); `scratch` trains the whole two-stream model jointly from random
    weights. `stream_lr` gives a stream network its own learning rate (its fit and refit) where it should differ
    from `lr` (a network started as its probe fine-tunes from a fitted classifier).
    """

    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig())
    patience: int = 0
    probe_start: list[Literal["spectrogram", "deep"]] = field(default_factory=list)
    refit: Union[bool, list[Literal["spectrogram", "deep"]]] = False
    fusion_init: Literal["crossfit", "streams", "scratch"] = "crossfit"
    fusion_head_epochs: int = 10
    fusion_head_lr: Optional[float] = None
    fusion_finetune_epochs: int = 10
    fusion_finetune_lr: float = 0.0001
    stream_lr: dict[Literal["spectrogram", "deep"], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_finite({"fusion_head_lr": self.fusion_head_lr, "fusion_finetune_lr": self.fusion_finetune_lr,
                        **{f"stream_lr.{stream}": lr for stream, lr in self.stream_lr.items()}})
        if self.patience < 0 or self.fusion_head_epochs < 0 or self.fusion_finetune_epochs < 0:
            raise ValueError("patience, fusion_head_epochs and fusion_finetune_epochs must not be negative")
        if not (self.fusion_head_epochs or self.fusion_finetune_epochs):
            raise ValueError("fusion_head_epochs and fusion_finetune_epochs: at least one must be positive")
        if self.fusion_finetune_lr <= 0:
            raise ValueError(f"fusion_finetune_lr must be positive, got {self.fusion_finetune_lr}")
        if self.fusion_head_lr is not None and self.fusion_head_lr <= 0:
            raise ValueError(f"fusion_head_lr must be positive (or null: lr), got {self.fusion_head_lr}")
        for stream, lr in self.stream_lr.items():
            if not self.lr_min < lr:
                raise ValueError(f"stream_lr.{stream} must be positive and above lr_min ({self.lr_min}), got {lr}")

    def refits(self, variant: str) -> bool:
        """Whether `variant`'s network trains again on training + validation speakers (`refit`)."""
        if isinstance(self.refit, bool):
            return self.refit
        return variant in self.refit if variant in ("spectrogram", "deep") else bool(self.refit)

    def for_stream(self, stream: str) -> TrainConfig:
        """These settings with `stream`'s own learning rate (`stream_lr`), for that stream network's fits."""
        return replace(self, lr=self.stream_lr.get(stream, self.lr))


@dataclass
class ModelConfig:
    """Which network each stream trains: the searched cells (`darts`) or a paper Table 2 baseline."""

    spectrogram: Literal["darts", "resnet18", "resnet_small"] = "darts"
    deep: str = "searched"
