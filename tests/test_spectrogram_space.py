"""Spectrogram DARTS space: config, shapes, reductions, `none` handling, parameter counts, genotype round
trip, baselines, strategy files and drawings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import fixed_genotype
from nni.nas.strategy import DARTS

from nni_emotionnas.config.parse import load_yaml, parse
from nni_emotionnas.config.resources import default_file
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.evaluation.plots import plot_confusion
from nni_emotionnas.models.baselines import build_baseline
from nni_emotionnas.search.strategies import build_strategy, load_strategy_spec, strategy_spec
from nni_emotionnas.spaces import space_module
from nni_emotionnas.spaces import spectrogram as S
from nni_emotionnas.spaces.genotype import build_fixed, make_record, parameter_count, read_genotype, write_genotype
from nni_emotionnas.spaces.spectrogram_draw import draw_cells

PAPER_PARAMS = 0.13e6



@pytest.fixture(scope="module")
def paper_config() -> S.SpectrogramSpaceConfig:
    path = default_file("search_spaces", S.DEFAULT_CONFIG_FILE)
    return parse(S.SpectrogramSpaceConfig, load_yaml(path), path.name)


def uniform_arch(space, op: str, source: int = 1) -> dict:
    return {label: (op if "/op_" in label else [source]) for label in space.simplify()}


def test_packaged_config_is_the_papers(paper_config: S.SpectrogramSpaceConfig) -> None:
    assert (paper_config.channels, paper_config.layers, paper_config.nodes) == (6, 3, 4)
    assert len(paper_config.ops) == 8 and "none" in paper_config.ops
    assert "none" not in paper_config.candidate_ops and len(paper_config.candidate_ops) == 7
    assert paper_config.reduction_layers == {1, 2}
    assert space_module("spectrogram") is S


def test_bad_space_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match="ops: unknown operation 'conv_9x9'"):
        parse(S.SpectrogramSpaceConfig, {"ops": ["conv_9x9"]}, "space.yml")
    with pytest.raises(ConfigError, match="space.yml.chanels: unknown key"):
        parse(S.SpectrogramSpaceConfig, {"chanels": 4}, "space.yml")
    with pytest.raises(ConfigError, match="channels: must be even"):
        parse(S.SpectrogramSpaceConfig, {"channels": 5}, "space.yml")


def test_space_labels_cells_and_never_offers_none(paper_config: S.SpectrogramSpaceConfig) -> None:
    space = S.build_space(paper_config, 4)
    labels = space.simplify()
    assert len(labels) == 2 * 4 * 2 * 2  # 2 cell types x 4 nodes x 2 inputs x (op, input)
    assert labels["normal/input_5_1"].values == [0, 1, 2, 3, 4]
    assert all("none" not in m.values for k, m in labels.items() if "/op_" in k)
    supernet = DARTS().mutate_model(S.build_space(paper_config, 4))
    alphas = {n: p for n, p in supernet.named_parameters() if "_arch_alpha" in n}
    # 14 edges per cell type, each 7 candidates + NNI's zero op (our `none`)
    assert len({p.data_ptr() for p in alphas.values()}) == 28
    assert all(p.numel() == 8 for p in alphas.values())


def test_fixed_net_shapes_and_reduction_strides(paper_config: S.SpectrogramSpaceConfig) -> None:
    space = S.build_space(paper_config, 4)
    net = space.freeze(uniform_arch(space, "sep_conv_3x3"))
    x = torch.randn(2, 1, 140, 140)
    assert net(x).shape == (2, 4)
    assert net.embed(x).shape == (2, net.embedding_dim) and net.embedding_dim == 4 * 24
    s0 = s1 = net.stem(x)
    sizes = []
    for cell in net.cells:
        s0, s1 = cell([s0, s1])
        sizes.append(tuple(s1.shape[1:]))
    assert sizes == [(24, 140, 140), (48, 70, 70), (96, 35, 35)]


def test_time_statistics_pooling_keeps_frequency(paper_config: S.SpectrogramSpaceConfig) -> None:
    """`time_statistics` embeds mean and std over time of each band: moving energy from one frequency band to
    another (same time profile) changes it, while the paper's average pooling cannot see where it sits."""
    pooling = S.SpectrogramPooling("time_statistics", channels=3, bands=4)
    low, high = torch.zeros(1, 3, 8, 10), torch.zeros(1, 3, 8, 10)
    low[:, :, :2], high[:, :, 6:] = 1.0, 1.0
    assert pooling.width == 2 * 3 * 4
    assert pooling(low).shape == (1, 24)
    assert not torch.allclose(pooling(low), pooling(high))
    average = S.SpectrogramPooling("average", channels=3, bands=4)
    torch.testing.assert_close(average(low), average(high))
    ramp = torch.arange(10.0).expand(1, 3, 8, 10)
    torch.testing.assert_close(pooling(ramp)[0, 12:], torch.full((12,), torch.arange(10.0).std(unbiased=False).item()))
    config = replace(paper_config, pooling="time_statistics", frequency_bands=5)
    space = S.build_space(config, 4)
    net = space.freeze(uniform_arch(space, "sep_conv_3x3"))
    assert net.embedding_dim == 2 * 96 * 5 and net.embed(torch.randn(2, 1, 140, 140)).shape == (2, 960)
    with pytest.raises(ConfigError, match="pooling"):
        parse(S.SpectrogramSpaceConfig, {"pooling": "max"}, "space.yml")


def test_input_statistics_skip_appends_each_rows_standardised_mean_and_std(
    paper_config: S.SpectrogramSpaceConfig,
) -> None:
    """`input_statistics: true`: the embedding ends with each spectrogram row's mean and std over time,
    standardised with the training batches' statistics (what the stream's probe reads), in the supernet and the
    frozen network; `input_rows` comes from the experiment's spectrogram size, and a mismatch is named."""
    from nni_emotionnas.config.experiment import load_experiment
    from nni_emotionnas.models.networks import space_config_for

    config = replace(paper_config, channels=2, pooling="time_statistics", frequency_bands=2,
                     input_statistics=True, input_rows=12)
    space = S.build_space(config, 4)
    net = space.freeze(uniform_arch(space, "sep_conv_3x3"))
    cells_width = 2 * (4 * 2 * 4) * 2  # mean and std of 2 bands of the last cell's 4 nodes x 4 channels
    x = torch.randn(5, 1, 12, 16)
    x[:, :, 3] += 10.0  # one loud row
    raw = torch.cat([x[:, 0].mean(-1), x[:, 0].std(-1, unbiased=False)], dim=1)
    expected = (raw - raw.mean(0)) / (raw.var(0, unbiased=False) + 1e-5).sqrt()
    for model in (space, net):
        model.train()
        assert model.embedding_dim == cells_width + 24 and model.classifier.in_features == cells_width + 24
        embedding = model.embed(x)
        torch.testing.assert_close(embedding[:, cells_width:], expected, rtol=1e-4, atol=1e-4)
        assert model(x).shape == (5, 4)
    with pytest.raises(ConfigError, match="spectrogram has 13 rows but the space's input_rows is 12"):
        net(torch.randn(2, 1, 13, 16))
    with pytest.raises(ConfigError, match="input_statistics: needs input_rows"):
        S.build_space(replace(config, input_rows=0), 4)
    experiment = load_experiment(Path(__file__).parents[1] / "examples" / "demo" / "experiment.yml")
    experiment.features.spectrogram.size = [40, 30]
    assert space_config_for(experiment, "spectrogram", None)[1].input_rows == 40


def test_parameter_counts_against_paper(paper_config: S.SpectrogramSpaceConfig) -> None:
    """The paper's C6L3 figure (~0.13M) matches the supernet; derived cells are smaller, as in DARTS."""
    supernet = DARTS().mutate_model(S.build_space(paper_config, 4))
    assert PAPER_PARAMS / 2 < parameter_count(supernet) < PAPER_PARAMS * 2
    space = S.build_space(paper_config, 4)
    heaviest = parameter_count(space.freeze(uniform_arch(space, "sep_conv_5x5")))
    lightest = parameter_count(space.freeze(uniform_arch(space, "max_pool_3x3")))
    assert lightest < heaviest < parameter_count(supernet)
    assert PAPER_PARAMS / 10 < heaviest < PAPER_PARAMS


def test_derivation_never_keeps_none_and_ranks_softmaxed_edges() -> None:
    config = S.SpectrogramSpaceConfig(channels=2, layers=3, nodes=2)
    space = S.build_space(config, 3)
    nni_export = uniform_arch(space, "skip_connect", 0)
    probs = {}
    for cell in S.CELL_LABELS:
        for node in (2, 3):
            for source in range(node):
                weights = {op: 0.05 for op in config.candidate_ops}
                weights["none"] = 0.6  # `none` dominates every edge
                weights["sep_conv_3x3" if source == node - 1 else "avg_pool_3x3"] = 0.1 + 0.05 * source
                probs[f"{cell}/{node}_{source}"] = weights
    arch = S.derive_architecture(nni_export, probs, config)
    assert "none" not in arch.values()
    # node 3 takes its two strongest incoming edges: from node 2 (0.2, sep_conv) and c_{k-1} (0.15)
    assert (arch["normal/op_3_0"], arch["normal/input_3_0"]) == ("sep_conv_3x3", [2])
    assert (arch["normal/op_3_1"], arch["normal/input_3_1"]) == ("avg_pool_3x3", [1])
    assert S.derive_architecture(nni_export, {}, config) == nni_export


def test_genotype_file_round_trips_through_freeze(tmp_path: Path) -> None:
    config = S.SpectrogramSpaceConfig(channels=2, layers=3, nodes=2)
    space = S.build_space(config, 3)
    arch = uniform_arch(space, "dil_conv_3x3", 1)
    arch["reduce/op_3_1"], arch["reduce/input_3_1"] = "max_pool_3x3", [2]
    record = make_record(stream="spectrogram", architecture=arch, space_config=config, num_classes=3, fold="f1",
                         seed=3)
    path = write_genotype(record, tmp_path / "genotype.json")
    loaded = read_genotype(path)
    assert loaded["genotype"]["reduce"][-1] == ["max_pool_3x3", 2] and loaded["fold"] == "f1"
    net, module = build_fixed(loaded)
    assert fixed_genotype(net) == loaded["genotype"]
    assert net(torch.randn(2, 1, 20, 20)).shape == (2, 3)
    broken = dict(loaded, architecture={k: v for k, v in arch.items() if k != "normal/op_2_0"})
    with pytest.raises(ConfigError, match="missing \\['normal/op_2_0'\\]"):
        build_fixed(broken)
    wrong = dict(loaded, architecture=dict(arch, **{"normal/op_2_0": "none"}))
    with pytest.raises(ConfigError, match="architecture.normal/op_2_0: 'none' not allowed"):
        build_fixed(wrong)
    (tmp_path / "bad.json").write_text(json.dumps({"stream": "spectrogram"}))
    with pytest.raises(ConfigError, match="bad.json: architecture: required key"):
        read_genotype(tmp_path / "bad.json")
    (tmp_path / "nameless.json").write_text(json.dumps({k: v for k, v in record.items() if k != "stream"}))
    with pytest.raises(ConfigError, match="nameless.json: stream: required key"):
        read_genotype(tmp_path / "nameless.json")


def test_genotype_file_of_the_old_format_names_its_stream_branch(tmp_path: Path) -> None:
    """Genotype files written before the word `stream` carry `"branch"`: they load as before."""
    config = S.SpectrogramSpaceConfig(channels=2, layers=3, nodes=2)
    record = make_record(stream="spectrogram", architecture=uniform_arch(S.build_space(config, 3), "skip_connect", 0),
                         space_config=config, num_classes=3)
    assert json.loads(write_genotype(record, tmp_path / "new.json").read_text())["stream"] == "spectrogram"
    old = {("branch" if k == "stream" else k): v for k, v in record.items()}
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = read_genotype(tmp_path / "old.json")
    assert loaded["stream"] == "spectrogram" and "branch" not in loaded
    net, module = build_fixed(loaded)
    assert module is S and net(torch.randn(2, 1, 20, 20)).shape == (2, 3)


def test_baselines_by_name() -> None:
    x = torch.randn(2, 1, 140, 140)
    big, small = build_baseline("resnet18", 4), build_baseline("resnet_small", 4)
    assert 11.0e6 < parameter_count(big) < 11.3e6
    assert PAPER_PARAMS * 0.8 < parameter_count(small) < PAPER_PARAMS * 1.2
    assert small(x).shape == (2, 4) and small.embed(x).shape == (2, small.embedding_dim)
    with pytest.raises(ConfigError, match="model.spectrogram: unknown baseline 'vgg'"):
        build_baseline("vgg", 4)


def test_strategy_files() -> None:
    name, args = load_strategy_spec(default_file("strategies", "darts.yml"))
    assert name == "DARTS" and args["gradient_clip_val"] == 5.0
    strategy = build_strategy(name, args)
    assert isinstance(strategy, DARTS) and strategy.arc_learning_rate == 3e-4
    with pytest.raises(ConfigError, match="s.yml.name: unknown strategy 'Darts'"):
        strategy_spec({"name": "Darts"}, "s.yml")
    with pytest.raises(ConfigError, match="s.yml.args.arc_lr: unknown argument of DARTS"):
        strategy_spec({"name": "DARTS", "args": {"arc_lr": 1}}, "s.yml")
    with pytest.raises(ConfigError, match="s.yml.name: required key"):
        strategy_spec({"args": {}}, "s.yml")


def test_drawings_are_written(tmp_path: Path) -> None:
    genotype = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ["dil_conv_5x5", 2], ["max_pool_3x3", 0]],
                "normal_concat": [2, 3], "reduce": [["avg_pool_3x3", 0], ["max_pool_3x3", 1]], "reduce_concat": [2]}
    png = draw_cells(genotype, tmp_path / "cells.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    conf = plot_confusion([[5, 1], [2, 7]], ["ang", "sad"], tmp_path / "c.png")
    assert conf.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="does not fit 3 classes"):
        plot_confusion([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "d.png")


def test_removed_supernet_keys_name_what_replaced_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Older space files: `supernet: fast` loads with a deprecation warning; `lean`, `nni` and `lean_supernet` are
    one-line errors naming the key. Older genotype records, which hold both keys, load whatever they hold."""
    from nni_emotionnas.search.space_json import load_space_config

    space_file = tmp_path / "space.yml"
    space_file.write_text("channels: 4\nsupernet: fast\n")
    with caplog.at_level("WARNING"):
        assert load_space_config("spectrogram", space_file).channels == 4
    assert "space.yml.supernet: 'fast': removed key (DARTS searches always run NNI's cell mixture" in caplog.text
    for line in ("supernet: nni", "supernet: lean", "lean_supernet: true"):
        space_file.write_text(line + "\n")
        with pytest.raises(ConfigError, match=rf"^space.yml.{line.split(':')[0]}: .* removed key .*CHANGELOG.md\)$"):
            load_space_config("spectrogram", space_file)
    config = S.SpectrogramSpaceConfig(channels=2, layers=3, nodes=2)
    arch = uniform_arch(S.build_space(config, 3), "max_pool_3x3")
    record = make_record(stream="spectrogram", architecture=arch, space_config=config, num_classes=3)
    record["space_config"].update(supernet="lean", lean_supernet=None)
    caplog.clear()
    with caplog.at_level("WARNING"):
        net, _ = build_fixed(read_genotype(write_genotype(record, tmp_path / "genotype.json")))
    assert "space_config.supernet: 'lean': removed key" in caplog.text and "lean_supernet" not in caplog.text
    assert net(torch.randn(1, 1, 12, 12)).shape == (1, 3)
