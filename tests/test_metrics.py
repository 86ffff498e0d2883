"""UA/WA: our scores and the SER evaluator's logged metrics equal scikit-learn's on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from torch import nn
from torch.utils.data import TensorDataset

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.training.evaluator import TrainConfig, build_evaluator, class_weight_vector, predict_logits
from nni_emotionnas.training.metrics import score


def test_scores_equal_sklearn_on_imbalanced_predictions() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.choice(4, size=200, p=[0.55, 0.25, 0.15, 0.05])
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    s = score(y_true, y_pred, 4)
    assert s.ua == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert s.wa == pytest.approx(accuracy_score(y_true, y_pred))
    assert s.ua != pytest.approx(s.wa)  # imbalance makes them differ, so a swap would be caught
    assert s.recall == pytest.approx([np.mean(y_pred[y_true == c] == c) for c in range(4)])
    assert np.array(s.confusion).sum() == 200 and np.trace(np.array(s.confusion)) == int((y_true == y_pred).sum())


def test_absent_predicted_class_counts_zero_and_empty_input_fails() -> None:
    s = score([0, 0, 1, 1], [0, 0, 0, 0], num_classes=3)
    assert s.recall == [1.0, 0.0, 0.0] and s.ua == 0.5 and s.wa == 0.5
    assert len(s.confusion) == 3
    with pytest.raises(ValueError, match="empty"):
        score([], [])


def test_balanced_class_weights_follow_sklearn_definition() -> None:
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = class_weight_vector("balanced", labels, 3)
    assert weights == pytest.approx([10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])
    assert class_weight_vector("none", labels, 3) is None
    with pytest.raises(ConfigError, match="missing \\[3\\]"):
        class_weight_vector("balanced", labels, 4)
    with pytest.raises(ConfigError, match="2 weights given for 3 classes"):
        class_weight_vector([1.0, 2.0], labels, 3)


def test_logged_val_ua_wa_equal_sklearn_on_the_same_predictions() -> None:
    torch.manual_seed(0)
    x = torch.randn(60, 8)
    y = torch.tensor([0] * 30 + [1] * 20 + [2] * 10)
    x[:, :3] += nn.functional.one_hot(y, 3).float() * 0.8
    train, val = TensorDataset(x[::2], y[::2]), TensorDataset(x[1::2], y[1::2])
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    config = TrainConfig(epochs=2, batch_size=8, lr=0.01, class_weights="balanced")
    evaluator = build_evaluator(train, val, 3, config)
    evaluator.evaluate(model)
    logged = evaluator.trainer.callback_metrics
    assert {"train_loss", "val_loss", "val_ua", "val_wa"} <= set(logged)
    logits, labels = predict_logits(model, val)
    pred = logits.argmax(axis=1)
    assert float(logged["val_ua"]) == pytest.approx(balanced_accuracy_score(labels, pred), abs=1e-6)
    assert float(logged["val_wa"]) == pytest.approx(accuracy_score(labels, pred), abs=1e-6)
    weights = evaluator.module.class_weights
    assert weights is not None and weights.tolist() == pytest.approx([30 / (3 * 15), 30 / (3 * 10), 30 / (3 * 5)])


def test_train_threads_hold_during_the_fit_only() -> None:
    import pytorch_lightning as pl

    seen: list[int] = []

    class Watch(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1
    data = TensorDataset(torch.randn(16, 4), torch.tensor([0, 1] * 8))
    config = TrainConfig(epochs=1, batch_size=8, threads=wanted)
    build_evaluator(data, data, 2, config, callbacks=[Watch()]).evaluate(nn.Linear(4, 2))
    assert seen == [wanted, wanted] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be at least 1"):
        TrainConfig(threads=0)
