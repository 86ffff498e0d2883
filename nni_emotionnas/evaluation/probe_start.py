"""`train.probe_start`: a stream network with the input-statistics skip starts as its own probe.

Trained from random weights on a few hundred utterances, a stream network fits its cell features to the
training speakers long before its classifier has learnt what the skip already carries (the searched cells'
embedding is ten times the skip's width; docs/experiments.md). Started as the probe instead -- the skip's
batch norm holding the training utterances' statistics (the probe's scaler), the classifier's skip columns the
probe's logistic regression, the cell features' columns at zero -- the network is exactly the probe before its
first step, training adds the cells to it, and with the start kept as a candidate
(`fit_fixed(keep_initial=True)`) the validation UA can only keep or improve the probe's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from nni_emotionnas.config.training import TrainConfig
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.evaluation.probe import class_rows, probe_classifier
from nni_emotionnas.spaces.pooling import StatisticsPooling
from nni_emotionnas.training.evaluator import predict_logits


def skip_statistics(model: nn.Module, dataset: Dataset, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw mean+std statistics the network's skip computes for every utterance, labels), in eval mode."""
    captured: list[torch.Tensor] = []

    def keep_raw(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        captured.append(StatisticsPooling.forward(module, *args).detach().double().cpu())

    handle = model.input_statistics.register_forward_hook(keep_raw)
    try:
        _, labels = predict_logits(model, dataset, batch_size)
    finally:
        handle.remove()
    return torch.cat(captured).numpy(), labels


@torch.no_grad()
def start_from_probe(model: nn.Module, train_dataset: Dataset, seed: int, batch_size: int) -> None:
    """Sets `model`'s skip normalisation and classifier to the probe fitted on `train_dataset` (in place)."""
    if getattr(model, "input_statistics", None) is None:
        raise ConfigError("train.probe_start: needs the stream's input-statistics skip "
                          "(set input_statistics: true in its space file)")
    statistics, labels = skip_statistics(model, train_dataset, batch_size)
    probe = probe_classifier(seed).fit(statistics, labels)
    scaler, classifier = probe[0], model.classifier
    norm = model.input_statistics.norm
    norm.running_mean.copy_(torch.from_numpy(scaler.mean_))
    # the scaler divides by its scale (1 for a constant feature); the batch norm by sqrt(var + eps)
    norm.running_var.copy_(torch.from_numpy(np.maximum(scaler.scale_**2 - norm.eps, 0.0)))
    weight, bias = class_rows(probe[-1], classifier.out_features)
    classifier.weight.zero_()
    classifier.weight[:, -statistics.shape[1]:] = torch.from_numpy(weight)
    classifier.bias.copy_(torch.from_numpy(bias))


def start_stream(model: nn.Module, stream: str, train_dataset: Dataset, config: TrainConfig) -> bool:
    """Starts a freshly built `stream` network as its probe when `config.probe_start` names the stream; True
    when it did (so the caller keeps the start as a candidate)."""
    if stream not in config.probe_start:
        return False
    start_from_probe(model, train_dataset, config.seed, config.batch_size)
    return True
