"""Corpus -> cached features -> per-fold torch datasets: what every search and training stage consumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from nni_emotionnas.config.experiment import ExperimentConfig
from nni_emotionnas.corpora.folds import Fold, make_folds
from nni_emotionnas.corpora.load import CorpusCounts, read_corpora
from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import CorpusError, FoldError
from nni_emotionnas.features.registry import build_deep_extractor
from nni_emotionnas.features.sequence import unify_length
from nni_emotionnas.features.speaker_norm import check_speaker_coverage
from nni_emotionnas.features.spectrogram import SpectrogramExtractor
from nni_emotionnas.features.standardize import Standardization, fit_standardization
from nni_emotionnas.features.store import ExtractionReport, FeatureStore

Stream = Literal["spectrogram", "deep", "both"]
Split = Literal["train", "val", "test", "train+val"]


class StreamDataset(Dataset):
    """Items `(inputs, label)`; inputs as the stream models expect them (see `PreparedCorpus.dataset`)."""

    def __init__(
        self, corpus: PreparedCorpus, indices: Sequence[int], stream: Stream, fold_name: Optional[str] = None
    ) -> None:
        self.corpus = corpus
        self.indices = list(indices)
        self.stream = stream
        self.fold_name = fold_name  # None: raw features (no `features.standardize` statistics applied)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        index = self.indices[item]
        inputs: dict[str, torch.Tensor] = {}
        if self.stream in ("spectrogram", "both"):
            inputs["spectrogram"] = self.corpus.spectrogram_tensor(index)
        if self.stream in ("deep", "both"):
            inputs.update(self.corpus.deep_tensors(index))
        standardization = self.corpus.standardizer(self.fold_name, index) if self.fold_name else None
        if standardization is not None:
            inputs = standardization.apply(inputs)
        label = int(self.corpus.labels[index])
        return (inputs["spectrogram"] if self.stream == "spectrogram" else inputs), label


@dataclass
class PreparedCorpus:
    """Utterances that survived loading, their classes, checked folds and cached feature files."""

    experiment: ExperimentConfig
    utterances: list[Utterance]
    classes: list[str]
    folds: list[Fold]
    spectrogram: Optional[ExtractionReport] = None
    deep: Optional[ExtractionReport] = None
    deep_backend: Optional[dict] = None
    skipped: list[tuple[Utterance, str]] = field(default_factory=list)
    max_frames: int = 0
    deep_dim: int = 0  # width of the deep-stream frames (the deep space's `input_dim`)
    corpus_counts: list[CorpusCounts] = field(default_factory=list)  # per corpus: read, kept, dropped
    _standardizations: dict[str, Standardization] = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> np.ndarray:
        return np.array([self.classes.index(u.label) for u in self.utterances], dtype=np.int64)

    def fold(self, name: str) -> Fold:
        for fold in self.folds:
            if fold.name == name:
                return fold
        raise FoldError(f"unknown fold {name!r} (known: {', '.join(f.name for f in self.folds)})")

    def dataset(self, fold_name: str, split: Split, stream: Stream) -> StreamDataset:
        return StreamDataset(self, self.fold(fold_name).split(split), stream, fold_name)

    def standardization(self, fold_name: str) -> Optional[Standardization]:
        """With `features.standardize: train_speakers`, the fold's statistics from its training speakers
        (computed once; a run saves them for `predict`); None otherwise."""
        if self.experiment.features.standardize != "train_speakers":
            return None
        if fold_name not in self._standardizations:
            self._standardizations[fold_name] = self._fit(self.fold(fold_name).train)
        return self._standardizations[fold_name]

    def standardizer(self, fold_name: str, index: int) -> Optional[Standardization]:
        """The statistics that standardise utterance `index` in fold `fold_name`: the fold's training
        speakers', or with `speaker` the utterance's own speaker's (all of their utterances, labels unread)."""
        if self.experiment.features.standardize != "speaker":
            return self.standardization(fold_name)
        speaker = self.utterances[index].speaker
        key = f"speaker:{speaker}"
        if key not in self._standardizations:
            self._standardizations[key] = self._fit([i for i, u in enumerate(self.utterances) if u.speaker == speaker])
        return self._standardizations[key]

    def _fit(self, indices: Sequence[int]) -> Standardization:
        return fit_standardization(
            indices,
            spectrogram=self.spectrogram.load if self.spectrogram is not None else None,
            deep=self._frames_and_mask if self.deep is not None else None,
        )

    def spectrogram_tensor(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.spectrogram.load(index))).unsqueeze(0)

    def deep_tensors(self, index: int) -> dict[str, torch.Tensor]:
        frames, mask = self._frames_and_mask(index)
        return {"frames": torch.from_numpy(frames), "mask": torch.from_numpy(mask)}

    def _frames_and_mask(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return unify_length(np.asarray(self.deep.load(index)), self.max_frames, self.experiment.features.sequence)


def prepare(
    experiment: ExperimentConfig, streams: Sequence[str] = ("spectrogram", "deep"), progress: bool = True
) -> PreparedCorpus:
    """Reads the corpus, extracts (or reuses cached) features, drops skipped audio, builds checked folds."""
    loaded = read_corpora(experiment)
    utterances, classes = loaded.utterances, loaded.classes
    store = FeatureStore(experiment.cache_dir / "features")
    features = experiment.features
    reports: dict[str, ExtractionReport] = {}
    if "spectrogram" in streams:
        reports["spectrogram"] = _extract(store, utterances, SpectrogramExtractor(features.spectrogram), experiment,
                                          progress)
    if "deep" in streams:
        reports["deep"] = _extract(store, utterances, build_deep_extractor(features.deep), experiment, progress)
    bad = {id(u): message for report in reports.values() for u, message in report.skipped}
    keep = [i for i, u in enumerate(utterances) if id(u) not in bad]
    skipped = [(u, bad[id(u)]) for u in utterances if id(u) in bad]
    for name, report in reports.items():
        reports[name] = ExtractionReport([report.files[i] for i in keep], report.skipped, report.hits, report.misses)
    if skipped and not keep:  # else the folds would be refused for lacking speakers, never saying why
        raise CorpusError(f"corpus: every one of its {len(skipped)} audio files was skipped as unusable "
                          f"(corpus.on_bad_audio: skip), e.g. {skipped[0][1]}")
    utterances = [utterances[i] for i in keep]
    if features.standardize == "speaker":
        check_speaker_coverage(utterances, classes, features.standardize_force)
    corpus = PreparedCorpus(
        experiment=experiment,
        utterances=utterances,
        classes=classes,
        folds=make_folds(utterances, classes, experiment.protocol),
        spectrogram=reports.get("spectrogram"),
        deep=reports.get("deep"),
        deep_backend=dict(features.deep) if "deep" in reports else None,
        skipped=skipped,
        corpus_counts=loaded.counts,
    )
    if corpus.deep is not None:
        corpus.max_frames = max(corpus.deep.load(i).shape[0] for i in range(len(utterances)))
        corpus.deep_dim = int(corpus.deep.load(0).shape[1])
    return corpus


def _extract(
    store: FeatureStore, utterances: list[Utterance], extractor, experiment: ExperimentConfig, progress: bool
) -> ExtractionReport:
    """Extracts each corpus' utterances under that corpus' `on_bad_audio`; one report in utterance order."""
    blocks = experiment.corpus_blocks
    if len(blocks) == 1:
        return store.extract(utterances, extractor, experiment.features.n_jobs, blocks[0].on_bad_audio, progress)
    files, skipped, hits, misses = [], [], 0, 0
    for block in blocks:
        own = [u for u in utterances if u.corpus == block.name]
        report = store.extract(own, extractor, experiment.features.n_jobs, block.on_bad_audio, progress)
        files += report.files
        skipped += report.skipped
        hits, misses = hits + report.hits, misses + report.misses
    return ExtractionReport(files, skipped, hits, misses)
