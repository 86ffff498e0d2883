"""Training a fusion head on held-out stream outputs, its settings chosen by cross-validation over them.

The head is small (a few class-by-class maps) and learns full-batch (L-BFGS) from a few hundred rows. First
each stream's log-probabilities are calibrated by one temperature (fitted on the same rows): a network that
fits its training speakers is overconfident next to a logistic regression, and would otherwise outvote it.
The head starts as the mean of all calibrated streams (`dominant: auto`; no stream can sink it by being
picked wrongly), or as a named dominant stream alone. With a `margin` it may then move along a path of
weaker and weaker penalties on its distance from that start, and does so only when a penalty's balanced
accuracy over the speaker groups the outputs came from (trained on the other groups, scored on each in turn)
beats the start's by the margin. Without one it keeps its start: on corpora of a few dozen speakers that
cross-validation is noisy (docs/results.md).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils.class_weight import compute_class_weight

from nni_emotionnas.models.output_fusion import OutputFusionHead

PENALTIES = (math.inf, 10.0, 1.0, 0.1, 0.01)  # distance-from-start penalties tried; inf keeps the start
PAPER_DOMINANT = "deep"  # named first in a pooled head (it weighs as much as any other stream there)
TEMPERATURE_BOUNDS = (math.exp(-3), math.exp(5))


@dataclass
class HeadChoice:
    dominant: str  # the stream named first (with `pooled`, every stream weighs alike at the start)
    penalty: float
    cv_ua: dict[str, float]  # "<dominant or pooled> <penalty>" -> balanced accuracy over the groups
    pooled: bool = False

    @property
    def left_start(self) -> bool:
        return math.isfinite(self.penalty)

    @property
    def step(self) -> str:
        """What the kept head is, for the report: its start, and the penalty it was trained with."""
        start = "pooled" if self.pooled else "start"
        return f"{start}, penalty {self.penalty:g}" if self.left_start else start


def fit_path(
    mode: str, streams: Sequence[str], inputs: dict[str, np.ndarray], labels: np.ndarray, num_classes: int,
    penalties: Sequence[float], balanced: bool = True, pooled: bool = False,
    temperatures: dict[str, float] | None = None,
) -> list[OutputFusionHead]:
    """Heads over `streams` (dominant first) trained on `inputs` (stream -> rows x classes log-probabilities),
    one per penalty (strongest first, `inf` the start itself), each started from the one before: the path is
    cheap, and the head for a penalty is the same whether it was reached for cross-validation or at the end.
    `pooled` starts from the mean of all streams instead of the first one alone. Every stream is calibrated
    first (`fit_temperature` on `inputs`, or the given `temperatures`)."""
    torch.manual_seed(0)
    head = OutputFusionHead(mode, streams, num_classes).double()
    if pooled:
        head.pool()
    start = [p.detach().clone() for p in head.parameters()]
    x = [torch.from_numpy(inputs[s]).double() for s in streams]
    y = torch.from_numpy(labels).long()
    weights = class_weights(labels, num_classes, balanced)
    if temperatures is None:
        temperatures = {s: fit_temperature(inputs[s], labels, weights) for s in streams}
    head.temperature.copy_(torch.tensor([temperatures[s] for s in streams]))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(weights).double())
    heads = []
    for penalty in penalties:
        if math.isfinite(penalty):
            optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=20, tolerance_grad=1e-5,
                                          tolerance_change=1e-8, line_search_fn="strong_wolfe")

            def closure(optimizer: torch.optim.LBFGS = optimizer, penalty: float = penalty) -> torch.Tensor:
                optimizer.zero_grad()
                distance = sum(((p - p0) ** 2).sum() for p, p0 in zip(head.parameters(), start))
                loss = loss_fn(head(x), y) + penalty * distance / len(y)
                loss.backward()
                return loss

            optimizer.step(closure)
        heads.append(copy.deepcopy(head).eval())
    return heads


def class_weights(labels: np.ndarray, num_classes: int, balanced: bool) -> np.ndarray:
    """Per class: inverse frequency (balanced) or 1; absent classes 1 (they carry no rows)."""
    weights = np.ones(num_classes)
    if balanced:
        present = np.unique(labels)
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def calibrate(log_probs: np.ndarray, labels: np.ndarray, num_classes: int, balanced: bool) -> float:
    """`fit_temperature` with the class weights of `labels`."""
    return fit_temperature(log_probs, labels, class_weights(labels, num_classes, balanced))


def fit_temperature(log_probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """The temperature T minimising the class-weighted log-loss of log_softmax(log_probs / T) (one number:
    too few to overfit, enough to undo a network's overconfidence)."""
    x = torch.from_numpy(log_probs).double()
    y = torch.from_numpy(labels).long()
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(weights).double())
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    best = minimize_scalar(lambda log_t: float(loss_fn(x / math.exp(log_t), y)), bounds=(low, high),
                           method="bounded", options={"xatol": 1e-4})
    return math.exp(best.x)


def fit_head(
    mode: str, streams: Sequence[str], inputs: dict[str, np.ndarray], labels: np.ndarray, num_classes: int,
    penalty: float, balanced: bool = True, pooled: bool = False, temperatures: dict[str, float] | None = None,
) -> OutputFusionHead:
    """The head of `fit_path` for `penalty` (one of `PENALTIES`), reached along the same path."""
    path = PENALTIES[:PENALTIES.index(penalty) + 1]
    return fit_path(mode, streams, inputs, labels, num_classes, path, balanced, pooled, temperatures)[-1]


def stream_order(dominant: str, streams: Sequence[str]) -> list[str]:
    """The head's streams: the dominant one first, then the others in their order."""
    return [dominant, *[s for s in streams if s != dominant]]


@torch.no_grad()
def head_logits(head: OutputFusionHead, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return head([torch.from_numpy(inputs[s]).double() for s in head.streams]).numpy()


def choose_head(
    mode: str, streams: Sequence[str], inputs: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray,
    num_classes: int, balanced: bool = True, dominant: str | None = None, margin: float | None = None,
) -> HeadChoice:
    """The head's start (the mean of all `streams`, or `dominant` alone) and penalty: `inf` (the start as it
    is) unless a finite penalty's grouped cross-validated UA beats the start's by `margin` (None: no
    cross-validation, the start is kept)."""
    first = dominant or (PAPER_DOMINANT if PAPER_DOMINANT in streams else streams[0])
    ordered = stream_order(first, streams)
    pooled = dominant is None
    if margin is None:
        return HeadChoice(first, math.inf, {}, pooled)
    predicted = np.empty((len(PENALTIES), len(labels)), dtype=np.int64)
    for g in np.unique(groups):
        train, held = groups != g, groups == g
        heads = fit_path(mode, ordered, {s: inputs[s][train] for s in ordered}, labels[train], num_classes,
                         PENALTIES, balanced, pooled)
        for i, head in enumerate(heads):
            predicted[i, held] = head_logits(head, {s: inputs[s][held] for s in ordered}).argmax(axis=1)
    start = "pooled" if pooled else first
    scores = {f"{start} {p:g}": float(balanced_accuracy_score(labels, predicted[i])) for i, p in enumerate(PENALTIES)}
    penalty = math.inf
    best = scores[f"{start} inf"] + margin
    for p in PENALTIES[1:]:
        if scores[f"{start} {p:g}"] >= best:
            penalty, best = p, scores[f"{start} {p:g}"]
    return HeadChoice(first, penalty, scores, pooled)
