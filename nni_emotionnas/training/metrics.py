"""SER metrics: UA (mean per-class recall, the paper's main number) and WA (accuracy), via scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score


@dataclass
class SERScores:
    """Scores of one set of predictions; `confusion[i][j]` counts true class i predicted as j."""

    ua: float
    wa: float
    recall: list[float] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"ua": self.ua, "wa": self.wa, "recall": self.recall, "confusion": self.confusion}


def score(y_true: ArrayLike, y_pred: ArrayLike, num_classes: Optional[int] = None) -> SERScores:
    """UA, WA, per-class recall and confusion matrix over all `num_classes` labels (absent ones count 0)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        raise ValueError("cannot score an empty set of predictions")
    n = num_classes if num_classes is not None else int(max(y_true.max(), y_pred.max())) + 1
    labels = list(range(n))
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return SERScores(
        ua=float(balanced_accuracy_score(y_true, y_pred)),  # mean recall over the classes present in `y_true`
        wa=float(accuracy_score(y_true, y_pred)),
        recall=[float(r) for r in recall],
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    )
