"""Faults in a user's corpus: one audio under two speakers or labels, repeated rows, BOM/CRLF manifests,
missing files with `on_bad_audio: skip`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from conftest import write_tone

from nni_emotionnas.cli.app import main
from nni_emotionnas.config.experiment import experiment_from_dict
from nni_emotionnas.corpora.load import read_corpora
from nni_emotionnas.errors import CorpusError


def write_manifest(folder: Path, rows: list[str], name: str = "m.csv", text_prefix: str = "", newline="\n") -> Path:
    """A manifest over tones a.wav .. f.wav (distinct audio) beside it."""
    for i, stem in enumerate("abcdef"):
        if not (folder / f"{stem}.wav").exists():
            write_tone(folder / f"{stem}.wav", seconds=0.5, freq=150 + 40 * i, seed=i)
    path = folder / name
    path.write_bytes((text_prefix + newline.join(["path,label,speaker", *rows]) + newline).encode())
    return path


def load(folder: Path, name: str = "m.csv", **corpus) -> list:
    experiment = experiment_from_dict({"corpus": {"reader": "manifest", "path": name, **corpus}}, folder)
    return read_corpora(experiment).utterances


def test_same_file_under_two_speakers_is_refused_naming_both_rows(tmp_path, capsys):
    manifest = write_manifest(tmp_path, ["a.wav,ang,s1", "b.wav,sad,s2", "a.wav,ang,s2"])
    with pytest.raises(CorpusError, match=r"under speakers s1 and s2 \(m.csv:2 and m.csv:4\)"):
        load(tmp_path)
    assert main(["corpus", str(manifest)]) == 2  # the CLI used to print the counts and exit 0
    assert "m.csv:2 and m.csv:4" in capsys.readouterr().err


def test_copied_audio_under_two_speakers_is_refused(tmp_path):
    write_manifest(tmp_path, [])
    shutil.copy(tmp_path / "a.wav", tmp_path / "copy.wav")  # same bytes (and size as every other tone)
    write_manifest(tmp_path, ["a.wav,ang,s1", "b.wav,sad,s2", "copy.wav,ang,s3"])
    with pytest.raises(CorpusError, match=r"under speakers s1 and s3 \(m.csv:2 and m.csv:4\)"):
        load(tmp_path)


def test_same_audio_under_two_labels_is_refused(tmp_path):
    write_manifest(tmp_path, ["a.wav,ang,s1", "./a.wav,sad,s1"])
    with pytest.raises(CorpusError, match=r"labelled ang and sad \(m.csv:2 and m.csv:3\)"):
        load(tmp_path)


def test_repeated_row_is_an_error_or_dropped_with_a_warning(tmp_path, caplog):
    write_manifest(tmp_path, ["a.wav,ang,s1", "b.wav,sad,s2", "a.wav,ang,s1"])
    with pytest.raises(CorpusError, match=r"m.csv:2 and m.csv:4 are the same audio listed twice.*on_duplicate: drop"):
        load(tmp_path)
    with caplog.at_level(logging.WARNING):
        records = load(tmp_path, on_duplicate="drop")
    assert [(r.path.name, r.source) for r in records] == [("a.wav", "m.csv:2"), ("b.wav", "m.csv:3")]
    assert "dropped 1 repeated row(s)" in caplog.text and "m.csv:4" in caplog.text


def test_bom_and_crlf_manifest_is_read(tmp_path):
    write_manifest(tmp_path, ["a.wav,ang,s1", "b.wav,sad,s2"], text_prefix="\ufeff", newline="\r\n")
    records = load(tmp_path)
    assert [(r.path.name, r.label, r.speaker) for r in records] == [("a.wav", "ang", "s1"), ("b.wav", "sad", "s2")]


def test_skip_covers_a_missing_file_through_feature_extraction(tmp_path):
    from nni_emotionnas.features.prepared import prepare

    rows = [f"{stem}.wav,{label},s{speaker}" for speaker, pair in enumerate(["ab", "cd", "ef"])
            for stem, label in zip(pair, ["ang", "sad"])]
    write_manifest(tmp_path, [*rows, "gone.wav,ang,s2"])
    corpus = {"reader": "manifest", "path": "m.csv", "on_bad_audio": "skip"}
    experiment = experiment_from_dict(
        {"corpus": corpus, "features": {"n_jobs": 1, "spectrogram": {"duration": 0.5, "size": [8, 8]}}}, tmp_path
    )
    prepared = prepare(experiment, streams=["spectrogram"], progress=False)
    assert [(u.path.name, reason) for u, reason in prepared.skipped] == [
        ("gone.wav", f"{tmp_path / 'gone.wav'}: audio file not found")
    ]
    assert len(prepared.utterances) == 6
