"""Fusion started from the trained streams: zero-gate ISM equals its dominant stream at step 0, the frozen
phase leaves the streams alone, the fine-tune phase moves them at its rate, `dominant: auto` picks by
validation UA."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from nni_emotionnas.config.training import AugmentConfig, TrainConfig
from nni_emotionnas.evaluation.crossval import CrossValidation, pick_dominant
from nni_emotionnas.evaluation.fusion_fit import fit_fusion_from_streams, phase_configs
from nni_emotionnas.models.baselines import build_baseline
from nni_emotionnas.models.baselines_recurrent import build_recurrent_baseline
from nni_emotionnas.models.fusion import FusionHead, TwoStreamModel
from nni_emotionnas.training.fit import fit_fixed


class TwoStreamData(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.spectrogram = torch.randn(n, 1, 16, 16, generator=g)
        self.frames = torch.randn(n, 6, 5, generator=g)
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        inputs = {"spectrogram": self.spectrogram[i], "frames": self.frames[i], "mask": torch.ones(6, dtype=torch.bool)}
        return inputs, int(self.labels[i])


def streams() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return build_baseline("resnet_small", 3), build_recurrent_baseline("rnn_h512_l1", 5, 3)


@pytest.mark.parametrize("dominant", ["deep", "spectrogram"])
@pytest.mark.parametrize("mode", ["ism", "concat", "sum"])
def test_fusion_started_from_streams_outputs_the_dominant_streams_logits(mode, dominant):
    spectrogram_net, deep_net = streams()
    head = FusionHead(mode, spectrogram_net.embedding_dim, deep_net.embedding_dim, 3, dominant=dominant, gate="zero")
    model = TwoStreamModel(spectrogram_net, deep_net, head).eval()
    dominant_net = deep_net if dominant == "deep" else spectrogram_net
    head.start_from(dominant_net.classifier)
    batch = torch.utils.data.default_collate([TwoStreamData(4, 1)[i][0] for i in range(4)])
    stream_inputs = batch["spectrogram"] if dominant == "spectrogram" else {k: batch[k] for k in ("frames", "mask")}
    torch.testing.assert_close(model(batch), dominant_net(stream_inputs))


def test_paper_gate_is_not_the_dominant_stream_at_start():
    spectrogram_net, deep_net = streams()
    head = FusionHead("ism", spectrogram_net.embedding_dim, deep_net.embedding_dim, 3, gate="paper")
    head.start_from(deep_net.classifier)
    model = TwoStreamModel(spectrogram_net, deep_net, head).eval()
    batch = torch.utils.data.default_collate([TwoStreamData(4, 1)[i][0] for i in range(4)])
    assert not torch.allclose(model(batch), deep_net({"frames": batch["frames"], "mask": batch["mask"]}))


def zero_gate_ism(start_from_deep: bool) -> TwoStreamModel:
    """ISM (zero gate, deep stream dominant) over fresh streams; optionally started as the deep stream."""
    spectrogram_net, deep_net = streams()
    head = FusionHead("ism", spectrogram_net.embedding_dim, deep_net.embedding_dim, 3, gate="zero")
    if start_from_deep:
        head.start_from(deep_net.classifier)
    return TwoStreamModel(spectrogram_net, deep_net, head)


def stream_state(model: TwoStreamModel) -> dict[str, torch.Tensor]:
    state = {f"s.{k}": v.clone() for k, v in model.spectrogram_net.state_dict().items()}
    return state | {f"d.{k}": v.clone() for k, v in model.deep_net.state_dict().items()}


def test_frozen_head_phase_changes_no_stream_parameter_or_buffer(tmp_path):
    model = zero_gate_ism(start_from_deep=True)
    head = model.head
    before, head_before = stream_state(model), copy.deepcopy(head.state_dict())
    config = TrainConfig(
        epochs=1,
        batch_size=4,
        lr=0.05,
        fusion_head_epochs=2,
        fusion_finetune_epochs=0,
        augment=AugmentConfig(enabled=False),
    )
    data = TwoStreamData(12, 0)
    model.freeze_streams(True)
    fit_fixed(model, data, data, None, phase_configs(config)[0][1], tmp_path, 3, resume=False)
    after = stream_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch-norm statistics included
    assert any(not torch.equal(head_before[k], v) for k, v in head.state_dict().items())


def test_finetune_phase_moves_streams_at_the_configured_rate(tmp_path):
    model = zero_gate_ism(start_from_deep=False)
    config = TrainConfig(
        epochs=1,
        batch_size=12,
        lr=0.05,
        weight_decay=0.0,
        fusion_head_epochs=0,
        fusion_finetune_epochs=1,
        fusion_finetune_lr=0.002,
        augment=AugmentConfig(enabled=False),
    )
    ((name, finetune),) = phase_configs(config)
    assert name == "finetune" and finetune.lr == 0.002 and finetune.epochs == 1
    before = {k: v.clone() for k, v in model.deep_net.named_parameters()}
    fit_fixed(model, TwoStreamData(12, 0), TwoStreamData(6, 1), None, finetune, tmp_path, 3, resume=False)
    steps = torch.cat([(p.detach() - before[k]).abs().flatten() for k, p in model.deep_net.named_parameters()])
    assert steps.max() > 0.5 * 0.002  # Adam's first step moves each weight by about the learning rate
    assert steps.max() < 1.01 * 0.002


def test_head_phase_trains_at_fusion_head_lr_and_defaults_to_lr(tmp_path):
    """The frozen-stream phase runs at `fusion_head_lr` (ISM's zero gate moves by about that per Adam step),
    or at `lr` when it is null; a non-positive rate is refused naming the key."""
    config = TrainConfig(lr=0.01, fusion_head_epochs=1, fusion_finetune_epochs=0, augment=AugmentConfig(enabled=False))
    assert phase_configs(config)[0][1].lr == 0.01
    fast = TrainConfig(lr=0.01, batch_size=12, weight_decay=0.0, fusion_head_lr=0.3, fusion_head_epochs=1,
                       fusion_finetune_epochs=0, augment=AugmentConfig(enabled=False))
    ((name, head_phase),) = phase_configs(fast)
    assert name == "head" and head_phase.lr == 0.3
    model = zero_gate_ism(start_from_deep=False)
    model.freeze_streams(True)
    fit_fixed(model, TwoStreamData(12, 0), TwoStreamData(6, 1), None, head_phase, tmp_path, 3, resume=False)
    gate_step = model.head.gate.detach().abs()
    assert gate_step.max() > 0.5 * 0.3 and gate_step.max() < 1.01 * 0.3  # one Adam step of about the rate
    with pytest.raises(ValueError, match="fusion_head_lr must be positive"):
        TrainConfig(fusion_head_lr=0.0)


def test_fusion_phases_never_end_below_their_start(tmp_path):
    model = zero_gate_ism(start_from_deep=True)
    config = TrainConfig(
        epochs=1,
        batch_size=4,
        lr=0.05,
        fusion_head_epochs=1,
        fusion_finetune_epochs=1,
        augment=AugmentConfig(enabled=False),
    )
    val = TwoStreamData(9, 3)
    start = copy.deepcopy(model)
    from nni_emotionnas.training.evaluator import predict_logits
    from nni_emotionnas.training.metrics import score

    def val_ua(net: nn.Module) -> float:
        logits, labels = predict_logits(net, val)
        return score(labels, logits.argmax(axis=1), 3).ua

    fit, origin, phase_epochs = fit_fusion_from_streams(model, TwoStreamData(12, 0), val, config, tmp_path, 3)
    assert fit.val.ua == pytest.approx(val_ua(model)) and fit.val.ua >= val_ua(start)
    assert origin == "start" or origin.split(":")[0] in {"head", "finetune"}
    # what a refit repeats: each phase's epochs up to the weights it kept (0: it kept its start)
    assert set(phase_epochs) == {"head", "finetune"} and all(0 <= n <= 1 for n in phase_epochs.values())
    if origin != "start":
        phase, epoch = origin.split(":")
        assert phase_epochs[phase] == int(epoch) + 1
    assert not model.streams_frozen and all(p.requires_grad for p in model.parameters())


def test_pick_dominant_each_way():
    assert pick_dominant({"spectrogram": 0.61, "deep": 0.60}) == "spectrogram"
    assert pick_dominant({"spectrogram": 0.40, "deep": 0.70}) == "deep"
    assert pick_dominant({"spectrogram": 0.50, "deep": 0.50}) == "deep"


@pytest.mark.parametrize("spectrogram_ua, deep_ua, expected", [(0.8, 0.6, "spectrogram"), (0.5, 0.7, "deep")])
def test_auto_dominant_reads_the_folds_dominance_record(tmp_path, spectrogram_ua, deep_ua, expected):
    """With the fold's `dominance.json` written (as `run` leaves it), `auto` needs no corpus: what `predict` does."""
    import json
    from types import SimpleNamespace

    from nni_emotionnas.config.experiment import RunConfig

    experiment = SimpleNamespace(run=RunConfig(dominant="auto"), seed=0)
    fold = SimpleNamespace(name="f1")
    record = tmp_path / "folds" / "f1" / "dominance.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"spectrogram": spectrogram_ua, "deep": deep_ua}))
    assert CrossValidation(experiment, corpus=None, run_dir=tmp_path, progress=False).dominant(fold) == expected
    fixed = SimpleNamespace(run=RunConfig(dominant="deep"), seed=0)
    assert CrossValidation(fixed, corpus=None, run_dir=tmp_path, progress=False).dominant(fold) == "deep"
