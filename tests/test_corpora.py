"""Corpus readers and label policies on miniature trees and on the real EmoDB copy."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import write_mini_iemocap, write_tone

from nni_emotionnas.config.experiment import LabelConfig, experiment_from_dict
from nni_emotionnas.corpora.filename_corpora import parse_cremad_name, parse_ravdess_name, read_emodb
from nni_emotionnas.corpora.generic import read_folders, read_manifest
from nni_emotionnas.corpora.iemocap import read_iemocap
from nni_emotionnas.corpora.labels import apply_labels
from nni_emotionnas.corpora.load import read_corpora
from nni_emotionnas.errors import ConfigError, CorpusError


def count_by(utterances, attribute: str) -> dict[str, int]:
    """Counts per value of `attribute` (label, speaker, session...), sorted by value."""
    return dict(sorted(Counter(getattr(u, attribute) for u in utterances).items()))


@pytest.fixture(scope="module")
def mini_iemocap(tmp_path_factory) -> Path:
    return write_mini_iemocap(tmp_path_factory.mktemp("iemocap"))


def test_iemocap_improvised_records(mini_iemocap):
    records = read_iemocap(mini_iemocap.parent, subset="improvised")
    # 5 sessions x 2 dialogs (F, M) x 10 labels x 2 genders
    assert len(records) == 200
    assert all("_impro" in r.uid for r in records)
    first = next(r for r in records if r.uid == "Ses01F_impro01_M003")
    assert (first.speaker, first.session, first.gender, first.label) == ("Ses01M", "Ses01", "M", "ang")
    assert first.duration == pytest.approx(0.5)
    assert first.path == mini_iemocap / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M003.wav"
    assert count_by(records, "speaker") == {f"Ses0{s}{g}": 20 for s in range(1, 6) for g in "FM"}


def test_iemocap_subsets(mini_iemocap):
    scripted = read_iemocap(mini_iemocap, subset="scripted")
    both = read_iemocap(mini_iemocap, subset="all")
    assert all("_script" in r.uid for r in scripted)
    assert len(both) == len(scripted) + 200
    with pytest.raises(CorpusError, match="subset 'spontaneous'"):
        read_iemocap(mini_iemocap, subset="spontaneous")


def test_iemocap_missing_wav_named_or_skipped(tmp_path):
    release = write_mini_iemocap(tmp_path, sessions=1, per_label=1, extra_labels=())
    victim = release / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F002.wav"
    victim.unlink()
    corpus = {"reader": "iemocap", "path": str(tmp_path)}
    with pytest.raises(CorpusError, match=r"Ses01F_impro01.txt:\d+: audio file .*Ses01F_impro01_F002.wav is missing"):
        read_corpora(experiment_from_dict({"corpus": corpus}, tmp_path))
    skipping = experiment_from_dict({"corpus": {**corpus, "on_bad_audio": "skip"}}, tmp_path)
    assert victim in [u.path for u in read_corpora(skipping).utterances]  # kept for the feature stage to skip, report


def test_label_policy_merge_keep_and_unknown(mini_iemocap):
    records = read_iemocap(mini_iemocap)
    with pytest.raises(CorpusError, match=r"exc \(20\), xxx \(20\)"):
        apply_labels(records, LabelConfig(keep=["neu", "ang", "hap", "sad"]))
    kept, classes = apply_labels(records, LabelConfig(keep=["neu", "ang", "hap", "sad"], drop_unknown=True))
    assert classes == ["neu", "ang", "hap", "sad"] and len(kept) == 160
    merged, _ = apply_labels(
        records, LabelConfig(keep=["neu", "ang", "hap", "sad"], map={"exc": "hap"}, drop_unknown=True)
    )
    assert count_by(merged, "label") == {"ang": 40, "hap": 60, "neu": 40, "sad": 40}
    with pytest.raises(CorpusError, match="no utterance has label.*fru"):
        apply_labels(records, LabelConfig(keep=["neu", "fru"], drop_unknown=True))


def test_emodb_reader(emodb):
    records = read_emodb(emodb / "wav")
    assert len(records) == 535
    assert len({r.speaker for r in records}) == 10
    assert count_by(records, "label") == {
        "ang": 127, "bor": 81, "dis": 46, "fea": 69, "hap": 71, "neu": 79, "sad": 62
    }
    r = next(r for r in records if r.uid == "03a01Fa")
    assert (r.speaker, r.label, r.gender) == ("03", "hap", "M")
    assert next(r for r in records if r.speaker == "16").gender == "F"


def test_filename_parsers():
    r = parse_ravdess_name(Path("Actor_12/03-01-05-02-01-02-12.wav"))
    assert (r.label, r.speaker, r.gender) == ("ang", "Actor_12", "F")
    assert parse_ravdess_name(Path("03-01-08-01-01-01-07.wav")).gender == "M"
    c = parse_cremad_name(Path("1001_DFA_ANG_XX.wav"), {"1001": "M"})
    assert (c.label, c.speaker, c.gender) == ("ang", "1001", "M")
    with pytest.raises(CorpusError, match="1001_DFA_XYZ_XX.wav"):
        parse_cremad_name(Path("1001_DFA_XYZ_XX.wav"))
    with pytest.raises(CorpusError, match="not a RAVDESS file name"):
        parse_ravdess_name(Path("03-01-99-01-01-01-07.wav"))


def test_manifest_reader(tmp_path):
    write_tone(tmp_path / "audio" / "a.wav")
    write_tone(tmp_path / "audio" / "b.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,speaker,session\naudio/a.wav,ang,s1,g1\naudio/b.wav,sad,s2,\n")
    records = read_manifest(manifest)
    assert [(r.label, r.speaker, r.session) for r in records] == [("ang", "s1", "g1"), ("sad", "s2", "s2")]
    assert records[0].path == tmp_path / "audio" / "a.wav"
    (tmp_path / "bad.csv").write_text("file,label\nx.wav,ang\n")
    with pytest.raises(CorpusError, match="bad.csv: manifest lacks column.*path.*speaker"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("path,label,speaker\naudio/zzz.wav,ang,s1\n")
    experiment = experiment_from_dict({"corpus": {"reader": "manifest", "path": "gone.csv"}}, tmp_path)
    with pytest.raises(CorpusError, match=r"gone.csv:2: audio file .*zzz.wav is missing"):
        read_corpora(experiment)


def test_folders_reader(tmp_path):
    write_tone(tmp_path / "happy" / "spk1_001.wav")
    write_tone(tmp_path / "sad" / "spk2-004.wav")
    records = read_folders(tmp_path)
    assert [(r.label, r.speaker) for r in records] == [("happy", "spk1"), ("sad", "spk2")]
    with pytest.raises(CorpusError, match="speaker_pattern"):
        read_folders(tmp_path, speaker_pattern=r"^\d+$")


def test_read_corpora_rejects_unknown_reader_option(tmp_path, emodb):
    experiment = experiment_from_dict({"corpus": {"reader": "emodb", "path": str(emodb), "options": {"x": 1}}},
                                      tmp_path)
    with pytest.raises(ConfigError, match="corpus.options.x: unknown option for reader 'emodb'"):
        read_corpora(experiment)
