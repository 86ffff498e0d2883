"""Training a fusion head on held-out stream outputs, its settings chosen by cross-validation over them.

The head is small (a few class-by-class maps) and learns full-batch (L-BFGS) from a few hundred rows, with a
penalty on its distance from its start. Three kinds of start are tried: each candidate dominant stream
alone, and the mean of all streams; then, from each, a path of weaker and weaker penalties (infinite: the
start untouched). Start and penalty are chosen together by the balanced accuracy of the head over the
speaker groups the held-out outputs came from (trained on the other groups, scored on each in turn), so the
choice rests on every non-test speaker and never on a test one; ties go to a single stream over the mean, to
the paper's dominant stream (deep) and to the stronger penalty.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils.class_weight import compute_class_weight

from nni_emotionnas.models.output_fusion import OutputFusionHead

PENALTIES = (math.inf, 10.0, 1.0, 0.1, 0.01)  # distance-from-start penalties tried; inf keeps the start
PAPER_DOMINANT = "deep"


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
) -> list[OutputFusionHead]:
    """Heads over `streams` (dominant first) trained on `inputs` (stream -> rows x classes log-probabilities),
    one per penalty (strongest first, `inf` the start itself), each started from the one before: the path is
    cheap, and the head for a penalty is the same whether it was reached for cross-validation or at the end.
    `pooled` starts from the mean of all streams instead of the first one alone."""
    torch.manual_seed(0)
    head = OutputFusionHead(mode, streams, num_classes).double()
    if pooled:
        head.pool()
    start = [p.detach().clone() for p in head.parameters()]
    x = [torch.from_numpy(inputs[s]).double() for s in streams]
    y = torch.from_numpy(labels).long()
    present = np.unique(labels)
    weights = np.ones(num_classes)
    if balanced:
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
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


def fit_head(
    mode: str, streams: Sequence[str], inputs: dict[str, np.ndarray], labels: np.ndarray, num_classes: int,
    penalty: float, balanced: bool = True, pooled: bool = False,
) -> OutputFusionHead:
    """The head of `fit_path` for `penalty` (one of `PENALTIES`), reached along the same path."""
    path = PENALTIES[:PENALTIES.index(penalty) + 1]
    return fit_path(mode, streams, inputs, labels, num_classes, path, balanced, pooled)[-1]


def stream_order(dominant: str, streams: Sequence[str]) -> list[str]:
    """The head's streams: the dominant one first, then the others in their order."""
    return [dominant, *[s for s in streams if s != dominant]]


@torch.no_grad()
def head_logits(head: OutputFusionHead, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return head([torch.from_numpy(inputs[s]).double() for s in head.streams]).numpy()


def choose_head(
    mode: str, candidates: Sequence[str], streams: Sequence[str], inputs: dict[str, np.ndarray],
    labels: np.ndarray, groups: np.ndarray, num_classes: int, balanced: bool = True, pooled_start: bool = True,
) -> HeadChoice:
    """The dominant stream (one of `candidates`, all of them in `streams`), start (that stream alone or, with
    `pooled_start`, the mean of all) and penalty with the best grouped cross-validated UA."""
    scores: dict[str, float] = {}
    best: tuple[tuple, str, bool, float] | None = None
    first = PAPER_DOMINANT if PAPER_DOMINANT in candidates else candidates[0]
    starts = [(dominant, False) for dominant in candidates] + ([(first, True)] if pooled_start else [])
    for dominant, pooled in starts:
        ordered = stream_order(dominant, streams)
        predicted = np.empty((len(PENALTIES), len(labels)), dtype=np.int64)
        for g in np.unique(groups):
            train, held = groups != g, groups == g
            heads = fit_path(mode, ordered, {s: inputs[s][train] for s in ordered}, labels[train], num_classes,
                             PENALTIES, balanced, pooled)
            for i, head in enumerate(heads):
                predicted[i, held] = head_logits(head, {s: inputs[s][held] for s in ordered}).argmax(axis=1)
        for order, penalty in enumerate(PENALTIES):
            ua = float(balanced_accuracy_score(labels, predicted[order]))
            scores[f"{'pooled' if pooled else dominant} {penalty:g}"] = ua
            rank = (round(ua, 9), not pooled, dominant == PAPER_DOMINANT, -order)
            if best is None or rank > best[0]:
                best = (rank, dominant, pooled, penalty)
    assert best is not None
    return HeadChoice(best[1], best[3], scores, best[2])


