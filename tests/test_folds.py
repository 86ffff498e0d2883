"""Fold invariants: no speaker crosses splits, every utterance is tested exactly once."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import write_mini_iemocap

from nni_emotionnas.config.experiment import LabelConfig, ProtocolConfig
from nni_emotionnas.corpora.filename_corpora import read_emodb
from nni_emotionnas.corpora.folds import Fold, check_fold, group_kfold, make_folds
from nni_emotionnas.corpora.iemocap import read_iemocap
from nni_emotionnas.corpora.labels import apply_labels
from nni_emotionnas.errors import FoldError


@pytest.fixture(scope="module")
def iemocap4(tmp_path_factory):
    records = read_iemocap(write_mini_iemocap(tmp_path_factory.mktemp("iemocap"), extra_labels=()))
    return apply_labels(records, LabelConfig(keep=["neu", "ang", "hap", "sad"]))


def assert_partition(folds, utterances):
    for fold in folds:
        assert sorted(fold.train + fold.val + fold.test) == list(range(len(utterances)))
        spk = {s: {utterances[i].speaker for i in fold.split(s)} for s in ("train", "val", "test")}
        assert not (spk["train"] & spk["val"]) and not (spk["train"] & spk["test"]) and not (spk["val"] & spk["test"])
    tested = Counter(i for fold in folds for i in fold.test)
    return tested


def test_leave_one_session_out(iemocap4):
    utterances, classes = iemocap4
    folds = make_folds(utterances, classes, ProtocolConfig(kind="leave_one_session_out"))
    assert len(folds) == 5
    tested = assert_partition(folds, utterances)
    # each session: F validates, M tests -> every M utterance tested once, F never
    assert all(utterances[i].speaker.endswith("M") for i in tested)
    first = folds[0]
    assert {utterances[i].speaker for i in first.val} == {"Ses01F"}
    assert {utterances[i].speaker for i in first.test} == {"Ses01M"}
    assert {utterances[i].session for i in first.train} == {"Ses02", "Ses03", "Ses04", "Ses05"}


def test_leave_one_session_out_swapped_gives_ten_runs(iemocap4):
    utterances, classes = iemocap4
    folds = make_folds(utterances, classes, ProtocolConfig(kind="auto", swap_val_test=True))
    assert len(folds) == 10
    tested = assert_partition(folds, utterances)
    assert set(tested.values()) == {1} and len(tested) == len(utterances)


def test_emodb_leave_one_speaker_out(emodb):
    utterances, classes = apply_labels(read_emodb(emodb), LabelConfig())
    folds = make_folds(utterances, classes, ProtocolConfig(kind="auto"))
    assert len(folds) == 10
    tested = assert_partition(folds, utterances)
    assert len(tested) == 535 and set(tested.values()) == {1}
    for fold in folds:  # the validation speaker always covers every class (08 never acted disgust)
        assert {utterances[i].label for i in fold.val} == set(classes)
    with pytest.raises(FoldError, match="fold test08: test split has no utterance of class.*dis"):
        make_folds(utterances, classes, ProtocolConfig(kind="auto", require_all_classes=True))


def test_leave_one_speaker_out_with_two_validation_speakers(emodb, iemocap4):
    utterances, classes = apply_labels(read_emodb(emodb), LabelConfig())
    one = make_folds(utterances, classes, ProtocolConfig(kind="leave_one_speaker_out"))
    two = make_folds(utterances, classes, ProtocolConfig(kind="leave_one_speaker_out", validation_speakers=2))
    tested = assert_partition(two, utterances)
    assert len(tested) == 535 and set(tested.values()) == {1}
    speakers = sorted({u.speaker for u in utterances})
    for fold, single in zip(two, one):
        val = {utterances[i].speaker for i in fold.val}
        assert len(val) == 2 and {utterances[i].speaker for i in single.val} < val  # the one-speaker choice, plus one
        assert len({utterances[i].speaker for i in fold.train}) == len(speakers) - 3
        for speaker in val:  # each validation speaker acted every class (08 never acted disgust)
            assert {u.label for u in utterances if u.speaker == speaker} == set(classes)
    with pytest.raises(FoldError, match="protocol.validation_speakers: 9 leaves no training speaker"):
        make_folds(utterances, classes, ProtocolConfig(kind="leave_one_speaker_out", validation_speakers=9))
    iemocap_utterances, iemocap_classes = iemocap4
    with pytest.raises(FoldError, match="protocol.validation_speakers: applies to leave_one_speaker_out only"):
        make_folds(iemocap_utterances, iemocap_classes, ProtocolConfig(validation_speakers=2))


def test_group_kfold_stratified_and_grouped(emodb):
    utterances, classes = apply_labels(read_emodb(emodb), LabelConfig())
    folds = group_kfold(utterances, k=5, seed=1)
    tested = assert_partition(folds, utterances)
    assert len(tested) == 535
    assert folds == group_kfold(utterances, k=5, seed=1)


def test_group_kfold_with_two_folds_validates_on_one_training_speaker(emodb):
    utterances, classes = apply_labels(read_emodb(emodb), LabelConfig())
    folds = make_folds(utterances, classes, ProtocolConfig(kind="group_kfold", k=2))  # checked: nothing empty
    tested = assert_partition(folds, utterances)
    assert len(tested) == 535 and set(tested.values()) == {1}
    for fold, other in zip(folds, folds[::-1]):
        val_speakers = {utterances[i].speaker for i in fold.val}
        other_half = {utterances[i].speaker for i in other.test}
        assert len(val_speakers) == 1 and val_speakers < other_half  # one speaker of the training half
        assert {utterances[i].speaker for i in fold.train} == other_half - val_speakers
        assert {utterances[i].label for i in fold.val} == set(classes)  # a speaker who acted every class


def test_group_kfold_with_two_folds_says_up_front_when_speakers_are_too_few(emodb):
    utterances, classes = apply_labels(read_emodb(emodb), LabelConfig())
    three = [u for u in utterances if u.speaker in {"03", "08", "09"}]
    with pytest.raises(FoldError, match="group_kfold with k=2 needs at least 4 speakers, corpus has 3"):
        make_folds(three, classes, ProtocolConfig(kind="group_kfold", k=2))


def test_check_fold_refuses_leaks_and_missing_train_class(iemocap4):
    utterances, classes = iemocap4
    fold = make_folds(utterances, classes, ProtocolConfig())[0]
    leaky = Fold("leaky", fold.train + fold.test[:1], fold.val, fold.test)
    with pytest.raises(FoldError, match="fold leaky: speaker\\(s\\) Ses01M in both train and test"):
        check_fold(leaky, utterances, classes)
    no_sad = Fold("nosad", tuple(i for i in fold.train if utterances[i].label != "sad"), fold.val, fold.test)
    with pytest.raises(FoldError, match="fold nosad: train split has no utterance of class\\(es\\) sad"):
        check_fold(no_sad, utterances, classes)


def test_protocol_fold_selection(iemocap4):
    utterances, classes = iemocap4
    names = [f.name for f in make_folds(utterances, classes, ProtocolConfig())]
    picked = make_folds(utterances, classes, ProtocolConfig(folds=[names[2]]))
    assert [f.name for f in picked] == [names[2]]
    with pytest.raises(FoldError, match="protocol.folds: unknown fold\\(s\\) nope"):
        make_folds(utterances, classes, ProtocolConfig(folds=["nope"]))
