"""`train.fusion_init: crossfit`: a fold's fusions trained on its streams' held-out outputs.

Each stream network leaves, beside its `model.pt`, the held-out log-probabilities of its copies trained
without each speaker group (`HELD_OUT`, `evaluation.heldout`); the linear baselines named in
`run.supplementary` give theirs here. The fusion head learns from those rows (`evaluation.stacking`) and is
tested on the outputs of the fold's own streams; its `model.pt` holds the streams and the head together
(`models.output_fusion.StackedFusion`) for `predict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.pipeline import Pipeline

from nni_emotionnas.config.experiment import SINGLE_STREAMS
from nni_emotionnas.config.training import TrainConfig
from nni_emotionnas.corpora.folds import Fold
from nni_emotionnas.evaluation.heldout import HeldOutOutputs, held_out_outputs
from nni_emotionnas.evaluation.stacking import HeadChoice, choose_head, fit_head, head_logits, stream_order
from nni_emotionnas.models.output_fusion import LinearStream, StackedFusion

if TYPE_CHECKING:
    from nni_emotionnas.evaluation.crossval import CrossValidation

HELD_OUT = "heldout.npz"  # in a stream's variant folder: its held-out outputs over the fold's non-test speakers


@dataclass
class StackedFit:
    model: StackedFusion
    choice: HeadChoice
    test_probs: np.ndarray
    test_labels: np.ndarray


def class_logits(classifier: Pipeline, features: np.ndarray, num_classes: int) -> np.ndarray:
    """Log-probabilities in the corpus' class columns; a class absent from the classifier's training data
    gets a log-probability well under every other (it cannot be predicted)."""
    present = np.log(np.clip(classifier.predict_proba(features), 1e-12, None))
    out = np.full((len(features), num_classes), present.min() - 10.0)
    out[:, classifier.classes_] = present
    return out


def linear_stream(classifier: Pipeline, num_classes: int) -> LinearStream:
    """A fitted scaler + logistic regression as tensors (`LinearStream`) with the same class probabilities."""
    scaler, regression = classifier[0], classifier[-1]
    coef, intercept = regression.coef_, regression.intercept_
    if coef.shape[0] == 1:  # two classes: sklearn keeps the second class's logit against the first
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    stream = LinearStream(coef.shape[1], num_classes)
    rows = torch.as_tensor(regression.classes_, dtype=torch.long)
    with torch.no_grad():
        stream.mean.copy_(torch.from_numpy(scaler.mean_))
        stream.scale.copy_(torch.from_numpy(scaler.scale_))
        stream.bias.fill_(float(intercept.min()) - 10.0)
        stream.weight[rows] = torch.from_numpy(coef)
        stream.bias[rows] = torch.from_numpy(intercept)
    return stream


def baseline_held_out(
    cv: CrossValidation, fold: Fold, make: Callable[[], Pipeline], features: np.ndarray,
) -> tuple[HeldOutOutputs, Pipeline]:
    """Held-out outputs of a linear baseline, and the baseline fitted on all the fold's non-test speakers."""
    from threadpoolctl import threadpool_limits

    labels, classes = cv.corpus.labels, len(cv.corpus.classes)
    speakers = [u.speaker for u in cv.corpus.utterances]
    learn = list(fold.split("train+val"))

    def fit_and_predict(train: np.ndarray, held: np.ndarray) -> np.ndarray:
        return class_logits(make().fit(features[train], labels[train]), features[held], classes)

    with threadpool_limits(limits=1, user_api="blas"):
        full = make().fit(features[learn], labels[learn])
        test = class_logits(full, features[list(fold.test)], classes)
        outputs = held_out_outputs(fold, speakers, labels, cv.config.crossfit_folds, fit_and_predict, test)
    return outputs, full


def fit_stacked(cv: CrossValidation, fold: Fold, variant: str, seed: int, config: TrainConfig) -> StackedFit:
    """Chooses and trains `variant`'s head on the fold's held-out outputs; tests it on the fold's streams."""
    streams = {s: HeldOutOutputs.load(cv.variant_dir(fold, s, seed) / HELD_OUT) for s in SINGLE_STREAMS}
    linear = {name: cv.supplementary_held_out(fold, name) for name in cv.config.supplementary}
    held = {**streams, **{name: outputs for name, (outputs, _) in linear.items()}}
    reference = streams[SINGLE_STREAMS[0]]
    for name, outputs in held.items():
        if not np.array_equal(outputs.learn, reference.learn) or not np.array_equal(outputs.groups, reference.groups):
            raise RuntimeError(f"held-out outputs of {name} on fold {fold.name} use other speaker groups")
    labels, classes = cv.corpus.labels[reference.learn], len(cv.corpus.classes)
    candidates = SINGLE_STREAMS if cv.config.dominant == "auto" else (cv.config.dominant,)
    supplementary = list(cv.config.supplementary)
    rows = {name: outputs.outputs for name, outputs in held.items()}
    balanced = config.class_weights == "balanced"
    choice = choose_head(variant, candidates, supplementary, rows, labels, reference.groups, classes, balanced)
    order = stream_order(choice.dominant, candidates, supplementary)
    head = fit_head(variant, order, rows, labels, classes, choice.penalty, balanced)
    test_logits = head_logits(head, {name: outputs.test for name, outputs in held.items()})
    networks = {}
    for stream in SINGLE_STREAMS:
        net = cv.stream_model(fold, stream)
        net.load_state_dict(torch.load(cv.variant_dir(fold, stream, seed) / "model.pt", map_location="cpu",
                                       weights_only=True))
        networks[stream] = net
    model = StackedFusion(networks, {name: linear_stream(fitted, classes) for name, (_, fitted) in linear.items()},
                          head.float())
    probs = torch.softmax(torch.from_numpy(test_logits), dim=1).numpy()
    return StackedFit(model, choice, probs, cv.corpus.labels[list(fold.test)])
