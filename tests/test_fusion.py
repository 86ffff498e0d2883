"""ISM against its formula with fixed weights; the comparison fusions; the dominant-stream switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nni_emotionnas.models.fusion import FusionHead, TwoStreamModel


def fixed(head: FusionHead) -> FusionHead:
    torch.manual_seed(0)
    for p in head.parameters():
        nn.init.normal_(p)
    return head


def test_ism_matches_paper_formula():
    head = fixed(FusionHead("ism", spectrogram_dim=3, deep_dim=4, num_classes=2, gate="paper"))
    x1, x2 = torch.randn(5, 3), torch.randn(5, 4)
    w1, b1 = head.project_other.weight, head.project_other.bias
    w2, b2 = head.project_dominant.weight, head.project_dominant.bias
    h1 = x1 @ w1.T + b1
    a1 = torch.tanh((x2 @ w2.T + b2) * h1)
    torch.testing.assert_close(head.fuse(x1, x2), x2 + a1 * h1)
    torch.testing.assert_close(head(x1, x2), head.classifier(x2 + a1 * h1))


@pytest.mark.parametrize("mode, combine", [("sum", torch.add), ("max", torch.maximum), ("min", torch.minimum)])
def test_elementwise_fusions(mode, combine):
    head = fixed(FusionHead(mode, spectrogram_dim=3, deep_dim=4, num_classes=2))
    x1, x2 = torch.randn(5, 3), torch.randn(5, 4)
    torch.testing.assert_close(head.fuse(x1, x2), combine(x2, head.project_other(x1)))
    assert head.output_dim == 4


def test_concat_fusion():
    head = fixed(FusionHead("concat", spectrogram_dim=3, deep_dim=4, num_classes=2))
    x1, x2 = torch.randn(5, 3), torch.randn(5, 4)
    torch.testing.assert_close(head.fuse(x1, x2), torch.cat([x1, x2], dim=1))
    assert head.classifier.in_features == 7


def test_dominant_stream_switch_keeps_spectrogram_intact():
    head = fixed(FusionHead("ism", spectrogram_dim=3, deep_dim=4, num_classes=2, dominant="spectrogram", gate="paper"))
    x1, x2 = torch.randn(5, 3), torch.randn(5, 4)
    assert head.project_other.in_features == 4 and head.project_other.out_features == 3
    h2 = head.project_other(x2)
    expected = x1 + torch.tanh(head.project_dominant(x1) * h2) * h2
    torch.testing.assert_close(head.fuse(x1, x2), expected)


def test_unknown_mode_rejected():
    with pytest.raises(ValueError, match="fusion mode 'avg'"):
        FusionHead("avg", 3, 4, 2)


class _Stream(nn.Module):
    def __init__(self, dim: int, key: str | None) -> None:
        super().__init__()
        self.key, self.embedding_dim, self.lin = key, dim, nn.LazyLinear(dim)

    def embed(self, inputs):
        x = inputs if self.key is None else inputs[self.key]
        return self.lin(x.flatten(1))


def test_two_stream_model_routes_inputs():
    model = TwoStreamModel(_Stream(3, None), _Stream(4, "frames"), FusionHead("ism", 3, 4, num_classes=4))
    inputs = {"spectrogram": torch.randn(2, 1, 8, 8), "frames": torch.randn(2, 5, 6), "mask": torch.ones(2, 5).bool()}
    assert model(inputs).shape == (2, 4)
