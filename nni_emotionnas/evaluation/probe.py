"""The `probe` baselines: a logistic regression on mean+std statistics of what a stream sees.

Every run trains one per stream beside the searched models, on the same folds, so a report shows at a
glance whether search and training bought anything over a linear classifier on the same features. The
statistics are standardised with a scaler fitted on the fold's training speakers only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from nni_emotionnas.features.prepared import PreparedCorpus, StreamDataset


def utterance_statistics(corpus: PreparedCorpus, fold_name: str, indices: Sequence[int], stream: str) -> np.ndarray:
    """Per utterance: the mean and std over time of each spectrogram row, or of each deep-frame dimension
    over the valid frames, of the stream's input exactly as its network reads it in this fold (unified
    frames, standardised as `features.standardize` says)."""
    dataset = StreamDataset(corpus, indices, stream, fold_name)
    rows = []
    for item in range(len(dataset)):
        inputs, _ = dataset[item]
        if stream == "spectrogram":
            values = inputs[0].numpy().T.astype(np.float64)  # time x rows
        else:
            values = inputs["frames"].numpy()[inputs["mask"].numpy()].astype(np.float64)
        rows.append(np.concatenate([values.mean(axis=0), values.std(axis=0)]))
    return np.stack(rows)


def probe_classifier(seed: int = 0) -> Pipeline:
    """Standardise, then a balanced logistic regression (UA weighs every class alike)."""
    return make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    )


def class_rows(regression: LogisticRegression, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a fitted logistic regression's logit for each of `num_classes` classes, the same
    class probabilities as the regression's. Two classes: sklearn keeps only the second class's logit against
    the first, so the first gets zeros; a class absent from the training data gets zero weights and a bias
    well under every other (it cannot be predicted)."""
    coef, intercept = regression.coef_, regression.intercept_
    if coef.shape[0] == 1:
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight, bias = np.zeros((num_classes, coef.shape[1])), np.full(num_classes, float(intercept.min()) - 10.0)
    weight[regression.classes_], bias[regression.classes_] = coef, intercept
    return weight, bias


