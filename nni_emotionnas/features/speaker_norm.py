"""Per-speaker standardisation: each speaker's features centred and scaled by that speaker's own statistics.

This is the transductive practice of the SER literature on acted corpora (a test speaker's statistics come
from their own unlabelled test utterances): it removes voice and recording differences between speakers.
It is only sound when every speaker shows most classes. A speaker who acts one emotion has that emotion as
their mean, and subtracting it removes the very thing to be learnt (on talk-show clips where most speakers
show one or two emotions it dropped UA far below chance), so such corpora are refused unless forced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import ConfigError

EPS = 1e-8


def speaker_groups(speakers: Sequence[str]) -> dict[str, np.ndarray]:
    """Speaker -> indices of their utterances, in corpus order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, speaker in enumerate(speakers):
        groups[speaker].append(index)
    return {speaker: np.asarray(indices) for speaker, indices in groups.items()}


def zscore_per_speaker(vectors: np.ndarray, speakers: Sequence[str]) -> np.ndarray:
    """Utterance-level vectors (n x d) standardised per dimension within each speaker. Reads no label."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) != len(speakers):
        raise ValueError(f"{len(vectors)} vectors but {len(speakers)} speakers")
    out = np.empty_like(vectors)
    for indices in speaker_groups(speakers).values():
        group = vectors[indices]
        out[indices] = (group - group.mean(axis=0)) / (group.std(axis=0) + EPS)
    return out


def check_speaker_coverage(utterances: Sequence[Utterance], classes: Sequence[str], force: bool) -> None:
    """Refuses per-speaker statistics when the median speaker shows fewer than half of the classes."""
    shown = defaultdict(set)
    for u in utterances:
        shown[u.speaker].add(u.label)
    median = float(np.median([len(labels) for labels in shown.values()]))
    if median < len(classes) / 2 and not force:
        raise ConfigError(
            f"features.standardize: 'speaker' refused: the median speaker shows {median:g} of {len(classes)} "
            f"classes, so a speaker's own mean mostly encodes their emotion and subtracting it removes what the "
            f"model must learn (UA can fall below chance); use 'train_speakers', or set "
            f"features.standardize_force: true to insist"
        )
