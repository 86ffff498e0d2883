"""Speaker-independent folds: every fold is checked so no speaker crosses train/val/test."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from nni_emotionnas.config.experiment import ProtocolConfig
from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import FoldError


@dataclass(frozen=True)
class Fold:
    """Indices into the corpus' utterance list for each split."""

    name: str
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def split(self, name: str) -> tuple[int, ...]:
        """`train+val`: every speaker the fold does not test (what baselines and `train.refit` learn from)."""
        return {"train": self.train, "val": self.val, "test": self.test, "train+val": self.train + self.val}[name]


def _speakers(utterances: Sequence[Utterance]) -> list[str]:
    return sorted({u.speaker for u in utterances})


def _make_fold(name: str, utterances: Sequence[Utterance], val: set[str], test: set[str]) -> Fold:
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, u in enumerate(utterances):
        splits["test" if u.speaker in test else "val" if u.speaker in val else "train"].append(i)
    return Fold(name, tuple(splits["train"]), tuple(splits["val"]), tuple(splits["test"]))


def leave_one_session_out(utterances: Sequence[Utterance], swap_val_test: bool = False) -> list[Fold]:
    """The IEMOCAP protocol: one session held out; its first speaker validates, the other tests.

    With `swap_val_test` each session also gives the swapped fold (10 runs on IEMOCAP).
    """
    by_session: dict[str, set[str]] = defaultdict(set)
    for u in utterances:
        by_session[u.session].add(u.speaker)
    folds = []
    for session, speakers in sorted(by_session.items()):
        ordered = sorted(speakers)
        if len(ordered) < 2:
            raise FoldError(f"session {session}: needs at least 2 speakers to validate on one and test on another")
        val, test = {ordered[0]}, set(ordered[1:])
        folds.append(_make_fold(f"{session}-test{'+'.join(sorted(test))}", utterances, val, test))
        if swap_val_test:
            val, test = set(ordered[1:]), {ordered[0]}
            folds.append(_make_fold(f"{session}-test{ordered[0]}", utterances, val, test))
    return folds


def leave_one_speaker_out(utterances: Sequence[Utterance], validation_speakers: int = 1) -> list[Fold]:
    """One speaker tests; the next `validation_speakers` speakers (sorted, cyclically) that have every class
    validate.

    Preferring complete validation speakers keeps validation UA, which selects checkpoints, defined
    over all classes (EmoDB speaker 08, for one, recorded no disgust).
    """
    speakers = _speakers(utterances)
    if len(speakers) < 3:
        raise FoldError(f"leave-one-speaker-out needs at least 3 speakers, corpus has {len(speakers)}")
    if validation_speakers > len(speakers) - 2:
        raise FoldError(f"protocol.validation_speakers: {validation_speakers} leaves no training speaker "
                        f"(the corpus has {len(speakers)} speakers, one tests each fold)")
    folds = []
    for i, speaker in enumerate(speakers):
        following = [speakers[(i + j) % len(speakers)] for j in range(1, len(speakers))]
        validating = _validation_speakers(following, utterances, validation_speakers)
        folds.append(_make_fold(f"test{speaker}", utterances, set(validating), {speaker}))
    return folds


def _validation_speakers(candidates: Sequence[str], utterances: Sequence[Utterance], count: int = 1) -> list[str]:
    """The first `count` candidates who acted every class of the corpus, completed in order by the others."""
    labels = {u.label for u in utterances}
    complete = [s for s in candidates if {u.label for u in utterances if u.speaker == s} == labels]
    return (complete + [s for s in candidates if s not in complete])[:count]


def group_kfold(utterances: Sequence[Utterance], k: int, seed: int = 0) -> list[Fold]:
    """Stratified speaker-grouped k-fold: fold i tests on group i and validates on group i+1.

    With k=2 a whole group validating would leave nothing to train on: there one speaker of the other
    group (the first who acted every class) validates and the rest of that group trains.
    """
    speakers = _speakers(utterances)
    needed = 4 if k == 2 else max(k, 3)
    if len(speakers) < needed:
        raise FoldError(f"group_kfold with k={k} needs at least {needed} speakers, corpus has {len(speakers)}")
    labels = np.array([u.label for u in utterances])
    groups = np.array([u.speaker for u in utterances])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    test_groups = [sorted(set(groups[test])) for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]
    folds = []
    for i in range(k):
        validating = test_groups[(i + 1) % k]
        if k == 2:
            if len(validating) < 2:
                raise FoldError(f"group_kfold with k=2: fold{i + 1} trains on speaker {validating[0]} alone, "
                                "who cannot also validate; use k >= 3 or a corpus with more speakers")
            validating = _validation_speakers(validating, utterances)
        folds.append(_make_fold(f"fold{i + 1}", utterances, set(validating), set(test_groups[i])))
    return folds


def missing_classes(fold: Fold, utterances: Sequence[Utterance], classes: Sequence[str]) -> dict[str, list[str]]:
    """Classes absent from each split of a fold (empty lists when complete)."""
    return {
        name: [c for c in classes if c not in {utterances[i].label for i in fold.split(name)}]
        for name in ("train", "val", "test")
    }


def check_fold(
    fold: Fold, utterances: Sequence[Utterance], classes: Sequence[str], require_all_classes: bool = False
) -> None:
    """Refuses speaker leakage between splits and a training split that lacks a class.

    Validation/test splits lacking a class (a speaker who never acted it) are allowed unless
    `require_all_classes`; UA is then the mean recall over the classes present, as scikit-learn computes it.
    """
    speakers = {name: {utterances[i].speaker for i in fold.split(name)} for name in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = speakers[a] & speakers[b]
        if shared:
            raise FoldError(f"fold {fold.name}: speaker(s) {', '.join(sorted(shared))} in both {a} and {b}")
    for name, missing in missing_classes(fold, utterances, classes).items():
        if not fold.split(name):
            raise FoldError(f"fold {fold.name}: {name} split is empty")
        if missing and (name == "train" or require_all_classes):
            raise FoldError(f"fold {fold.name}: {name} split has no utterance of class(es) {', '.join(missing)}")


def held_out_speakers(
    utterances: Sequence[Utterance], corpus: str, classes: Sequence[str], count: int
) -> list[str]:
    """Speakers of one training corpus who validate: at least `count`, and more until the validation
    speakers show every class the corpus has, taking first whoever adds the most missing classes, then a
    typical speaker (utterance count nearest the corpus' mean: neither a handful of clips nor half the
    corpus). A speaker whose leaving would take a class out of the corpus' training speakers is never taken."""
    own = [u for u in utterances if u.corpus == corpus]
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for u in own:
        by_speaker[u.speaker].append(u.label)
    present = [c for c in classes if any(u.label == c for u in own)]
    typical = len(own) / max(1, len(by_speaker))
    chosen: list[str] = []

    def keeps_training_complete(speaker: str) -> bool:
        left = {label for s, labels in by_speaker.items() if s not in chosen and s != speaker for label in labels}
        return all(c in left for c in present)

    while True:
        covered = {label for s in chosen for label in by_speaker[s]}
        missing = [c for c in present if c not in covered]
        if len(chosen) >= count and not missing:
            return chosen
        candidates = [s for s in sorted(by_speaker) if s not in chosen and keeps_training_complete(s)]
        gains = {s: len(set(by_speaker[s]) & set(missing)) for s in candidates}
        if len(chosen) >= count:
            candidates = [s for s in candidates if gains[s] > 0]
        if not candidates:
            return chosen
        chosen.append(min(candidates, key=lambda s: (-gains[s], abs(len(by_speaker[s]) - typical), s)))


def corpus_fold(utterances: Sequence[Utterance], classes: Sequence[str], train: Sequence[str], test: str,
                validation_speakers: int) -> Fold:
    """Trains on the corpora `train` (held-out speakers of each validate) and tests on every utterance of
    `test`; other corpora take no part."""
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    val = {s for corpus in train for s in held_out_speakers(utterances, corpus, classes, validation_speakers)}
    for i, u in enumerate(utterances):
        if u.corpus == test:
            splits["test"].append(i)
        elif u.corpus in train:
            splits["val" if u.speaker in val else "train"].append(i)
    name = f"{'+'.join(train)}-to-{test}"
    return Fold(name, tuple(splits["train"]), tuple(splits["val"]), tuple(splits["test"]))


def across_corpora(utterances: Sequence[Utterance], classes: Sequence[str], protocol: ProtocolConfig) -> list[Fold]:
    """`cross_corpus`: one fold, `protocol.train` (default: every other corpus) to `protocol.test`;
    `leave_one_corpus_out`: one fold per corpus, tested on a model of all the others."""
    corpora = list(dict.fromkeys(u.corpus for u in utterances))
    if protocol.kind == "cross_corpus":
        train = protocol.train or [c for c in corpora if c != protocol.test]
        plans = [(train, protocol.test)]
    else:
        plans = [([c for c in corpora if c != test], test) for test in corpora]
    return [corpus_fold(utterances, classes, train, test, protocol.validation_speakers) for train, test in plans]


def make_folds(utterances: Sequence[Utterance], classes: Sequence[str], protocol: ProtocolConfig) -> list[Fold]:
    """Builds and checks the folds the protocol asks for (optionally only those named in `folds`)."""
    if protocol.kind in ("cross_corpus", "leave_one_corpus_out"):
        return _selected_and_checked(across_corpora(utterances, classes, protocol), utterances, classes, protocol)
    kind = protocol.within if protocol.kind == "pooled" else protocol.kind
    if kind == "auto":
        multi_speaker_sessions = len({u.session for u in utterances}) < len(_speakers(utterances))
        kind = "leave_one_session_out" if multi_speaker_sessions else "leave_one_speaker_out"
    if protocol.validation_speakers != 1 and kind != "leave_one_speaker_out":
        raise FoldError(f"protocol.validation_speakers: applies to leave_one_speaker_out only ({kind} "
                        "validates on the held-out session's other speaker or the next group)")
    if kind == "leave_one_session_out":
        folds = leave_one_session_out(utterances, protocol.swap_val_test)
    elif kind == "leave_one_speaker_out":
        folds = leave_one_speaker_out(utterances, protocol.validation_speakers)
    else:
        folds = group_kfold(utterances, protocol.k, protocol.seed)
    # speakers of named corpora are `corpus/speaker`: fold names become folder names
    folds = [replace(f, name=f.name.replace("/", "-")) for f in folds]
    return _selected_and_checked(folds, utterances, classes, protocol)


def _selected_and_checked(
    folds: list[Fold], utterances: Sequence[Utterance], classes: Sequence[str], protocol: ProtocolConfig
) -> list[Fold]:
    if protocol.folds is not None:
        known = {f.name for f in folds}
        unknown = [name for name in protocol.folds if name not in known]
        if unknown:
            raise FoldError(f"protocol.folds: unknown fold(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        folds = [f for f in folds if f.name in protocol.folds]
    for fold in folds:
        check_fold(fold, utterances, classes, protocol.require_all_classes)
    return folds
