"""`train.fusion_init: crossfit`: a fold's fusions trained on its streams' held-out outputs.

Each stream network leaves, beside its `model.pt`, the held-out log-probabilities of its copies trained
without each speaker group (`HELD_OUT`, `evaluation.heldout`); the linear baselines named in
`run.supplementary` give theirs here. The fusion head learns from those rows (`evaluation.stacking`) and is
tested on the outputs of the fold's own streams; its `model.pt` holds the streams and the head together
(`models.output_fusion.StackedFusion`) for `predict`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from torch import nn

from nni_emotionnas.corpora.folds import Fold
from nni_emotionnas.evaluation.heldout import HeldOutOutputs, held_out_outputs
from nni_emotionnas.evaluation.probe import class_rows
from nni_emotionnas.evaluation.stacking import HeadChoice, calibrate, choose_head, fit_head, head_logits, stream_order
from nni_emotionnas.models.output_fusion import LinearStream, OutputFusionHead, StackedFusion

HELD_OUT = "heldout.npz"  # in a stream's variant folder: its held-out outputs over the fold's non-test speakers


def class_logits(classifier: Pipeline, features: np.ndarray, num_classes: int) -> np.ndarray:
    """Log-probabilities in the corpus' class columns; a class absent from the classifier's training data
    gets a log-probability well under every other (it cannot be predicted)."""
    present = np.log(np.clip(classifier.predict_proba(features), 1e-12, None))
    out = np.full((len(features), num_classes), present.min() - 10.0)
    out[:, classifier.classes_] = present
    return out


def linear_stream(classifier: Pipeline, num_classes: int) -> LinearStream:
    """A fitted scaler + logistic regression as tensors (`LinearStream`) with the same class probabilities."""
    scaler = classifier[0]
    weight, bias = class_rows(classifier[-1], num_classes)
    stream = LinearStream(weight.shape[1], num_classes)
    with torch.no_grad():
        for name, value in (("mean", scaler.mean_), ("scale", scaler.scale_), ("weight", weight), ("bias", bias)):
            getattr(stream, name).copy_(torch.from_numpy(value))
    return stream


def baseline_held_out(
    fold: Fold, speakers: Sequence[str], labels: np.ndarray, num_classes: int, groups: int,
    make: Callable[[], Pipeline], features: np.ndarray,
) -> tuple[HeldOutOutputs, Pipeline]:
    """Held-out outputs of a linear baseline, and the baseline fitted on all the fold's non-test speakers."""
    from threadpoolctl import threadpool_limits

    learn = list(fold.split("train+val"))

    def fit_and_predict(train: np.ndarray, held: np.ndarray) -> np.ndarray:
        return class_logits(make().fit(features[train], labels[train]), features[held], num_classes)

    with threadpool_limits(limits=1, user_api="blas"):
        full = make().fit(features[learn], labels[learn])
        test = class_logits(full, features[list(fold.test)], num_classes)
        outputs = held_out_outputs(fold, speakers, labels, groups, fit_and_predict, test)
    return outputs, full


def fit_stacked(
    mode: str, held: dict[str, HeldOutOutputs], dominant: str | None, labels: np.ndarray, num_classes: int,
    balanced: bool, margin: float,
) -> tuple[OutputFusionHead, HeadChoice, np.ndarray]:
    """Chooses and trains a `mode` head on the held-out outputs of `held` (streams by name; it starts as their
    mean, or as `dominant` alone); returns it, the choice and its test class probabilities. Each stream is
    calibrated on its own held-out rows; a head that may move (`margin`) needs the same rows from every stream."""
    reference = next(iter(held.values()))
    for name, outputs in held.items():
        same = np.array_equal(outputs.learn, reference.learn) and np.array_equal(outputs.groups, reference.groups)
        if margin is not None and not same:
            raise RuntimeError(f"held-out outputs of {name} use other utterances or speaker groups")
    temperatures = {name: calibrate(outputs.outputs, labels[outputs.learn], num_classes, balanced)
                    for name, outputs in held.items()}
    rows = {name: outputs.outputs for name, outputs in held.items()}
    learn_labels = labels[reference.learn]
    choice = choose_head(mode, list(held), rows, learn_labels, reference.groups, num_classes, balanced, dominant,
                         margin)
    head = fit_head(mode, stream_order(choice.dominant, list(held)), rows, learn_labels, num_classes, choice.penalty,
                    balanced, choice.pooled, temperatures)
    test_logits = head_logits(head, {name: outputs.test for name, outputs in held.items()})
    return head, choice, torch.softmax(torch.from_numpy(test_logits), dim=1).numpy()


def stacked_model(
    networks: dict[str, nn.Module], linear: dict[str, Pipeline], head: OutputFusionHead, num_classes: int,
) -> StackedFusion:
    """The fold's trained streams, its fitted linear streams and the head, as one model for `model.pt`."""
    return StackedFusion(networks, {name: linear_stream(fitted, num_classes) for name, fitted in linear.items()},
                         head.float())
