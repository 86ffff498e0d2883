"""Reads the corpus an experiment names and applies its label policy."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from nni_emotionnas.config.experiment import ExperimentConfig
from nni_emotionnas.corpora.filename_corpora import read_cremad, read_emodb, read_ravdess
from nni_emotionnas.corpora.generic import read_folders, read_manifest
from nni_emotionnas.corpora.iemocap import read_iemocap
from nni_emotionnas.corpora.integrity import check_integrity, describe
from nni_emotionnas.corpora.labels import apply_labels
from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import ConfigError, CorpusError, storage_errors


def read_synthetic(root: Path, **options) -> list[Utterance]:
    """The embedded demo corpus, generated (once, cached under `root`) in the IEMOCAP layout."""
    from nni_emotionnas.config.parse import parse
    from nni_emotionnas.corpora.synthetic import SyntheticCorpusConfig, cached_corpus

    config = parse(SyntheticCorpusConfig, options, "corpus.options")
    return read_iemocap(cached_corpus(config, root), subset="all")


READERS: dict[str, Callable[..., list[Utterance]]] = {
    "iemocap": read_iemocap,
    "emodb": read_emodb,
    "ravdess": read_ravdess,
    "cremad": read_cremad,
    "manifest": read_manifest,
    "folders": read_folders,
    "synthetic": read_synthetic,
}


def read_corpus(experiment: ExperimentConfig) -> tuple[list[Utterance], list[str]]:
    """Utterances after label mapping/selection and integrity checks, and the class list in training order.

    A row whose audio file is missing is an error naming the row, unless `corpus.on_bad_audio: skip`
    (the feature stage then skips it and the report lists it).
    """
    utterances, classes = apply_labels(_read_records(experiment), experiment.corpus.labels)
    missing = [u for u in utterances if not Path(u.path).is_file()]
    if missing and experiment.corpus.on_bad_audio != "skip":
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CorpusError(
            f"{describe(missing[0])}: audio file {missing[0].path} is missing{more}; "
            "fix the path or set corpus.on_bad_audio: skip"
        )
    return check_integrity(utterances, experiment.corpus.on_duplicate), classes


def _read_records(experiment: ExperimentConfig) -> list[Utterance]:
    corpus = experiment.corpus
    reader = READERS[corpus.reader]
    if corpus.reader == "synthetic":
        root = experiment.resolve(corpus.path) or experiment.cache_dir
        with storage_errors("generating the synthetic corpus: corpus.path or $EMOTIONNAS_CACHE", root):
            return reader(root, **corpus.options)
    if corpus.path is None:
        raise ConfigError(f"corpus.path: required for reader {corpus.reader!r}")
    accepted = set(inspect.signature(reader).parameters) - {"root", "path"}
    unknown = sorted(set(corpus.options) - accepted)
    if unknown:
        raise ConfigError(
            f"corpus.options.{unknown[0]}: unknown option for reader {corpus.reader!r}"
            f" (known: {', '.join(sorted(accepted)) or 'none'})"
        )
    return reader(experiment.resolve(corpus.path), **corpus.options)
