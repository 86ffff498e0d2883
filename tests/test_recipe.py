"""The training recipe: training-speaker standardisation, augmentation, probe baselines, seeds in the report."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import SMALL_CORPUS, SMALL_FEATURES
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import TensorDataset

from nni_emotionnas.config.experiment import experiment_from_dict
from nni_emotionnas.config.training import AugmentConfig, TrainConfig
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.evaluation.crossval import CrossValidation
from nni_emotionnas.evaluation.report import FoldResult, summarize
from nni_emotionnas.features.prepared import prepare
from nni_emotionnas.training.augment import augment_batch
from nni_emotionnas.training.evaluator import SERModule
from nni_emotionnas.training.fit import fit_fixed

SMALL = {"corpus": SMALL_CORPUS, "features": SMALL_FEATURES}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepare(experiment_from_dict(SMALL, tmp_path_factory.mktemp("recipe")), progress=False)


def test_standardization_statistics_come_from_training_speakers_only(corpus):
    fold = corpus.folds[0]
    seen: list[int] = []
    load = corpus.spectrogram.load
    corpus.spectrogram.load = lambda i: (seen.append(i), load(i))[1]
    try:
        stats = corpus.standardization(fold.name)
    finally:
        corpus.spectrogram.load = load
    assert sorted(seen) == sorted(fold.train)  # no validation or test utterance was read
    rows = np.concatenate([np.asarray(load(i)) for i in fold.train], axis=1)  # rows x (all training frames)
    np.testing.assert_allclose(stats.spectrogram_mean[:, 0], rows.mean(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.spectrogram_std[:, 0], rows.std(axis=1), rtol=1e-3, atol=1e-4)
    frames = [corpus.deep_tensors(i) for i in fold.train]
    valid = np.concatenate([f["frames"].numpy()[f["mask"].numpy()] for f in frames])
    np.testing.assert_allclose(stats.deep_mean, valid.mean(axis=0), rtol=1e-4, atol=1e-4)
    test_item, _ = corpus.dataset(fold.name, "test", "spectrogram")[0]
    raw = torch.from_numpy(np.asarray(load(fold.test[0])))
    torch.testing.assert_close(
        test_item[0], (raw - torch.from_numpy(stats.spectrogram_mean)) / torch.from_numpy(stats.spectrogram_std)
    )


class Recorder(nn.Module):
    """A linear classifier that remembers the last input it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 3)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.linear(x.flatten(1))


def test_augmentation_changes_training_batches_only():
    module = SERModule(num_classes=3, augment=dataclasses.asdict(AugmentConfig(freq_width=3, time_width=3)), seed=0)
    module.set_model(Recorder())
    batch = (torch.randn(4, 1, 8, 8) + 5, torch.tensor([0, 1, 2, 0]))
    module.training_step(batch, 0)
    assert not torch.equal(module.model.seen, batch[0])
    assert (module.model.seen == 0).any()  # masked bands
    module.validation_step(batch, 0)
    assert torch.equal(module.model.seen, batch[0])


def test_augmentation_is_seeded_and_can_be_disabled():
    x = torch.randn(3, 1, 8, 8)
    config = AugmentConfig(freq_width=3, time_width=3, time_shift=2)
    first = augment_batch(x, config, torch.Generator().manual_seed(1))
    again = augment_batch(x, config, torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again)
    assert torch.equal(augment_batch(x, AugmentConfig(enabled=False), torch.Generator()), x)


def test_augmented_fit_is_reproducible(tmp_path):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(24, 1, 8, 8), torch.arange(24) % 3)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.01, augment=AugmentConfig(freq_width=3, time_width=3))
    weights = []
    for run in range(2):
        torch.manual_seed(0)
        model = Recorder()
        fit_fixed(model, data, data, None, config, tmp_path / str(run), num_classes=3, resume=False)
        weights.append(model.linear.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


@pytest.mark.parametrize("variant, stream", [("probe_spectrogram", "spectrogram"), ("probe_deep", "deep")])
def test_probe_equals_direct_scikit_learn(corpus, tmp_path, variant, stream):
    fold = corpus.folds[1]
    result = CrossValidation(corpus.experiment, corpus, tmp_path, progress=False).train_variant(fold, variant)

    def statistics(index: int) -> np.ndarray:
        if stream == "spectrogram":
            x = np.asarray(corpus.spectrogram.load(index), dtype=np.float64)
            return np.concatenate([x.mean(axis=1), x.std(axis=1)])
        item = corpus.deep_tensors(index)
        valid = item["frames"].numpy()[item["mask"].numpy()].astype(np.float64)
        return np.concatenate([valid.mean(axis=0), valid.std(axis=0)])

    labels, learn = corpus.labels, [*fold.train, *fold.val]  # baselines learn from every non-test speaker
    train = np.stack([statistics(i) for i in learn])
    test = np.stack([statistics(i) for i in fold.test])
    scaler = StandardScaler().fit(train)
    classifier = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(train), labels[learn])
    expected = classifier.predict(scaler.transform(test))
    recall = [np.mean(expected[labels[list(fold.test)] == c] == c) for c in np.unique(labels[list(fold.test)])]
    assert result.test_pred == expected.tolist()
    # the probe reads the float32 standardised inputs: the same optimum up to lbfgs' tolerance
    np.testing.assert_allclose(result.test_probs, classifier.predict_proba(scaler.transform(test)), atol=1e-2)
    assert result.test_ua == pytest.approx(np.mean(recall))
    assert result.baseline and result.variant == variant
    assert (tmp_path / "folds" / fold.name / variant / "result.json").is_file()


def row(fold: str, variant: str, seed: int, ua: float, dominant: str | None = None) -> FoldResult:
    return FoldResult(
        fold,
        variant,
        0.5,
        0.5,
        ua,
        ua,
        1,
        10,
        [[1, 0], [0, 1]],
        ["a", "b"],
        [0, 1],
        [0, 1],
        [[1.0, 0.0], [0.0, 1.0]],
        seed=seed,
        dominant=dominant,
    )


def test_summary_spans_folds_and_seeds_with_delta_to_dominant_stream():
    results = []
    for fold, seed, deep, spectrogram, ism, dominant in [
        ("f1", 0, 0.6, 0.5, 0.65, "deep"),
        ("f1", 1, 0.7, 0.5, 0.7, "deep"),
        ("f2", 0, 0.4, 0.6, 0.7, "spectrogram"),
        ("f2", 1, 0.5, 0.4, 0.45, "deep"),
    ]:
        results += [
            row(fold, "deep", seed, deep),
            row(fold, "spectrogram", seed, spectrogram),
            row(fold, "ism", seed, ism, dominant),
        ]
    summary = summarize(results, ["a", "b"])
    assert summary["ism"]["ua_mean"] == pytest.approx(62.5)
    assert summary["ism"]["seeds"] == [0, 1, 0, 1] and summary["ism"]["folds"] == ["f1", "f1", "f2", "f2"]
    assert summary["ism"]["delta_ua"] == pytest.approx([5.0, 0.0, 10.0, -5.0])
    assert summary["ism"]["delta_ua_mean"] == pytest.approx(2.5)
    assert summary["deep"]["delta_ua"] is None


def test_statistics_pooling_is_a_choice_of_the_deep_network():
    from nni_emotionnas.spaces.cells.refs import resolve_cell
    from nni_emotionnas.spaces.deep import RecurrentNetwork, RecurrentSpaceConfig

    config = RecurrentSpaceConfig(input_dim=5, hidden_size=6, pooling="statistics")
    net = RecurrentNetwork(resolve_cell("gru", "cells"), config, num_classes=3)
    assert net.embedding_dim == 12 and net.classifier.in_features == 12
    frames, mask = torch.randn(2, 7, 5), torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    sequence = net.encode(frames)
    pooled = net.embed({"frames": frames, "mask": mask})
    torch.testing.assert_close(pooled[1, :6], sequence[1, :4].mean(dim=0))
    torch.testing.assert_close(pooled[1, 6:], sequence[1, :4].std(dim=0, unbiased=False))
    attention = RecurrentNetwork(resolve_cell("gru", "cells"), RecurrentSpaceConfig(input_dim=5, hidden_size=6), 3)
    assert attention.embedding_dim == 6  # the paper's attention pooling stays the default


def test_seeds_train_every_variant_per_seed_streams_before_fusions(corpus, tmp_path):
    experiment = experiment_from_dict({**SMALL, "run": {"variants": ["ism"], "seeds": [3, 7]}}, tmp_path)
    cv = CrossValidation(experiment, corpus, tmp_path / "run", progress=False)
    steps = [(fold.name, variant, seed) for fold, variant, seed in cv.steps()]
    first = corpus.folds[0].name
    order = ("spectrogram", "deep", "probe_spectrogram", "probe_deep", "classic", "probe_fusion", "ism")
    assert steps[:7] == [(first, v, 3) for v in order]
    assert steps[7:14] == [(first, v, 7) for v in order]
    assert len(steps) == 14 * len(corpus.folds)
    assert cv.variant_dir(corpus.folds[0], "ism", 3) == tmp_path / "run" / "folds" / first / "ism"
    assert cv.variant_dir(corpus.folds[0], "ism", 7) == tmp_path / "run" / "folds" / first / "seed7" / "ism"
    with pytest.raises(ConfigError, match=r"experiment.run: seeds: .* no repeats"):
        experiment_from_dict({**SMALL, "run": {"seeds": [1, 1]}}, tmp_path)


def stream_network(stream: str, corpus) -> nn.Module:
    """A small frozen network of the stream's space with the input-statistics skip."""
    from nni_emotionnas.spaces import deep as R
    from nni_emotionnas.spaces import spectrogram as S

    classes = len(corpus.classes)
    if stream == "spectrogram":
        space = S.build_space(S.SpectrogramSpaceConfig(channels=2, nodes=2, pooling="time_statistics",
                                                       input_statistics=True, input_rows=32), classes)
    else:
        space = R.build_space(R.RecurrentSpaceConfig(input_dim=corpus.deep_dim, hidden_size=8, nodes=2,
                                                     attention_dim=4, input_statistics=True), classes)
    return space.freeze({label: mutable.default() for label, mutable in space.simplify().items()})


@pytest.mark.parametrize("stream", ["spectrogram", "deep"])
def test_stream_started_from_probe_is_the_probe_then_only_keeps_or_improves_it(corpus, tmp_path, stream):
    """`train.probe_start: [stream]`: before its first step the network's probabilities are those of a
    standardised balanced logistic regression on its skip's statistics of the training speakers (the
    probe); the cells' columns of the classifier start at zero; training keeps the start as a candidate."""
    from nni_emotionnas.evaluation.probe_start import start_stream
    from nni_emotionnas.training.evaluator import predict_logits
    from nni_emotionnas.training.metrics import score

    fold = corpus.folds[1]
    train, val, test = (corpus.dataset(fold.name, part, stream) for part in ("train", "val", "test"))
    torch.manual_seed(0)
    model = stream_network(stream, corpus)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05, probe_start=[stream])
    assert start_stream(model, stream, train, config)

    def statistics(dataset) -> np.ndarray:
        rows = []
        for inputs, _ in dataset:
            values = inputs[0].T if stream == "spectrogram" else inputs["frames"][inputs["mask"]]
            rows.append(torch.cat([values.mean(0), values.std(0, unbiased=False)]).double().numpy())
        return np.stack(rows)

    scaler = StandardScaler().fit(statistics(train))
    probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(
        scaler.transform(statistics(train)), corpus.labels[list(fold.train)]
    )
    logits, labels = predict_logits(model, test)
    expected = probe.predict_proba(scaler.transform(statistics(test)))
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), expected, atol=1e-3)
    skip_width = statistics(train).shape[1]
    assert torch.count_nonzero(model.classifier.weight[:, :-skip_width]) == 0
    val_logits, val_labels = predict_logits(model, val)
    start_ua = score(val_labels, val_logits.argmax(1), len(corpus.classes)).ua
    fit = fit_fixed(model, train, val, None, config, tmp_path, len(corpus.classes), resume=False, keep_initial=True)
    assert fit.val.ua >= start_ua
    weights = model.classifier.weight.detach().clone()
    assert not start_stream(model, stream, train, TrainConfig())  # not named: the network is left as built
    assert torch.equal(model.classifier.weight, weights)


def test_probe_start_needs_the_skip(corpus):
    from nni_emotionnas.evaluation.probe_start import start_stream
    from nni_emotionnas.spaces.cells.refs import resolve_cell
    from nni_emotionnas.spaces.deep import RecurrentNetwork, RecurrentSpaceConfig

    net = RecurrentNetwork(resolve_cell("gru", "cells"), RecurrentSpaceConfig(input_dim=corpus.deep_dim), 4)
    train = corpus.dataset(corpus.folds[0].name, "train", "deep")
    with pytest.raises(ConfigError, match="train.probe_start: needs the stream's input-statistics skip"):
        start_stream(net, "deep", train, TrainConfig(probe_start=["deep"]))


def test_probe_start_with_two_classes_gives_the_binary_probe():
    """scikit-learn keeps one logit for two classes; the network's two logits must give its probabilities."""
    from nni_emotionnas.evaluation.probe_start import start_from_probe
    from nni_emotionnas.spaces import deep as R
    from nni_emotionnas.training.evaluator import predict_logits

    torch.manual_seed(0)
    space = R.build_space(R.RecurrentSpaceConfig(input_dim=3, hidden_size=4, nodes=2, attention_dim=2,
                                                 input_statistics=True), 2)
    net = space.freeze({label: mutable.default() for label, mutable in space.simplify().items()})
    data = [({"frames": torch.randn(6, 3) * (1 + label) + label, "mask": torch.ones(6, dtype=torch.bool)}, label)
            for label in [0, 1] * 12]
    start_from_probe(net, data, seed=0, batch_size=8)
    statistics = np.stack([torch.cat([x["frames"].mean(0), x["frames"].std(0, unbiased=False)]).double().numpy()
                           for x, _ in data])
    labels = np.array([y for _, y in data])
    scaler = StandardScaler().fit(statistics)
    probe = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(statistics), labels)
    logits, _ = predict_logits(net, data)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(),
                               probe.predict_proba(scaler.transform(statistics)), atol=1e-3)


class BatchCounter(nn.Module):
    """A linear classifier that counts the examples it is trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 3)
        self.trained_on = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.trained_on += len(x) if self.training else 0
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("epochs", [0, 3])
def test_fit_epochs_trains_exactly_that_many_epochs(tmp_path, epochs):
    from nni_emotionnas.training.fit import fit_epochs

    data = TensorDataset(torch.randn(20, 1, 8, 8), torch.arange(20) % 3)
    torch.manual_seed(0)
    model = BatchCounter()
    before = model.linear.weight.detach().clone()
    fit_epochs(model, data, TrainConfig(epochs=10, batch_size=8, lr=0.01), epochs, tmp_path, num_classes=3)
    assert model.trained_on == epochs * len(data)
    assert torch.equal(model.linear.weight, before) == (epochs == 0)


def refit_run(corpus, tmp_path, train: dict, variants: list[str]) -> CrossValidation:
    """A cross-validation whose deep stream is a small searched-cell network (its genotype written where the
    run's search would put it) and whose spectrogram stream is a small ResNet baseline."""
    from nni.mutable import MutableAnnotation

    from nni_emotionnas.spaces import deep as R
    from nni_emotionnas.spaces.genotype import make_record, write_genotype

    experiment = experiment_from_dict(
        {**SMALL, "model": {"spectrogram": "resnet_small"}, "run": {"variants": variants, "main": variants[0],
                                                                      "dominant": "deep"},
         "train": {"batch_size": 8, "refit": True, **train}}, tmp_path)
    cv = CrossValidation(experiment, corpus, tmp_path / "run", progress=False)
    config = R.RecurrentSpaceConfig(input_dim=corpus.deep_dim, hidden_size=8, nodes=2, attention_dim=4,
                                    input_statistics=True)
    space = R.build_space(config, len(corpus.classes))
    choices = {label: m for label, m in space.simplify().items() if not isinstance(m, MutableAnnotation)}
    architecture = {label: mutable.default() for label, mutable in choices.items()}
    record = make_record(stream="deep", architecture=architecture, space_config=config,
                         num_classes=len(corpus.classes), classes=list(corpus.classes))
    write_genotype(record, cv.genotype_path(corpus.folds[0], "deep"))
    return cv


def test_refit_of_a_kept_probe_start_is_the_probe_on_training_and_validation_speakers(corpus, tmp_path):
    """`train.refit` with `probe_start`: when no epoch beats the start on validation (lr 10 wrecks every
    epoch), the refit trains 0 epochs from a probe fitted on training + validation speakers: exactly the
    `probe_deep` baseline's test probabilities."""
    cv = refit_run(corpus, tmp_path, {"epochs": 1, "lr": 10.0, "probe_start": ["deep"]}, ["deep"])
    fold = corpus.folds[0]
    result = cv.train_variant(fold, "deep")
    assert (result.best_epoch, result.refit_epochs) == (-1, 0)
    probe = cv.baseline_fit(fold, "probe_deep", cv.seeds[0])
    np.testing.assert_allclose(np.array(result.test_probs), probe.test_probs, atol=1e-3)
    # the start chosen on validation is the probe of the training speakers alone: a different classifier
    selected, refitted = (torch.load(cv.variant_dir(fold, "deep", 0) / name, weights_only=True)
                          for name in ("selected.pt", "model.pt"))
    assert not torch.allclose(selected["classifier.weight"], refitted["classifier.weight"])


def test_stream_lr_trains_that_stream_at_its_own_rate(corpus, tmp_path):
    """`train.stream_lr`: the deep stream's fit and refit run at its own rate (1e-7: its weights stay where
    they were built, within Adam's steps of 1e-7), the spectrogram stream at `lr` (10: far from its start)."""
    cv = refit_run(corpus, tmp_path, {"epochs": 1, "lr": 10.0, "stream_lr": {"deep": 1e-7}}, ["ism"])
    fold = corpus.folds[0]
    moved = {}
    for stream in ("spectrogram", "deep"):
        cv.train_variant(fold, stream)
        built = cv.build(fold, stream, 0).state_dict()
        for name in ("selected.pt", "model.pt"):
            trained = torch.load(cv.variant_dir(fold, stream, 0) / name, weights_only=True)
            moved[stream, name] = max((trained[k].double() - built[k].double()).abs().max().item()
                                      for k in built if built[k].is_floating_point() and "running" not in k)
    assert moved["deep", "selected.pt"] < 1e-4 and moved["deep", "model.pt"] < 1e-4
    assert moved["spectrogram", "selected.pt"] > 0.1 and moved["spectrogram", "model.pt"] > 0.1


def test_refit_retrains_streams_and_fusion_for_the_chosen_epochs(corpus, tmp_path):
    """Streams and ISM are refitted for the epochs chosen on validation; the fusion's own choice starts from
    the streams as chosen on validation (`selected.pt`), never from streams that trained on those speakers."""
    cv = refit_run(corpus, tmp_path, {"epochs": 2, "lr": 0.01, "fusion_init": "streams", "fusion_head_epochs": 1,
                                      "fusion_finetune_epochs": 1},
                   ["ism"])
    fold = corpus.folds[0]
    for stream in ("spectrogram", "deep"):
        result = cv.train_variant(fold, stream)
        assert result.refit_epochs == result.best_epoch + 1 >= 1
        folder = cv.variant_dir(fold, stream, 0)
        selected, refitted = (torch.load(folder / name, weights_only=True) for name in ("selected.pt", "model.pt"))
        assert any(not torch.equal(selected[k], refitted[k]) for k in selected)
    fused = cv.train_variant(fold, "ism")
    assert fused.refit_epochs is not None and fused.refit_epochs >= 0 and fused.best_step is not None
    chosen = cv.from_streams(fold, "ism", 0)
    selected = torch.load(cv.variant_dir(fold, "deep", 0) / "selected.pt", weights_only=True)
    for key, value in chosen.deep_net.state_dict().items():
        torch.testing.assert_close(value, selected[key])
    refitted = cv.from_streams(fold, "ism", 0, refitted=True)
    model = torch.load(cv.variant_dir(fold, "deep", 0) / "model.pt", weights_only=True)
    for key, value in refitted.deep_net.state_dict().items():
        torch.testing.assert_close(value, model[key])
