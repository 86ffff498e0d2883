"""End to end: a tiny DARTS search through NNI's NasExperiment, genotype export, rebuild and retraining,
and the `emotionnas search` / `train` commands on a miniature synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fixed_genotype
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from torch.utils.data import TensorDataset

from nni_emotionnas.cli import app as cli
from nni_emotionnas.search.run import run_search, split_for_search
from nni_emotionnas.spaces import spectrogram as S
from nni_emotionnas.spaces.genotype import build_fixed, read_genotype
from nni_emotionnas.training.evaluator import TrainConfig
from nni_emotionnas.training.fit import fit_fixed

TINY = S.SpectrogramSpaceConfig(channels=2, layers=3, nodes=2, stem=S.StemConfig(multiplier=2))



def synthetic(n: int, seed: int) -> TensorDataset:
    """Class-dependent brightness in one quadrant: learnable by a tiny cell network."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 16, 16, generator=g) * 0.5
    for c in range(4):
        x[y == c, :, (c // 2) * 8:(c // 2) * 8 + 8, (c % 2) * 8:(c % 2) * 8 + 8] += 1.5
    return TensorDataset(x, y)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("search")
    result = run_search(
        space_mod=S, space_config=TINY, train_dataset=synthetic(40, 0), num_classes=4,
        search_config=TrainConfig(epochs=2, batch_size=8, seed=1), strategy_name="DARTS",
        strategy_args={"arc_learning_rate": 0.05}, run_dir=run_dir, stream="spectrogram",
        classes=["a", "b", "c", "d"], fold="f0",
    )
    return result


def test_weight_and_architecture_halves_are_disjoint_and_stratified() -> None:
    weights, arch = split_for_search(synthetic(40, 0), seed=0)
    assert len(weights) == len(arch) == 20 and not set(weights.indices) & set(arch.indices)
    assert np.bincount([int(arch[i][1]) for i in range(20)]).tolist() == [5, 5, 5, 5]


@pytest.mark.slow
def test_search_moves_architecture_weights_and_writes_genotype(searched) -> None:
    record = read_genotype(searched.genotype_path)
    assert record["fold"] == "f0" and record["seed"] == 1 and record["strategy"]["name"] == "DARTS"
    assert record["space_config"]["channels"] == 2 and record["classes"] == ["a", "b", "c", "d"]
    weights = record["edge_weights"]
    assert len(weights) == 2 * (2 + 3)  # (normal, reduce) x edges into nodes 2 and 3
    for edge in weights.values():
        assert set(edge) == set(TINY.ops) and sum(edge.values()) == pytest.approx(1.0, abs=1e-5)
    # alphas start at ~N(0, 1e-3): uniform 1/8 up to ~1e-4; two epochs of Adam at lr 0.05 move them far more
    moved = max(abs(p - 1 / 8) for edge in weights.values() for p in edge.values())
    assert moved > 5e-3
    assert "none" not in record["architecture"].values()
    assert S.derive_architecture(record["nni_export"], weights, TINY) == record["architecture"]
    assert record["genotype"] == json.loads(json.dumps(S.readable_genotype(record["architecture"])))
    metrics = record["search_metrics"]
    assert metrics["train_loss"] > 0 and 0 <= metrics["supernet_arch_half_ua"] <= 1
    assert searched.drawing_path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_genotype_rebuilds_and_retrains_with_best_checkpoint(searched, tmp_path: Path) -> None:
    record = read_genotype(searched.genotype_path)
    net, _ = build_fixed(record)
    assert fixed_genotype(net) == record["genotype"]
    assert net(torch.randn(3, 1, 16, 16)).shape == (3, 4)
    config = TrainConfig(epochs=3, batch_size=8, lr=0.01)
    result = fit_fixed(net, synthetic(40, 1), synthetic(20, 2), synthetic(20, 3), config, tmp_path, num_classes=4)
    assert Path(result.best_checkpoint).is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    test_labels = synthetic(20, 3).tensors[1].numpy()
    assert result.test.ua == pytest.approx(balanced_accuracy_score(test_labels, result.test_predictions))
    assert result.test.wa == pytest.approx(accuracy_score(test_labels, result.test_predictions))
    # the restored weights are the best epoch's: their val UA is the best one logged
    assert result.val.ua == pytest.approx(result.best_val_ua, abs=1e-6)


@pytest.mark.slow
def test_search_and_train_commands_on_synthetic_corpus(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "space.yml").write_text("channels: 2\nlayers: 3\nnodes: 2\nstem: {multiplier: 2, stride: 4}\n")
    (tmp_path / "exp.yml").write_text(
        "name: tiny\n"
        "corpus: {reader: synthetic, options: {sessions: 3, utterances_per_emotion: 2, min_seconds: 1.0,"
        " max_seconds: 1.4}}\n"
        "features: {n_jobs: 1, spectrogram: {duration: 1.5}}\n"
        "spectrogram_space: space.yml\n"
        "search: {epochs: 1, batch_size: 8}\n"
        "train: {epochs: 1, batch_size: 8}\n"
    )
    exp = str(tmp_path / "exp.yml")
    assert cli.main(["search", exp, "--stream", "spectrogram", "--out", str(tmp_path / "s")]) == 0
    genotype = tmp_path / "s" / "genotype.json"
    assert read_genotype(genotype)["num_classes"] == 4
    assert cli.main(["train", exp, "--stream", "spectrogram", "--genotype", str(genotype),
                     "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "parameters: " in out and "test UA " in out
    results = json.loads((tmp_path / "t" / "results.json").read_text())
    assert set(results) >= {"val", "test", "parameters", "fold"} and (tmp_path / "t" / "confusion_test.png").is_file()
    # a second search into the same folder refuses to overwrite the genotype
    assert cli.main(["search", exp, "--stream", "spectrogram", "--out", str(tmp_path / "s")]) == 2
    assert "already exists" in capsys.readouterr().err
