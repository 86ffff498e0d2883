"""Several corpora in one experiment: named speakers, shared classes, cross-corpus folds, and the promise that
no utterance of the test corpus reaches search, training, validation, standardisation or the baselines."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import EMODB, REPO, SMALL_FEATURES, write_tone

from nni_emotionnas.cli.app import main
from nni_emotionnas.config.experiment import experiment_from_dict, load_experiment
from nni_emotionnas.corpora.folds import make_folds
from nni_emotionnas.corpora.load import read_corpora
from nni_emotionnas.errors import ConfigError, CorpusError, FoldError


def target_corpus(fold, utterances) -> str | None:
    """The corpus a fold tests on, when it tests on one corpus only."""
    corpora = {utterances[i].corpus for i in fold.test}
    return corpora.pop() if len(corpora) == 1 else None


URDU = REPO.parent / "shared" / "data" / "urdu"
SHARED = ["ang", "hap", "neu", "sad"]
ALPHA_FOLDERS = {"Angry": "ang", "Happy": "hap", "Neutral": "neu", "Sad": "sad", "Bored": "bor"}


def write_folders_corpus(root: Path, labels: list[str], speakers: int = 4, per_label: int = 2, base: float = 150.0,
                         seed: int = 0) -> Path:
    """`root/<label>/<speaker>_<n>.wav`, speakers S1..Sn (the same ids in every corpus), distinct audio."""
    for li, label in enumerate(labels):
        for s in range(1, speakers + 1):
            for n in range(per_label):
                write_tone(root / label / f"S{s}_{label}{n}.wav", seconds=0.5, freq=base + 40 * li + 7 * s + 3 * n,
                           seed=seed + 1000 * li + 10 * s + n)
    return root


def two_corpora(folder: Path, beta_labels: tuple[str, ...] = tuple(SHARED), **changes) -> dict:
    """An experiment over `alpha` (five folder names mapped onto four shared classes and `bor`) and `beta`."""
    write_folders_corpus(folder / "alpha", list(ALPHA_FOLDERS))
    write_folders_corpus(folder / "beta", list(beta_labels), base=170.0, seed=7)
    data = {
        "corpora": [
            {"name": "alpha", "reader": "folders", "path": "alpha", "labels": {"map": ALPHA_FOLDERS}},
            {"name": "beta", "reader": "folders", "path": "beta"},
        ],
        "labels": {"keep": SHARED},
        "protocol": {"kind": "cross_corpus", "train": ["alpha"], "test": "beta"},
        "features": SMALL_FEATURES,
    }
    return {**data, **changes}


def test_colliding_speakers_stay_distinct_and_counts(tmp_path):
    loaded = read_corpora(experiment_from_dict(two_corpora(tmp_path), tmp_path))
    assert loaded.classes == SHARED
    speakers = {u.speaker for u in loaded.utterances}
    assert speakers == {f"{c}/S{s}" for c in ("alpha", "beta") for s in range(1, 5)}  # S1 of alpha is not S1 of beta
    assert len({u.uid for u in loaded.utterances}) == len(loaded.utterances) == 64
    counts = {c.name: (c.read, c.kept, c.dropped, c.missing) for c in loaded.counts}
    assert counts == {"alpha": (40, 32, {"bor": 8}, []), "beta": (32, 32, {}, [])}
    assert {u.label for u in loaded.utterances if u.corpus == "alpha"} == set(SHARED)  # the map applied


def test_shared_classes_default_to_those_every_corpus_has(tmp_path):
    data = two_corpora(tmp_path)
    del data["labels"]
    loaded = read_corpora(experiment_from_dict(data, tmp_path))
    assert loaded.classes == SHARED  # alpha's classes that beta has too, in alpha's order: `bor` dropped
    assert loaded.counts[0].dropped == {"bor": 8}


def test_same_audio_in_two_corpora_names_both(tmp_path):
    data = two_corpora(tmp_path)
    shutil.copy(tmp_path / "alpha" / "Sad" / "S2_Sad1.wav", tmp_path / "beta" / "sad" / "S3_copy.wav")
    with pytest.raises(CorpusError, match=r"same audio is in corpus alpha \(.*S2_Sad1.*\) and corpus beta \(.*S3_copy"):
        read_corpora(experiment_from_dict(data, tmp_path))


def test_cross_corpus_fold_holds_out_the_test_corpus(tmp_path):
    experiment = experiment_from_dict(two_corpora(tmp_path, protocol={
        "kind": "cross_corpus", "train": ["alpha"], "test": "beta", "validation_speakers": 1}), tmp_path)
    loaded = read_corpora(experiment)
    [fold] = make_folds(loaded.utterances, loaded.classes, experiment.protocol)
    u = loaded.utterances
    assert fold.name == "alpha-to-beta" and target_corpus(fold, u) == "beta"
    assert sorted(fold.test) == [i for i, x in enumerate(u) if x.corpus == "beta"]
    assert {u[i].corpus for i in fold.train + fold.val} == {"alpha"}
    assert len({u[i].speaker for i in fold.val}) == 1  # every alpha speaker acted every class: one suffices
    assert {u[i].label for i in fold.val} == set(SHARED)


def test_leave_one_corpus_out_and_pooled_folds(tmp_path):
    data = two_corpora(tmp_path, protocol={"kind": "leave_one_corpus_out"})
    experiment = experiment_from_dict(data, tmp_path)
    loaded = read_corpora(experiment)
    folds = make_folds(loaded.utterances, loaded.classes, experiment.protocol)
    assert [(f.name, target_corpus(f, loaded.utterances), len(f.test)) for f in folds] == [
        ("beta-to-alpha", "alpha", 32), ("alpha-to-beta", "beta", 32)]
    pooled = experiment_from_dict({**data, "protocol": {"kind": "pooled", "within": "leave_one_speaker_out"}},
                                  tmp_path)
    folds = make_folds(loaded.utterances, loaded.classes, pooled.protocol)
    assert [f.name for f in folds][:2] == ["testalpha-S1", "testalpha-S2"] and len(folds) == 8
    assert all(len({loaded.utterances[i].speaker for i in f.test}) == 1 for f in folds)


def test_validation_speakers_cover_the_classes_of_a_confounded_corpus(tmp_path):
    """As in URDU, where most speakers appear in one emotion: validation takes speakers until every class
    shows, never one whose leaving would take a class out of training."""
    files = [(label, s, n) for label, speakers in {"ang": ["A1", "A2"], "hap": ["H1", "H2", "H3"], "neu": ["N1", "N2"],
                                                   "sad": ["D1", "D2"]}.items()
             for s in speakers for n in range(2 if s != "H3" else 5)]
    for index, (label, s, n) in enumerate(files):  # distinct audio per file (seeded by its index, not str hash)
        write_tone(tmp_path / "gamma" / label / f"{s}_{n}.wav", seconds=0.5, freq=200 + 9 * n + len(s), seed=index)
    data = two_corpora(tmp_path, protocol={"kind": "cross_corpus", "test": "alpha"})
    data["corpora"] = [data["corpora"][0], {"name": "gamma", "reader": "folders", "path": "gamma"}]
    experiment = experiment_from_dict(data, tmp_path)
    loaded = read_corpora(experiment)
    [fold] = make_folds(loaded.utterances, loaded.classes, experiment.protocol)
    val = sorted({loaded.utterances[i].speaker for i in fold.val})
    assert val == ["gamma/A1", "gamma/D1", "gamma/H1", "gamma/N1"]
    assert {loaded.utterances[i].label for i in fold.train} == set(SHARED)


def test_a_class_the_test_corpus_lacks_warns_and_one_training_lacks_is_refused(tmp_path, caplog):
    data = two_corpora(tmp_path, beta_labels=("ang", "hap", "neu"))
    experiment = experiment_from_dict(data, tmp_path)
    with caplog.at_level(logging.WARNING):
        loaded = read_corpora(experiment)
    assert "beta has no utterance of shared class(es) sad" in caplog.text
    assert loaded.counts[1].missing == ["sad"]
    make_folds(loaded.utterances, loaded.classes, experiment.protocol)  # testing on fewer classes is allowed
    strict = experiment_from_dict({**data, "protocol": {**data["protocol"], "require_all_classes": True}}, tmp_path)
    with pytest.raises(FoldError, match="alpha-to-beta: test split has no utterance of class.es. sad"):
        make_folds(loaded.utterances, loaded.classes, strict.protocol)
    reverse = experiment_from_dict({**data, "protocol": {"kind": "cross_corpus", "train": ["beta"], "test": "alpha"}},
                                   tmp_path)
    with pytest.raises(FoldError, match="beta-to-alpha: train split has no utterance of class.es. sad"):
        make_folds(loaded.utterances, loaded.classes, reverse.protocol)


@pytest.mark.parametrize("change, message", [
    ({"corpora": [{"reader": "folders", "path": "alpha"}]}, r"corpora\[0\].name: required"),
    ({"corpus": {"reader": "folders", "path": "alpha"}}, "either corpus .one corpus. or corpora"),
    ({"protocol": {"kind": "cross_corpus", "test": "gamma"}}, "unknown corpus 'gamma'"),
    ({"protocol": {"kind": "cross_corpus", "train": ["beta"], "test": "beta"}}, "cannot both train and test"),
    ({"protocol": {"kind": "leave_one_corpus_out"}, "run": {"search": "once"}}, "run.search: once would search"),
    ({"run": {"in_domain": {"delta": "x"}}}, "unknown corpus 'delta'"),
])
def test_config_errors_name_the_key(tmp_path, change, message):
    data = {**two_corpora(tmp_path), **change}
    if "corpora" in change and len(change["corpora"]) == 1:
        data["corpora"] = change["corpora"] * 2
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict(data, tmp_path)


def test_corpus_command_prints_per_corpus_and_shared_counts(tmp_path, capsys):
    path = tmp_path / "exp.yml"
    path.write_text(yaml.safe_dump(two_corpora(tmp_path)))
    assert main(["corpus", str(path)]) == 0
    out = capsys.readouterr().out
    assert "corpus: alpha + beta (64 utterances, 8 speakers, 4 classes)" in out
    assert "alpha: 40 read, 32 kept, dropped outside the shared classes: bor 8" in out
    assert "beta: 32 read, 32 kept, dropped outside the shared classes: none" in out
    assert "alpha-to-beta test [beta/S1,beta/S2,beta/S3,beta/S4]" in out


def test_real_emodb_and_urdu_shared_counts():
    if not (EMODB / "wav").is_dir() or not URDU.is_dir():
        pytest.skip("EmoDB or URDU not found beside the repo")
    experiment = load_experiment(REPO / "examples" / "cross_corpus" / "experiment.yml")
    loaded = read_corpora(experiment)
    counts = {c.name: (c.read, c.kept, c.dropped) for c in loaded.counts}
    assert counts == {"emodb": (535, 339, {"bor": 81, "dis": 46, "fea": 69}), "urdu": (400, 400, {})}
    folds = make_folds(loaded.utterances, loaded.classes, experiment.protocol)
    assert [(f.name, len(f.test)) for f in folds] == [("urdu-to-emodb", 339), ("emodb-to-urdu", 400)]
    speakers = {u.speaker for u in loaded.utterances}
    assert len(speakers) == 10 + 29
