"""PC-DARTS (`partial_channels`): narrower ops, edge-normalisation weights searched and exported, cells
retrained at full width."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nni.nas.strategy import DARTS
from torch.utils.data import TensorDataset

from nni_emotionnas.search.run import run_search
from nni_emotionnas.spaces import spectrogram as S
from nni_emotionnas.spaces.genotype import build_fixed, read_genotype
from nni_emotionnas.spaces.kernels.pc_darts import PartialChannelCell, channel_shuffle
from nni_emotionnas.training.evaluator import TrainConfig

PC = S.SpectrogramSpaceConfig(channels=8, layers=3, nodes=2, partial_channels=4, stem=S.StemConfig(multiplier=1))


def test_partial_channel_supernet_shapes_and_edge_weights() -> None:
    net = DARTS().mutate_model(S.build_space(PC, 3))
    assert all(type(cell) is PartialChannelCell for cell in net.cells)
    sep = net.cells[0].ops[0][0]["sep_conv_3x3"]
    assert sep[0][1].weight.shape == (2, 1, 3, 3)  # 8 channels / K=4
    logits = net(torch.randn(2, 1, 13, 13))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    betas = {name: p for name, p in net.named_parameters() if name.endswith("_edges")}
    assert sorted(name.split("._arch_alpha.")[-1] for name in betas) == [
        "normal/2_edges",
        "normal/3_edges",
        "reduce/2_edges",
        "reduce/3_edges",
    ]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in betas.values())
    with pytest.raises(ValueError, match="partial_channels: must be at least 1 and divide channels"):
        S.SpectrogramSpaceConfig(channels=6, partial_channels=4)


def test_channel_shuffle_interleaves_the_groups() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_tiny_partial_channel_search_exports_edge_weights_and_retrains_full_width(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 1, 12, 12, generator=g), torch.arange(24) % 4
    result = run_search(
        space_mod=S,
        space_config=PC,
        train_dataset=TensorDataset(x, y),
        num_classes=4,
        search_config=TrainConfig(epochs=1, batch_size=8, seed=0),
        strategy_name="DARTS",
        strategy_args={"arc_learning_rate": 0.05},
        run_dir=tmp_path,
        stream="spectrogram",
    )
    record = read_genotype(result.genotype_path)
    edges = record["edge_weights"]["reduce/3_edges"]
    assert set(edges) == {"0", "1", "2"} and sum(edges.values()) == pytest.approx(1.0)
    assert record["space_config"]["partial_channels"] == 4
    assert "none" not in record["architecture"].values()
    net, _ = build_fixed(record)
    widths = [
        len(norm.weight) for cell in net.cells for norm in cell.ops.modules() if isinstance(norm, torch.nn.BatchNorm2d)
    ]
    assert widths and set(widths) <= {8, 16, 32}  # full width (8, then doubled per reduction), not a quarter
    assert net(torch.randn(2, 1, 12, 12)).shape == (2, 4)
