"""Held-out stream outputs over a fold's non-test speakers: what a fusion head learns from (the stacking fix).

A stream network trained on a fold's speakers fits them almost perfectly, so a head trained on its outputs
for those same speakers learns that nothing needs adding to it and stays where it started. Here the
fold's non-test speakers are split into speaker groups; for each group a copy of the stream (network or
linear baseline) is trained as the fold's own is, on the other groups only, and its log-probabilities for
the held-out group are kept. Every row the head learns from was thus produced by a model that never saw
that row's speaker, and no model here ever reads a test speaker. At test time the head reads the fold's
own streams, trained on all non-test speakers. With `run.stream_held_out: validation` a stream network trains
no copies: its held-out outputs are those of the network chosen on the validation speakers, for them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from nni_emotionnas.corpora.folds import Fold
from nni_emotionnas.errors import ConfigError, RunFolderError
from nni_emotionnas.features.store import atomic_write_bytes


@dataclass
class HeldOutOutputs:
    """`learn`: corpus indices of the fold's non-test utterances; `groups`: each one's speaker group;
    `outputs`: their held-out log-probabilities (row i from the model that did not train on group
    `groups[i]`); `test`: log-probabilities of the fold's test utterances from the stream trained on all
    of `learn`; `trained_on[g]`: the corpus indices the model for group g learnt from."""

    learn: np.ndarray
    groups: np.ndarray
    outputs: np.ndarray
    test: np.ndarray
    trained_on: list[np.ndarray]

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        trained = {f"trained_on_{g}": idx for g, idx in enumerate(self.trained_on)}
        np.savez(buffer, learn=self.learn, groups=self.groups, outputs=self.outputs, test=self.test, **trained)
        atomic_write_bytes(path, lambda handle: handle.write(buffer.getvalue()))

    @classmethod
    def load(cls, path: Path) -> HeldOutOutputs:
        try:
            with np.load(path, allow_pickle=False) as data:
                count = sum(1 for key in data.files if key.startswith("trained_on_"))
                return cls(data["learn"], data["groups"], data["outputs"], data["test"],
                           [data[f"trained_on_{g}"] for g in range(count)])
        except (OSError, ValueError, KeyError) as exc:
            raise RunFolderError(f"{path}: damaged ({exc}); delete its variant folder to redo that stream") from exc


def speaker_groups(speakers: Sequence[str], labels: np.ndarray, count: int) -> np.ndarray:
    """A group number per utterance: `count` speaker-disjoint groups with classes spread as evenly as the
    speakers allow (fewer when there are fewer speakers; the same for every seed of a fold)."""
    distinct = len(set(speakers))
    if distinct < 2:
        raise ConfigError(f"run.crossfit_folds: held-out stream outputs need at least 2 non-test speakers, "
                          f"the fold has {distinct}")
    splitter = StratifiedGroupKFold(n_splits=min(count, distinct), shuffle=True, random_state=0)
    groups = np.empty(len(speakers), dtype=np.int64)
    for g, (_, held) in enumerate(splitter.split(np.zeros(len(speakers)), labels, groups=list(speakers))):
        groups[held] = g
    return groups


def log_probabilities(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def held_out_outputs(
    fold: Fold, speakers: Sequence[str], labels: np.ndarray, count: int,
    fit_and_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], test_outputs: np.ndarray,
) -> HeldOutOutputs:
    """Runs `fit_and_predict(train_indices, predict_indices) -> logits` once per speaker group of the fold's
    non-test utterances; `test_outputs` are the test logits of the stream trained on all of them."""
    learn = np.asarray(fold.split("train+val"), dtype=np.int64)
    groups = speaker_groups([speakers[i] for i in learn], labels[learn], count)
    outputs = np.zeros((len(learn), test_outputs.shape[1]))
    trained_on = []
    for g in range(groups.max() + 1):
        train, held = learn[groups != g], groups == g
        outputs[held] = log_probabilities(fit_and_predict(train, learn[held]))
        trained_on.append(train)
    return HeldOutOutputs(learn, groups, outputs, log_probabilities(test_outputs), trained_on)


def validation_outputs(fold: Fold, val_logits: np.ndarray, test_logits: np.ndarray) -> HeldOutOutputs:
    """A network's held-out outputs from the fold's validation speakers alone (one group), which the network
    chosen on them never trained on; `test_logits` from the fold's stream (refitted or not)."""
    learn = np.asarray(fold.split("val"), dtype=np.int64)
    return HeldOutOutputs(learn, np.zeros(len(learn), dtype=np.int64), log_probabilities(val_logits),
                          log_probabilities(test_logits), [np.asarray(fold.split("train"), dtype=np.int64)])
