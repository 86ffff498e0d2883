"""The fusion head phase on cached frozen-stream embeddings trains the head exactly as the live path does,
with augmentation on either stream, and a fold's fusions share one cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import SMALL_CORPUS, SMALL_FEATURES
from test_fusion_from_streams import TwoStreamData, streams

from nni_emotionnas.config.experiment import experiment_from_dict
from nni_emotionnas.config.training import AugmentConfig, TrainConfig
from nni_emotionnas.evaluation.crossval import CrossValidation
from nni_emotionnas.evaluation.frozen_streams import EmbeddedSplit, FrozenStreams, cached_streams
from nni_emotionnas.evaluation.fusion_fit import fit_fusion_from_streams
from nni_emotionnas.features.prepared import prepare
from nni_emotionnas.models.fusion import FusionHead, TwoStreamModel


def fusion(mode: str) -> TwoStreamModel:
    """A fusion over a batch-norm ResNet and an RNN stream (their train and eval embeddings differ), started
    as the deep stream, with head dropout (global random draws the frozen forward must leave alone)."""
    spectrogram_net, deep_net = streams()
    head = FusionHead(mode, spectrogram_net.embedding_dim, deep_net.embedding_dim, 3, dropout=0.5)
    head.start_from(deep_net.classifier)
    return TwoStreamModel(spectrogram_net, deep_net, head)


def head_after_last_epoch(folder) -> dict[str, torch.Tensor]:
    """The head's weights after the phase's last epoch (`last.ckpt`), whichever epoch the fit then keeps."""
    state = torch.load(folder / "head" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {key.split(".head.")[1]: value for key, value in state.items() if ".head." in key}


@pytest.mark.parametrize("augmented", [[], ["spectrogram"], ["deep"]])
def test_head_phase_on_cached_embeddings_gives_the_live_paths_head(tmp_path, augmented):
    config = TrainConfig(batch_size=4, lr=0.05, fusion_head_epochs=3, fusion_finetune_epochs=0, seed=3,
                         augment=AugmentConfig(enabled=bool(augmented), streams=augmented or ["spectrogram"]))
    train, val = TwoStreamData(12, 0), TwoStreamData(12, 1)  # equal sizes: a swapped split would still run
    live, cached = fusion("ism"), fusion("ism")
    frozen = FrozenStreams()
    live_fit, live_origin, _ = fit_fusion_from_streams(live, train, val, config, tmp_path / "live", 3)
    cached_fit, cached_origin, _ = fit_fusion_from_streams(cached, train, val, config, tmp_path / "cached", 3, frozen)
    assert {key[0]: key[1] for key in frozen.embeddings} == {
        "train": tuple(s for s in ("spectrogram", "deep") if s not in augmented), "val": ("spectrogram", "deep")
    }
    expected, got = head_after_last_epoch(tmp_path / "live"), head_after_last_epoch(tmp_path / "cached")
    start = fusion("ism").head.state_dict()
    assert max((expected[k] - v).abs().max() for k, v in start.items()) > 0.05  # the head learnt
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5)
    assert cached_origin == live_origin and cached_fit.val.ua == live_fit.val.ua
    torch.testing.assert_close(cached.head.state_dict(), live.head.state_dict(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cached.deep_net.state_dict(), fusion("ism").deep_net.state_dict())  # still frozen


def test_cache_refuses_other_stream_weights_and_unfrozen_streams():
    config, data = TrainConfig(batch_size=4, augment=AugmentConfig(enabled=False)), TwoStreamData(6, 1)
    model, other = fusion("sum"), fusion("max")
    frozen = FrozenStreams()
    with pytest.raises(RuntimeError, match="only while the streams are frozen"):
        frozen.split("val", data, model, config, augmented=False)
    model.freeze_streams(True)
    split = frozen.split("val", data, model, config, augmented=False)
    assert isinstance(split, EmbeddedSplit) and set(split[0][0]) == {"spectrogram_embedding", "deep_embedding"}
    both = dataclasses.replace(config, augment=AugmentConfig(streams=["spectrogram", "deep"]))
    assert frozen.split("train", data, model, both, augmented=True) is data  # nothing fixed to cache
    assert cached_streams(both.augment, augmented=False) == ("spectrogram", "deep")  # validation: clean
    with torch.no_grad():
        other.deep_net.classifier.weight.add_(1.0)  # a classifier change leaves embeddings alone but is refused
    other.freeze_streams(True)
    with pytest.raises(RuntimeError, match="other stream weights"):
        frozen.split("val", data, other, config, augmented=False)
    model.freeze_streams(False)
    with pytest.raises(RuntimeError, match="streams are not frozen"):
        model(torch.utils.data.default_collate([split[0][0]]))


def test_a_folds_fusions_share_one_cache(tmp_path):
    """`fusion_init: streams` over a small corpus: the fold's ISM and Sum head phases read embeddings computed
    once (the same tensors), the spectrogram stream live in training (it is augmented)."""
    experiment = experiment_from_dict(
        {"corpus": SMALL_CORPUS, "features": SMALL_FEATURES,
         "model": {"spectrogram": "resnet_small", "deep": "rnn_h512_l1"},
         "train": {"epochs": 1, "batch_size": 8, "fusion_init": "streams", "fusion_head_epochs": 1,
                   "fusion_finetune_epochs": 1, "augment": {"streams": ["spectrogram"]}},
         "run": {"variants": ["ism", "sum"], "dominant": "deep", "probes": False, "classic": None}},
        tmp_path,
    )
    cv = CrossValidation(experiment, prepare(experiment, progress=False), tmp_path / "run", progress=False)
    fold = cv.corpus.folds[0]
    for stream in ("spectrogram", "deep"):
        cv.train_variant(fold, stream)
    cv.train_variant(fold, "ism")
    cache = cv.frozen_streams(fold, 0)
    assert sorted(cache.embeddings) == [("train", ("deep",)), ("val", ("spectrogram", "deep"))]
    first = {key: dict(value) for key, value in cache.embeddings.items()}
    assert len(first["train", ("deep",)]["deep"]) == len(fold.train)
    cv.train_variant(fold, "sum")
    assert cv.frozen_streams(fold, 0) is cache
    assert all(cache.embeddings[key][s] is tensor for key, value in first.items() for s, tensor in value.items())
    cv.frozen_streams(cv.corpus.folds[1], 0)
    assert cv.frozen_streams(fold, 0) is not cache  # another fold's step let this fold's cache go

