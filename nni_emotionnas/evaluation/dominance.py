"""`run.dominant: auto` (`streams`/`scratch` fusions): the stream a fusion keeps intact, chosen by each stream's
probe (`evaluation.probe`) scored leave-one-speaker-out over every speaker the fold does not test: which stream
wins on the one validation speaker is mostly that speaker. Test speakers are never read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, cross_val_score

from nni_emotionnas.config.experiment import FUSION_VARIANTS
from nni_emotionnas.corpora.folds import Fold
from nni_emotionnas.errors import ConfigError, RunFolderError
from nni_emotionnas.features.prepared import PreparedCorpus


def probe_dominance(corpus: PreparedCorpus, fold: Fold, streams: tuple[str, ...]) -> dict[str, float]:
    """Mean UA of each stream's probe, leave-one-speaker-out over the fold's non-test speakers."""
    from nni_emotionnas.evaluation.probe import probe_classifier, utterance_statistics

    indices = list(fold.split("train+val"))
    speakers = [corpus.utterances[i].speaker for i in indices]
    if len(set(speakers)) < 2:
        raise ConfigError(f"run.dominant: auto compares the streams over the non-test speakers, but fold "
                          f"{fold.name} has only {len(set(speakers))}; set run.dominant to deep or spectrogram")
    labels = np.asarray(corpus.labels)[indices]

    def score(stream: str) -> float:
        features = utterance_statistics(corpus, fold.name, indices, stream)
        scores = cross_val_score(probe_classifier(), features, labels, groups=speakers, cv=LeaveOneGroupOut(),
                                 scoring="balanced_accuracy")
        return float(scores.mean())

    return {stream: score(stream) for stream in streams}


def load_dominance(path: Path, streams: tuple[str, ...]) -> dict[str, float]:
    """A fold's saved probe scores (`probe_dominance`); a damaged file is a `RunFolderError` naming it and the
    fusions built on it, which are redone with it."""
    try:
        scores = json.loads(Path(path).read_bytes())
        usable = isinstance(scores, dict) and all(
            isinstance(scores.get(s), (int, float)) and math.isfinite(scores[s]) for s in streams
        )
    except ValueError:  # bad bytes or cut-short JSON
        usable = False
    if not usable:
        fusions = ", ".join(f"{v}/" for v in FUSION_VARIANTS)
        raise RunFolderError(f"{path}: damaged (expected each of {', '.join(streams)} with its probe UA); delete it "
                             f"and the fusion folders beside it ({fusions}), then rerun `emotionnas run` with the "
                             "same --out: the fusions are trained again and the record is written again")
    return {s: float(scores[s]) for s in streams}
