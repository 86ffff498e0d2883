"""Fitting the linear baselines (probes, `classic`) on a fold, and their fusion.

A baseline selects nothing on validation data, so it learns from every speaker the fold does not test
(training and validation speakers), as the SER literature's leave-one-speaker-out baselines do; its
validation scores are therefore not reported. The pipeline's scaler is fitted on those speakers only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from nni_emotionnas.corpora.folds import Fold


@dataclass
class BaselineFit:
    """Test-split class probabilities (rows in `fold.test` order) and the classifier's parameter count."""

    test_probs: np.ndarray
    params: int


def fit_indices(fold: Fold) -> list[int]:
    """The utterances a baseline learns from: every speaker the fold does not test."""
    return list(fold.split("train+val"))


def fit_on_fold(classifier: Pipeline, features: np.ndarray, labels: np.ndarray, fold: Fold) -> BaselineFit:
    """`features`/`labels` indexed like the corpus' utterances; fits on `fit_indices(fold)`, scores `fold.test`.
    The training split holds every class (the folds are checked), so probability columns are the classes."""
    learn = fit_indices(fold)
    # one BLAS thread: lbfgs on a few hundred rows gains nothing from more, and spinning threads slow a shared machine
    with threadpool_limits(limits=1, user_api="blas"):
        classifier.fit(features[learn], labels[learn])
        probs = classifier.predict_proba(features[list(fold.test)])
    linear = classifier[-1]
    return BaselineFit(probs, int(linear.coef_.size + linear.intercept_.size))


def mean_probabilities(members: Sequence[BaselineFit]) -> BaselineFit:
    """`probe_fusion`: the mean of the members' class probabilities (late fusion without any training)."""
    return BaselineFit(np.mean([m.test_probs for m in members], axis=0), sum(m.params for m in members))
