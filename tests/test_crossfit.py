"""`train.fusion_init: crossfit`: fusion heads trained on held-out stream outputs, over two or three streams."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import SMALL_CORPUS, SMALL_FEATURES

from nni_emotionnas.config.experiment import load_experiment
from nni_emotionnas.evaluation.heldout import HeldOutOutputs, speaker_groups
from nni_emotionnas.evaluation.stacking import choose_head, fit_head, head_logits, stream_order
from nni_emotionnas.models.output_fusion import OutputFusionHead

CLASSES = 4


def log_probs(logits: np.ndarray) -> np.ndarray:
    return torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()


@pytest.mark.parametrize("mode", ["ism", "sum", "concat"])
def test_a_head_over_three_streams_starts_as_its_dominant_stream(mode):
    rng = np.random.default_rng(0)
    inputs = [torch.from_numpy(log_probs(rng.normal(size=(6, CLASSES)))) for _ in range(3)]
    head = OutputFusionHead(mode, ["deep", "spectrogram", "classic"], CLASSES).double()
    assert torch.allclose(head(inputs), inputs[0])  # exactly the dominant stream's log-probabilities
    assert head.dominant == "deep"
    head.pool()
    assert torch.allclose(head(inputs), sum(inputs) / 3)  # or exactly the mean of all three


@pytest.mark.parametrize("present", [[0, 2], [0, 1, 3]])
def test_a_linear_stream_gives_its_classifiers_probabilities_in_the_corpus_columns(present):
    """Two classes (scikit-learn keeps one logit row for them) and a class absent from the training data."""
    from nni_emotionnas.evaluation.probe import probe_classifier
    from nni_emotionnas.evaluation.stacked_fit import linear_stream

    rng = np.random.default_rng(0)
    labels = np.repeat(present, 20)
    features = rng.normal(size=(len(labels), 5)) + labels[:, None]
    classifier = probe_classifier().fit(features, labels)
    probs = torch.softmax(linear_stream(classifier, CLASSES)(torch.from_numpy(features)), dim=1).numpy()
    np.testing.assert_allclose(probs[:, present], classifier.predict_proba(features), atol=1e-4)
    assert probs[:, sorted(set(range(CLASSES)) - set(present))].max() < 1e-4  # never predicted


def test_an_unknown_mode_or_a_single_stream_is_refused():
    with pytest.raises(ValueError, match="'avg' is not one of"):
        OutputFusionHead("avg", ["deep", "spectrogram"], CLASSES)
    with pytest.raises(ValueError, match="two or more distinct streams"):
        OutputFusionHead("ism", ["deep"], CLASSES)


def complementary_streams(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stream `a` tells classes 0 and 1 apart and knows nothing of 2 and 3; stream `b` the other way round;
    each says "one of the classes I do not know" when the utterance is one of them."""
    labels = np.arange(n) % CLASSES
    a, b = np.zeros((n, CLASSES)), np.zeros((n, CLASSES))
    for i, y in enumerate(labels):
        a[i] = [3.0, 0.0, 1.5, 1.5] if y == 0 else [0.0, 3.0, 1.5, 1.5] if y == 1 else [0.0, 0.0, 1.6, 1.6]
        b[i] = [1.5, 1.5, 3.0, 0.0] if y == 2 else [1.5, 1.5, 0.0, 3.0] if y == 3 else [1.6, 1.6, 0.0, 0.0]
    noise = lambda: rng.normal(scale=0.6, size=(n, CLASSES))  # noqa: E731
    return {"a": log_probs(a + noise()), "b": log_probs(b + noise())}, labels


def balanced_accuracy(labels: np.ndarray, logits: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(labels, logits.argmax(axis=1)))


def test_ism_beats_both_streams_when_each_knows_only_half_the_classes():
    rng = np.random.default_rng(1)
    train, train_labels = complementary_streams(rng, 240)
    test, test_labels = complementary_streams(rng, 400)
    groups = (np.arange(240) // 7) % 4  # speaker-like groups holding every class
    for dominant in (None, "a"):  # the mean of both streams, or stream a alone, at the start
        default = choose_head("ism", ["a", "b"], train, train_labels, groups, CLASSES, dominant=dominant)
        assert default.cv_ua == {} and not default.left_start  # no margin: the start is kept, no CV run
        choice = choose_head("ism", ["a", "b"], train, train_labels, groups, CLASSES, dominant=dominant, margin=0.05)
        assert choice.pooled == (dominant is None)
        assert choice.left_start == (dominant == "a")  # from a alone, fusing gains far more than the margin
        head = fit_head("ism", stream_order(choice.dominant, ["a", "b"]), train, train_labels, CLASSES,
                        choice.penalty, pooled=choice.pooled)
        fused = balanced_accuracy(test_labels, head_logits(head, test))
        alone = {name: balanced_accuracy(test_labels, test[name]) for name in test}
        assert max(alone.values()) < 0.8  # each stream alone: two classes right, two at a coin flip (0.75)
        assert fused > max(alone.values()) + 0.15, (fused, alone)


def test_the_head_keeps_its_start_unless_the_cross_validation_gains_the_margin():
    rng = np.random.default_rng(1)
    train, train_labels = complementary_streams(rng, 240)
    groups = (np.arange(240) // 7) % 4
    kept = choose_head("ism", ["a", "b"], train, train_labels, groups, CLASSES, dominant="a", margin=1.0)
    assert not kept.left_start and kept.step == "start"
    gain = max(kept.cv_ua.values()) - kept.cv_ua["a inf"]
    assert gain > 0.15  # what it would have gained: the margin alone kept the start
    moved = choose_head("ism", ["a", "b"], train, train_labels, groups, CLASSES, dominant="a", margin=gain - 1e-9)
    assert moved.left_start and moved.cv_ua[f"a {moved.penalty:g}"] == pytest.approx(max(kept.cv_ua.values()))


def test_calibration_undoes_an_overconfident_stream():
    from nni_emotionnas.evaluation.stacking import fit_temperature

    rng = np.random.default_rng(4)
    calibrated = rng.normal(scale=2.0, size=(3000, CLASSES))  # labels drawn from these very probabilities
    probs = np.exp(log_probs(calibrated))
    labels = np.array([rng.choice(CLASSES, p=p) for p in probs])
    weights = np.ones(CLASSES)
    assert fit_temperature(log_probs(calibrated), labels, weights) == pytest.approx(1.0, abs=0.15)
    assert fit_temperature(log_probs(calibrated * 6), labels, weights) == pytest.approx(6.0, rel=0.15)


def test_the_start_is_kept_when_the_other_stream_is_noise():
    rng = np.random.default_rng(2)
    labels = np.arange(200) % CLASSES
    good = log_probs(np.eye(CLASSES)[labels] * 2.0 + rng.normal(scale=0.5, size=(200, CLASSES)))
    noise = log_probs(rng.normal(size=(200, CLASSES)))
    streams = ["deep", "spectrogram"]
    rows = {"deep": good, "spectrogram": noise * 5}  # confidently wrong
    choice = choose_head("ism", streams, rows, labels, (np.arange(200) // 9) % 5, CLASSES, margin=0.05)
    assert choice.pooled and not choice.left_start
    head = fit_head("ism", streams, rows, labels, CLASSES, choice.penalty, pooled=True)
    deep, spectrogram = head.temperature.tolist()
    assert spectrogram > 10 * deep  # calibrated to near-uniform
    assert balanced_accuracy(labels, head_logits(head, rows)) == balanced_accuracy(labels, good)


def test_a_fixed_dominant_stream_still_fuses_every_other_stream():
    from nni_emotionnas.evaluation.stacked_fit import fit_stacked

    rng = np.random.default_rng(3)
    labels = np.arange(120) % CLASSES
    groups = (np.arange(120) // 5) % 3
    held = {name: HeldOutOutputs(np.arange(120), groups, log_probs(rng.normal(size=(120, CLASSES))),
                                 log_probs(rng.normal(size=(8, CLASSES))), [])
            for name in ("spectrogram", "deep", "classic")}
    head, choice, probs = fit_stacked("ism", held, "spectrogram", labels, CLASSES, balanced=True, margin=0.05)
    assert head.streams == ["spectrogram", "deep", "classic"] and choice.dominant == "spectrogram"
    assert not choice.pooled
    assert set(choice.cv_ua) == {f"spectrogram {p:g}" for p in (math.inf, 10, 1, 0.1, 0.01)}
    assert probs.shape == (8, CLASSES) and np.allclose(probs.sum(axis=1), 1)


def test_speaker_groups_never_split_a_speaker():
    speakers = [f"s{i % 7}" for i in range(70)]
    labels = np.arange(70) % CLASSES
    groups = speaker_groups(speakers, labels, 3)
    assert sorted(set(groups)) == [0, 1, 2]
    for speaker in set(speakers):
        assert len({g for s, g in zip(speakers, groups) if s == speaker}) == 1


CROSSFIT = {
    "name": "crossfit",
    "seed": 0,
    "corpus": SMALL_CORPUS,
    "protocol": {"folds": ["Ses01-testSes01M"]},
    "features": SMALL_FEATURES,
    "spectrogram_space": "spec.yml",
    "deep_space": "deep.yml",
    "search": {"epochs": 1, "batch_size": 16},
    "train": {"epochs": 2, "batch_size": 16, "fusion_init": "crossfit", "refit": True},
    "run": {"variants": ["spectrogram", "deep", "ism", "sum"], "search": "once", "crossfit_folds": 3,
            "supplementary": ["classic", "probe_spectrogram", "probe_deep"],
            "classic": {"feature_set": "eGeMAPSv02"}},
}


def small_run(folder: Path, experiment: dict) -> tuple[Path, Path, dict]:
    """`experiment` run in `folder` with tiny spaces: (folder, run folder, report paths)."""
    from nni_emotionnas.evaluation import run as pipeline

    (folder / "spec.yml").write_text("channels: 2\nlayers: 3\nnodes: 2\n")
    (folder / "deep.yml").write_text("hidden_size: 8\nnodes: 2\nattention_dim: 4\n")
    (folder / "exp.yml").write_text(yaml.safe_dump(experiment))
    run_dir = folder / "run"
    return folder, run_dir, pipeline.run_experiment(load_experiment(folder / "exp.yml"), run_dir, progress=False)


@pytest.fixture(scope="module")
def crossfit_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    return small_run(tmp_path_factory.mktemp("crossfit"), CROSSFIT)


VALIDATION = {**CROSSFIT, "name": "validation", "train": {**CROSSFIT["train"], "refit": ["deep"]},
              "run": {**CROSSFIT["run"], "stream_held_out": "validation"}}


@pytest.fixture(scope="module")
def validation_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """`run.stream_held_out: validation`, and only the deep network refitted (`train.refit: [deep]`)."""
    return small_run(tmp_path_factory.mktemp("validation"), VALIDATION)


@pytest.mark.slow
def test_validation_held_out_outputs_are_the_chosen_networks_outputs_for_its_validation_speakers(validation_run):
    """No copy is trained: each network's held-out rows are the validation speakers' outputs of the network
    chosen on them (for the deep stream, refitted afterwards, `selected.pt`; the spectrogram stream keeps it
    as its `model.pt`), its test rows the fold's stream's; the heads calibrate each stream on those rows."""
    from nni_emotionnas.evaluation.crossval import CrossValidation
    from nni_emotionnas.evaluation.stacking import calibrate
    from nni_emotionnas.features.prepared import prepare
    from nni_emotionnas.training.evaluator import predict_logits

    folder, run_dir, paths = validation_run
    assert "held-out outputs of the stream networks for their validation speakers, of the others over 3 speaker" \
        in paths["markdown"].read_text()
    experiment = load_experiment(folder / "exp.yml")
    corpus = prepare(experiment, progress=False)
    fold = corpus.folds[0]
    cv = CrossValidation(experiment, corpus, run_dir, progress=False)
    speakers = np.array([u.speaker for u in corpus.utterances])
    temperatures = {}
    for stream, chosen in (("spectrogram", "model.pt"), ("deep", "selected.pt")):
        folder_of = run_dir / "folds" / fold.name / stream
        held = HeldOutOutputs.load(folder_of / "heldout.npz")
        assert list(held.learn) == list(fold.split("val")) and not held.groups.any()
        assert not set(speakers[held.trained_on[0]]) & (set(speakers[held.learn]) | set(speakers[list(fold.test)]))
        assert not (folder_of / "heldout").exists()
        for weights, rows, split in ((chosen, held.outputs, "val"), ("model.pt", held.test, "test")):
            network = cv.stream_model(fold, stream)
            network.load_state_dict(torch.load(folder_of / weights, weights_only=True))
            logits = predict_logits(network, corpus.dataset(fold.name, split, stream), 16)[0]
            np.testing.assert_allclose(rows, torch.log_softmax(torch.from_numpy(logits).double(), 1).numpy(), atol=1e-4)
        temperatures[stream] = calibrate(held.outputs, corpus.labels[held.learn], CLASSES, False)
    assert not (run_dir / "folds" / fold.name / "spectrogram" / "selected.pt").exists()
    result = {s: json.loads((run_dir / "folds" / fold.name / s / "result.json").read_text()) for s in temperatures}
    assert result["spectrogram"]["refit_epochs"] is None and result["deep"]["refit_epochs"] >= 0
    head = torch.load(run_dir / "folds" / fold.name / "ism" / "model.pt", weights_only=True)
    streams = json.loads((run_dir / "folds" / fold.name / "ism" / "result.json").read_text())
    assert streams["left_start"] is False
    order = ["deep", "spectrogram", "classic", "probe_spectrogram", "probe_deep"]
    assert head["head.temperature"][:2].tolist() == pytest.approx([temperatures[s] for s in order[:2]], rel=1e-6)


def test_a_fusion_margin_needs_crossfit_held_out_outputs(tmp_path):
    from nni_emotionnas.errors import ConfigError

    for section, key, value, message in (("run", "fusion_margin", 0.05, "run: fusion_margin needs stream_held_out"),
                                         ("train", "refit", ["ism"], "train.refit"),
                                         ("train", "fusion_init", "streams", "validation needs train.fusion_init")):
        (tmp_path / "exp.yml").write_text(yaml.safe_dump({**VALIDATION, section: {**VALIDATION[section], key: value}}))
        with pytest.raises(ConfigError, match=message):
            load_experiment(tmp_path / "exp.yml")


@pytest.mark.slow
def test_no_head_row_comes_from_a_model_that_saw_its_speaker_or_any_test_speaker(crossfit_run):
    from nni_emotionnas.features.prepared import prepare

    folder, run_dir, _ = crossfit_run
    corpus = prepare(load_experiment(folder / "exp.yml"), progress=False)
    fold = corpus.folds[0]
    speakers = np.array([u.speaker for u in corpus.utterances])
    test_speakers = set(speakers[list(fold.test)])
    for stream in ("spectrogram", "deep"):
        held = HeldOutOutputs.load(run_dir / "folds" / fold.name / stream / "heldout.npz")
        assert sorted(held.learn) == sorted(fold.split("train+val"))
        assert held.outputs.shape == (len(held.learn), CLASSES) and held.test.shape == (len(fold.test), CLASSES)
        assert len(held.trained_on) == 3
        for row, group in zip(held.learn, held.groups):
            seen = set(speakers[held.trained_on[group]])
            assert speakers[row] not in seen  # the row's output came from a model that never saw its speaker
            assert not seen & test_speakers
        assert np.allclose(np.exp(held.outputs).sum(axis=1), 1.0)


@pytest.mark.slow
def test_crossfit_run_reports_the_fusion_against_the_better_stream_and_probe_fusion(crossfit_run):
    _, run_dir, paths = crossfit_run
    results = json.loads(paths["json"].read_text())
    ism = results["models"]["ism"]
    ua = {v: results["models"][v]["test_ua"][0] for v in ("spectrogram", "deep", "probe_fusion")}
    assert ism["delta_better"] == [pytest.approx(ism["test_ua"][0] - max(ua["spectrogram"], ua["deep"]), abs=0.02)]
    assert ism["delta_probe_fusion"] == [pytest.approx(ism["test_ua"][0] - ua["probe_fusion"], abs=0.02)]
    assert ism["left_start"][0] in (True, False) and ism["dominant"][0] in ("deep", "spectrogram")
    markdown = paths["markdown"].read_text()
    assert "ΔUA vs better stream" in markdown and "ΔUA vs probe_fusion" in markdown and "left start" in markdown
    result = json.loads((run_dir / "folds" / "Ses01-testSes01M" / "ism" / "result.json").read_text())
    assert result["head_cv_ua"] is None and result["left_start"] is False  # no fusion_margin: no CV, start kept
    assert "each calibrated by a temperature; start: the mean of all streams, kept" in markdown


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["crossfit_run", "validation_run"])
def test_the_saved_fusion_model_gives_the_reported_test_probabilities(fixture, request):
    """`model.pt` holds the streams, the linear streams (classic; the probes, which compute their statistics
    from the stream inputs) and the head: run on the fold's test utterances it reproduces `result.json`, which
    was computed from the held-out pipeline's stored outputs."""
    from nni_emotionnas.evaluation.classic import classic_features
    from nni_emotionnas.evaluation.crossval import CrossValidation
    from nni_emotionnas.features.prepared import prepare

    folder, run_dir, _ = request.getfixturevalue(fixture)
    experiment = load_experiment(folder / "exp.yml")
    corpus = prepare(experiment, progress=False)
    fold = corpus.folds[0]
    cv = CrossValidation(experiment, corpus, run_dir, progress=False)
    for variant in ("ism", "sum"):
        model = cv.build(fold, variant)
        model.load_state_dict(torch.load(run_dir / "folds" / fold.name / variant / "model.pt", weights_only=True))
        items = [corpus.dataset(fold.name, "test", "both")[i][0] for i in range(len(fold.test))]
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        batch["classic"] = torch.from_numpy(classic_features(corpus, experiment.run.classic, False)[list(fold.test)])
        with torch.no_grad():
            probs = torch.softmax(model.eval()(batch), dim=1).numpy()
        reported = json.loads((run_dir / "folds" / fold.name / variant / "result.json").read_text())["test_probs"]
        assert np.allclose(probs, reported, atol=2e-4)
