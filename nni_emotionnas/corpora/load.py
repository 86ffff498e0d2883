"""Reads the corpus an experiment names and applies its label policy."""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from nni_emotionnas.config.experiment import CorpusConfig, ExperimentConfig
from nni_emotionnas.corpora.filename_corpora import read_cremad, read_emodb, read_ravdess
from nni_emotionnas.corpora.generic import read_folders, read_manifest
from nni_emotionnas.corpora.iemocap import read_iemocap
from nni_emotionnas.corpora.integrity import check_integrity, describe, same_audio_groups
from nni_emotionnas.corpora.labels import apply_labels
from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import ConfigError, CorpusError, storage_errors

_logger = logging.getLogger(__name__)


@dataclass
class CorpusCounts:
    """What loading did to one corpus: utterances read (after its own labels policy), kept in the shared
    classes, dropped per label outside them, and shared classes it has no utterance of."""

    name: str
    read: int
    kept: Optional[int] = None  # None: one corpus, nothing shared to reduce to
    dropped: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


@dataclass
class LoadedCorpora:
    utterances: list[Utterance]
    classes: list[str]
    counts: list[CorpusCounts]


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


def read_corpora(experiment: ExperimentConfig) -> LoadedCorpora:
    """Every corpus of the experiment, each read and checked on its own, its speakers, sessions and ids
    prefixed with its name; with `corpora`, reduced to the shared classes and checked across corpora."""
    blocks = experiment.corpus_blocks
    read = []
    for i, block in enumerate(blocks):
        where = f"corpora[{i}]" if experiment.multi_corpus else "corpus"
        utterances, classes = _read_checked(experiment, block, where)
        read.append((block, _prefixed(utterances, block.name), classes))
    if not experiment.multi_corpus:
        block, utterances, classes = read[0]
        return LoadedCorpora(utterances, classes, [CorpusCounts(block.name or block.reader, len(utterances))])
    shared = shared_classes(experiment, [classes for _, _, classes in read])
    utterances, counts = [], []
    for block, corpus_utterances, _ in read:
        kept = [u for u in corpus_utterances if u.label in shared]
        dropped = Counter(u.label for u in corpus_utterances if u.label not in shared)
        missing = [c for c in shared if c not in {u.label for u in kept}]
        counts.append(CorpusCounts(block.name, len(corpus_utterances), len(kept), dict(sorted(dropped.items())),
                                   missing))
        if dropped:
            _logger.warning("corpora: %s: dropped %d utterance(s) outside the shared classes (%s)", block.name,
                            sum(dropped.values()), ", ".join(f"{k} {n}" for k, n in sorted(dropped.items())))
        if missing:
            _logger.warning("corpora: %s has no utterance of shared class(es) %s", block.name, ", ".join(missing))
        utterances += kept
    check_across_corpora(utterances)
    return LoadedCorpora(utterances, shared, counts)


def shared_classes(experiment: ExperimentConfig, per_corpus: list[list[str]]) -> list[str]:
    """`labels.keep`, or the classes every corpus has; a class no corpus has is an error."""
    keep = experiment.labels.keep if experiment.labels is not None else None
    if keep is None:
        shared = [c for c in per_corpus[0] if all(c in classes for classes in per_corpus[1:])]
        if not shared:
            raise CorpusError("corpora: the corpora share no class; map their labels onto common names "
                              "(corpora[].labels.map) and list them in labels.keep")
        return shared
    nowhere = [c for c in keep if not any(c in classes for classes in per_corpus)]
    if nowhere:
        raise CorpusError(f"labels.keep: no corpus has class(es) {', '.join(nowhere)} (after each corpus' "
                          "labels.map)")
    return list(keep)


def check_across_corpora(utterances: list[Utterance]) -> None:
    """One audio in two corpora would be trained on in one and tested on in the other: an error naming both."""
    for group in same_audio_groups(utterances):
        corpora = {utterances[i].corpus: utterances[i] for i in group}
        if len(corpora) > 1:
            (a, first), (b, second) = list(corpora.items())[:2]
            raise CorpusError(f"corpora: the same audio is in corpus {a} ({describe(first)}) and corpus {b} "
                              f"({describe(second)}); a test corpus would hold training audio: remove one")


def _prefixed(utterances: list[Utterance], name: Optional[str]) -> list[Utterance]:
    if name is None:
        return utterances
    return [replace(u, speaker=f"{name}/{u.speaker}", session=f"{name}/{u.session}", uid=f"{name}/{u.uid}",
                    corpus=name) for u in utterances]


def _read_checked(experiment: ExperimentConfig, block: CorpusConfig, where: str) -> tuple[list[Utterance], list[str]]:
    utterances, classes = apply_labels(_read_records(experiment, block, where), block.labels)
    missing = [u for u in utterances if not Path(u.path).is_file()]
    if missing and block.on_bad_audio != "skip":
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CorpusError(
            f"{describe(missing[0])}: audio file {missing[0].path} is missing{more}; "
            f"fix the path or set {where}.on_bad_audio: skip"
        )
    return check_integrity(utterances, block.on_duplicate), classes


def _read_records(experiment: ExperimentConfig, corpus: CorpusConfig, where: str) -> list[Utterance]:
    reader = READERS[corpus.reader]
    if corpus.reader == "synthetic":
        root = experiment.resolve(corpus.path) or experiment.cache_dir
        with storage_errors(f"generating the synthetic corpus: {where}.path or $EMOTIONNAS_CACHE", root):
            return reader(root, **corpus.options)
    if corpus.path is None:
        raise ConfigError(f"{where}.path: required for reader {corpus.reader!r}")
    accepted = set(inspect.signature(reader).parameters) - {"root", "path"}
    unknown = sorted(set(corpus.options) - accepted)
    if unknown:
        raise ConfigError(
            f"{where}.options.{unknown[0]}: unknown option for reader {corpus.reader!r}"
            f" (known: {', '.join(sorted(accepted)) or 'none'})"
        )
    return reader(experiment.resolve(corpus.path), **corpus.options)
