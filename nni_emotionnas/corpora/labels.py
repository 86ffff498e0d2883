"""Label mapping and selection: the step between raw corpus labels and the classes a run trains on."""

from __future__ import annotations

from collections import Counter

from nni_emotionnas.config.experiment import LabelConfig
from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import CorpusError


def apply_labels(utterances: list[Utterance], policy: LabelConfig) -> tuple[list[Utterance], list[str]]:
    """Renames/merges with `policy.map`, keeps `policy.keep`; returns the utterances and the class list.

    A label outside `keep` is an error that lists the offenders, unless `drop_unknown` says to drop them.
    """
    mapped = [u.with_label(policy.map.get(u.label, u.label)) for u in utterances]
    if policy.keep is None:
        return mapped, sorted({u.label for u in mapped})
    keep = list(policy.keep)
    unknown = Counter(u.label for u in mapped if u.label not in keep)
    if unknown and not policy.drop_unknown:
        listed = ", ".join(f"{label} ({n})" for label, n in sorted(unknown.items()))
        raise CorpusError(
            f"corpus.labels: labels not in keep {keep}: {listed}; map them or set corpus.labels.drop_unknown"
        )
    kept = [u for u in mapped if u.label in keep]
    absent = [label for label in keep if label not in {u.label for u in kept}]
    if absent:
        raise CorpusError(f"corpus.labels.keep: no utterance has label(s) {', '.join(absent)}")
    return kept, keep
