"""The `classic` baseline: openSMILE functionals and a logistic regression, the first baseline an SER
reviewer asks for.

Extraction is a one-off per corpus and feature set (cached in the feature store like every other feature);
with `features.standardize: speaker` the functionals are standardised within each speaker first, as the
streams' inputs are.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from nni_emotionnas.config.experiment import ClassicConfig
from nni_emotionnas.errors import BackendError
from nni_emotionnas.features.opensmile_backend import OpenSmileFunctionalsExtractor
from nni_emotionnas.features.prepared import PreparedCorpus
from nni_emotionnas.features.speaker_norm import zscore_per_speaker
from nni_emotionnas.features.store import FeatureStore


def classic_features(corpus: PreparedCorpus, config: ClassicConfig, progress: bool = True) -> np.ndarray:
    """Utterances x functionals (float64), per-speaker standardised when `features.standardize: speaker`."""
    experiment = corpus.experiment
    try:
        extractor = OpenSmileFunctionalsExtractor(config.feature_set)
    except BackendError as exc:
        raise BackendError(f"run.classic: {exc}; or set run.classic: null to drop the classic baseline") from exc
    report = FeatureStore(experiment.cache_dir / "features").extract(
        corpus.utterances, extractor, n_jobs=experiment.features.n_jobs, progress=progress
    )
    vectors = np.stack([np.asarray(report.load(i), dtype=np.float64) for i in range(len(corpus.utterances))])
    if experiment.features.standardize == "speaker":
        vectors = zscore_per_speaker(vectors, [u.speaker for u in corpus.utterances])
    return vectors


def classic_classifier(config: ClassicConfig, seed: int = 0) -> Pipeline:
    """Standardise (statistics of the speakers it is fitted on), then a logistic regression."""
    weights = None if config.class_weight == "none" else config.class_weight
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=config.C, class_weight=weights, max_iter=5000, random_state=seed)
    )
