"""The fusion head phase on cached stream embeddings (`train.fusion_init: streams`).

While the head trains alone, its stream networks are frozen (`TwoStreamModel.freeze_streams`): in eval mode,
so batch norm reads its running statistics and dropout is off, and their forward draws no random numbers.
A frozen stream's embedding of an utterance is then the same on every batch of every epoch, so it is
computed once per split (Lightning's predict loop, at the fit's accelerator and precision) and the head
trains on it. The batches stay the same (the loader shuffles with its own seeded generator, the split keeps
its length), and so do the head's dropout draws (the global generator, which the frozen forward never
touched): the head ends with the same weights, to float tolerance (tests/test_frozen_streams.py).

`train.augment` perturbs its streams' training inputs anew each epoch: those streams stay live in a training
split (their inputs in the batch, their network run on each batch, augmented by the same generator draws).
Validation is never augmented, so every stream of it is cached.
"""

from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from nni_emotionnas.config.training import AugmentConfig, TrainConfig
from nni_emotionnas.features.prepared import StreamDataset
from nni_emotionnas.models.fusion import TwoStreamModel
from nni_emotionnas.threads import torch_threads
from nni_emotionnas.training.evaluator import dataset_labels, make_loader

STREAM_INPUTS = {"spectrogram": ("spectrogram",), "deep": ("frames", "mask")}  # a batch's keys per stream


def cached_streams(augment: AugmentConfig, augmented: bool) -> tuple[str, ...]:
    """The streams whose frozen embeddings stay fixed over a fit: all but those augmentation perturbs (in a
    split the fit augments)."""
    touched = set(augment.streams) if augmented and augment.enabled else set()
    return tuple(stream for stream in STREAM_INPUTS if stream not in touched)


def as_inputs(inputs: Any) -> dict[str, torch.Tensor]:
    """A one-stream dataset's spectrogram tensor as the input dict a two-stream batch has."""
    return inputs if isinstance(inputs, dict) else {"spectrogram": inputs}


class StreamEmbedder(pl.LightningModule):
    """Lightning's predict step over a two-stream model: the named streams' embeddings of a batch."""

    def __init__(self, model: TwoStreamModel, streams: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.streams = streams

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs = as_inputs(batch[0])
        return {stream: self.model.stream_embedding(stream, inputs) for stream in self.streams}


def embed_split(
    model: TwoStreamModel, dataset: Dataset, streams: tuple[str, ...], config: TrainConfig
) -> dict[str, torch.Tensor]:
    """Each of `streams`' embeddings of every item of `dataset`, in order, on the CPU."""
    trainer = pl.Trainer(
        accelerator=config.accelerator,
        precision=config.precision,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,  # inference tensors could not enter the head's autograd graph
    )
    with torch_threads(config.threads):
        batches = trainer.predict(StreamEmbedder(model, streams), make_loader(dataset, config, shuffle=False))
    return {stream: torch.cat([batch[stream] for batch in batches]).cpu() for stream in streams}


class EmbeddedSplit(Dataset):
    """A split whose cached streams' inputs are replaced by their embeddings (`<stream>_embedding`, what
    `TwoStreamModel.stream_embedding` reads); the live streams' inputs come from `live`."""

    def __init__(
        self, embeddings: dict[str, torch.Tensor], labels: Any, live: Optional[Dataset], live_keys: tuple[str, ...]
    ) -> None:
        self.embeddings = embeddings
        self.labels = labels
        self.live = live
        self.live_keys = live_keys

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int) -> tuple[dict[str, torch.Tensor], int]:
        inputs = {f"{stream}_embedding": values[item] for stream, values in self.embeddings.items()}
        if self.live is not None:
            live = as_inputs(self.live[item][0])
            inputs.update({key: live[key] for key in self.live_keys})
        return inputs, int(self.labels[item])


def live_view(dataset: Dataset, streams: tuple[str, ...]) -> Dataset:
    """`dataset` reading only `streams`' features when it can (a corpus split of one live stream), so the
    cached stream's features are not loaded on every batch."""
    if isinstance(dataset, StreamDataset) and len(streams) == 1:
        return StreamDataset(dataset.corpus, dataset.indices, streams[0], dataset.fold_name)
    return dataset


def stream_state(model: TwoStreamModel) -> dict[str, torch.Tensor]:
    return {key: value for key, value in model.state_dict().items() if not key.startswith("head.")}


class FrozenStreams:
    """The embeddings that one pair of frozen stream networks (a fold's, for one seed and weights file) gives
    each named split: computed on first use, then shared by every fusion that loads those networks."""

    def __init__(self) -> None:
        self.embeddings: dict[tuple[str, tuple[str, ...]], dict[str, torch.Tensor]] = {}
        self._weights: Optional[dict[str, torch.Tensor]] = None

    def split(
        self, name: str, dataset: Dataset, model: TwoStreamModel, config: TrainConfig, augmented: bool
    ) -> Dataset:
        """Split `name` (`dataset`) as the head phase of `model` reads it; `augmented`: the fit augments it."""
        if not model.streams_frozen:
            raise RuntimeError("stream embeddings are cached only while the streams are frozen")
        self._check_weights(model)
        streams = cached_streams(config.augment, augmented)
        if not streams:
            return dataset
        if (name, streams) not in self.embeddings:
            self.embeddings[name, streams] = embed_split(model, dataset, streams, config)
        embeddings = self.embeddings[name, streams]
        if any(len(values) != len(dataset) for values in embeddings.values()):
            raise ValueError(f"cached {name!r} embeddings have {len(next(iter(embeddings.values())))} items, "
                             f"the split {len(dataset)}")
        live = tuple(stream for stream in STREAM_INPUTS if stream not in streams)
        live_keys = tuple(key for stream in live for key in STREAM_INPUTS[stream])
        return EmbeddedSplit(embeddings, dataset_labels(dataset), live_view(dataset, live) if live else None, live_keys)

    def _check_weights(self, model: TwoStreamModel) -> None:
        """The cache belongs to the stream weights it was computed with: another model's are refused."""
        state = stream_state(model)
        if self._weights is None:
            self._weights = {key: value.detach().clone() for key, value in state.items()}
        elif state.keys() != self._weights.keys() or any(
            not torch.equal(value, self._weights[key]) for key, value in state.items()
        ):
            raise RuntimeError("cached stream embeddings belong to other stream weights than this model's")
