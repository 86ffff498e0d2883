"""The classic and probe-fusion baselines equal scikit-learn on the same folds; per-speaker standardisation
reads no label and is refused where speakers carry one class; an opensmile deep stream runs end to end."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_CORPUS, SMALL_FEATURES
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from nni_emotionnas.config.experiment import experiment_from_dict
from nni_emotionnas.corpora.load import read_corpora
from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import BackendError, ConfigError
from nni_emotionnas.evaluation.crossval import CrossValidation
from nni_emotionnas.features.opensmile_backend import OpenSmileFunctionalsExtractor
from nni_emotionnas.features.prepared import prepare
from nni_emotionnas.features.speaker_norm import check_speaker_coverage
from nni_emotionnas.features.store import FeatureStore

SMALL = {"corpus": SMALL_CORPUS, "features": SMALL_FEATURES}


def small(tmp: Path, standardize: str = "train_speakers"):
    data = {**SMALL, "features": {**SMALL["features"], "standardize": standardize}}
    return prepare(experiment_from_dict(data, tmp), progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return small(tmp_path_factory.mktemp("baselines"))


@pytest.fixture(scope="module")
def speaker_corpus(tmp_path_factory):
    return small(tmp_path_factory.mktemp("baselines-speaker"), standardize="speaker")


def functionals(corpus) -> np.ndarray:
    report = FeatureStore(corpus.experiment.cache_dir / "features").extract(
        corpus.utterances, OpenSmileFunctionalsExtractor("ComParE_2016"), progress=False
    )
    return np.stack([np.asarray(report.load(i), dtype=np.float64) for i in range(len(corpus.utterances))])


def direct(features: np.ndarray, labels: np.ndarray, fold, **options) -> np.ndarray:
    """scikit-learn by hand: scaler and logistic regression on every non-test speaker, test probabilities."""
    learn = [*fold.train, *fold.val]
    scaler = StandardScaler().fit(features[learn])
    classifier = LogisticRegression(max_iter=5000, **options).fit(scaler.transform(features[learn]), labels[learn])
    return classifier.predict_proba(scaler.transform(features[list(fold.test)]))


def raw_statistics(corpus, stream: str) -> np.ndarray:
    rows = []
    for index in range(len(corpus.utterances)):
        if stream == "spectrogram":
            values = np.asarray(corpus.spectrogram.load(index), dtype=np.float64).T
        else:
            item = corpus.deep_tensors(index)
            values = item["frames"].numpy()[item["mask"].numpy()].astype(np.float64)
        rows.append(np.concatenate([values.mean(axis=0), values.std(axis=0)]))
    return np.stack(rows)


def assert_row(result, probs: np.ndarray, labels: np.ndarray) -> None:
    np.testing.assert_allclose(result.test_probs, probs, atol=1e-2)  # probes read float32 standardised inputs
    assert result.test_pred == probs.argmax(axis=1).tolist()
    assert result.test_ua == pytest.approx(balanced_accuracy_score(labels, probs.argmax(axis=1)))
    assert result.baseline and result.val_ua is None


def test_classic_and_probe_fusion_equal_direct_scikit_learn(corpus, tmp_path):
    fold, labels = corpus.folds[2], corpus.labels
    cv = CrossValidation(corpus.experiment, corpus, tmp_path, progress=False)
    assert corpus.experiment.run.fused_baselines == ["probe_spectrogram", "probe_deep", "classic"]
    classic = direct(functionals(corpus), labels, fold, C=0.01)
    assert_row(cv.train_variant(fold, "classic"), classic, labels[list(fold.test)])
    probes = [direct(raw_statistics(corpus, s), labels, fold, class_weight="balanced") for s in ("spectrogram", "deep")]
    fusion = np.mean([*probes, classic], axis=0)
    result = cv.train_variant(fold, "probe_fusion")
    assert_row(result, fusion, labels[list(fold.test)])
    assert not np.allclose(fusion, classic, atol=0.05)  # the probes do take part
    assert json.loads((tmp_path / "folds" / fold.name / "probe_fusion" / "result.json").read_text())["baseline"]


def test_classic_without_opensmile_says_how_to_fix(corpus, monkeypatch):
    from nni_emotionnas.evaluation.classic import classic_features

    monkeypatch.setitem(sys.modules, "opensmile", None)
    fix = r"run.classic: .*pip install 'nni-emotionnas\[opensmile\]'.*run.classic: null"
    with pytest.raises(BackendError, match=fix):
        classic_features(corpus, corpus.experiment.run.classic)


def test_speaker_standardisation_reads_no_label(speaker_corpus):
    corpus = speaker_corpus
    speaker = corpus.utterances[0].speaker
    own = [i for i, u in enumerate(corpus.utterances) if u.speaker == speaker]
    stats = corpus.standardizer(corpus.folds[0].name, own[0])
    rows = np.concatenate([np.asarray(corpus.spectrogram.load(i)) for i in own], axis=1)
    np.testing.assert_allclose(stats.spectrogram_mean[:, 0], rows.mean(axis=1), rtol=1e-4, atol=1e-4)
    # the same statistics whatever the labels say, and in every fold (test speakers' included)
    relabelled = dataclasses.replace(
        corpus, utterances=[u.with_label(corpus.classes[0]) for u in corpus.utterances], _standardizations={}
    )
    again = relabelled.standardizer(corpus.folds[-1].name, own[-1])
    np.testing.assert_array_equal(again.spectrogram_mean, stats.spectrogram_mean)
    np.testing.assert_array_equal(again.deep_std, stats.deep_std)
    assert corpus.standardization(corpus.folds[0].name) is None  # no training-speaker statistics to save


def test_classic_with_speaker_standardisation_equals_direct(speaker_corpus, tmp_path):
    corpus, fold = speaker_corpus, speaker_corpus.folds[0]
    vectors = functionals(corpus)
    speakers = np.array([u.speaker for u in corpus.utterances])
    for speaker in set(speakers):
        own = speakers == speaker
        vectors[own] = (vectors[own] - vectors[own].mean(axis=0)) / (vectors[own].std(axis=0) + 1e-8)
    expected = direct(vectors, corpus.labels, fold, C=0.01)
    result = CrossValidation(corpus.experiment, corpus, tmp_path, progress=False).train_variant(fold, "classic")
    assert_row(result, expected, corpus.labels[list(fold.test)])


def one_class_speakers(classes: list[str], per_speaker: int) -> list[Utterance]:
    return [
        Utterance(Path(f"{s}_{k}.wav"), classes[s % len(classes)], f"spk{s}", f"spk{s}", f"{s}_{k}", "test")
        for s in range(8) for k in range(per_speaker)
    ]


def test_speaker_standardisation_refused_when_speakers_carry_one_class():
    classes = ["neu", "ang", "hap", "sad"]
    utterances = one_class_speakers(classes, 3)
    with pytest.raises(ConfigError, match=r"features.standardize: 'speaker' refused: the median speaker shows 1 of 4"):
        check_speaker_coverage(utterances, classes, force=False)
    check_speaker_coverage(utterances, classes, force=True)  # the user insists
    two_each = [u.with_label(classes[(int(u.speaker[3:]) + int(u.uid[-1])) % 4]) for u in utterances]
    check_speaker_coverage(two_each, classes, force=False)  # 2 of 4 classes per speaker: half is enough


def test_prepare_refuses_speaker_standardisation_on_such_a_corpus(tmp_path):
    from conftest import write_tone

    rows = ["path,label,speaker"]
    for s in range(4):
        for k in range(2):
            write_tone(tmp_path / f"s{s}_{k}.wav", seconds=0.3, freq=150 + 30 * s, seed=k)
            rows.append(f"s{s}_{k}.wav,{['neu', 'ang', 'hap', 'sad'][s]},spk{s}")
    (tmp_path / "corpus.csv").write_text("\n".join(rows) + "\n")
    data = {
        "corpus": {"reader": "manifest", "path": "corpus.csv"},
        "features": {"n_jobs": 1, "standardize": "speaker", "spectrogram": {"duration": 0.5, "size": [8, 8]}},
    }
    with pytest.raises(ConfigError, match="standardize_force: true to insist"):
        prepare(experiment_from_dict(data, tmp_path), streams=("spectrogram",), progress=False)


@pytest.mark.slow
def test_opensmile_deep_stream_runs_end_to_end_with_speaker_standardisation(tmp_path):
    from nni_emotionnas.evaluation.predict import predict_files
    from nni_emotionnas.evaluation.run import run_experiment

    (tmp_path / "deep.yml").write_text("hidden_size: 8\nnodes: 2\nattention_dim: 4\n")
    experiment = {
        **SMALL,
        "name": "smile",
        "features": {
            **SMALL["features"], "standardize": "speaker", "deep": {"backend": "opensmile", "feature_set": "eGeMAPSv02"}
        },
        "protocol": {"folds": ["Ses03-testSes03M"]},
        "deep_space": "deep.yml",
        "search": {"epochs": 1, "batch_size": 16},
        "train": {"epochs": 1, "batch_size": 16},
        "run": {"variants": ["deep"], "main": "deep"},
    }
    run_dir = tmp_path / "run"
    config = experiment_from_dict(experiment, tmp_path)
    paths = run_experiment(config, run_dir, progress=False)
    results = json.loads(paths["json"].read_text())
    assert list(results["models"]) == ["deep", "probe_deep", "classic", "probe_fusion"]
    assert [v for v, m in results["models"].items() if m["baseline"]] == ["probe_deep", "classic", "probe_fusion"]
    assert json.loads((run_dir / "run.json").read_text())["deep_dim"] == 25  # eGeMAPSv02 LLDs
    markdown = paths["markdown"].read_text()
    assert "backend `opensmile` (feature_set=eGeMAPSv02)" in markdown
    assert "| classic (baseline) |" in markdown and "ComParE_2016 functionals, logistic regression C=0.01" in markdown
    assert "standardisation: `speaker` (each speaker's own statistics" in markdown
    header, *rows = paths["csv"].read_text().splitlines()
    assert header.startswith("model,baseline,ua_mean,ua_std,wa_mean,wa_std,ua_pooled,wa_pooled")
    assert [r.split(",")[1] for r in rows] == ["0", "1", "1", "1"]
    assert not list(run_dir.glob("folds/*/standardization.npz"))  # nothing from training speakers to reuse
    # predict standardises files of one speaker by their own statistics, as the run did for a test speaker
    files = [u.path for u in read_corpora(config).utterances if u.speaker == "Ses03M"][:4]
    classes, probabilities = predict_files(run_dir, files)
    assert probabilities.shape == (4, len(classes)) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
