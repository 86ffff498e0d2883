"""The feature cache: hits, misses, invalidation, atomic writes, parallel extraction, bad audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone

from nni_emotionnas.config.experiment import SpectrogramConfig
from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import AudioError
from nni_emotionnas.features import store as store_module
from nni_emotionnas.features.spectrogram import SpectrogramExtractor
from nni_emotionnas.features.store import FeatureStore

SMALL = SpectrogramConfig(duration=1.0, size=[20, 30])


def utterances(paths: list[Path]) -> list[Utterance]:
    return [Utterance(p, "neu", f"s{i}", f"s{i}", p.stem, "test") for i, p in enumerate(paths)]


@pytest.fixture
def corpus(tmp_path) -> list[Utterance]:
    return utterances([write_tone(tmp_path / f"a{i}.wav", freq=150 + 40 * i, seed=i) for i in range(4)])


def test_second_run_extracts_nothing(tmp_path, corpus):
    store = FeatureStore(tmp_path / "cache")
    first = store.extract(corpus, SpectrogramExtractor(SMALL), progress=False)
    assert (first.hits, first.misses) == (0, 4)
    second = store.extract(corpus, SpectrogramExtractor(SMALL), progress=False)
    assert (second.hits, second.misses) == (4, 0)
    loaded = second.load(2)
    assert isinstance(loaded, np.memmap) and loaded.shape == (20, 30)
    np.testing.assert_array_equal(loaded, first.load(2))


def test_invalidation_on_audio_change_and_config_change(tmp_path, corpus):
    store = FeatureStore(tmp_path / "cache")
    store.extract(corpus, SpectrogramExtractor(SMALL), progress=False)
    write_tone(corpus[1].path, freq=900.0, seconds=1.5)
    os.utime(corpus[1].path, ns=(1, 1))
    after_edit = store.extract(corpus, SpectrogramExtractor(SMALL), progress=False)
    assert (after_edit.hits, after_edit.misses) == (3, 1)
    other = SpectrogramConfig(duration=1.0, size=[20, 30], scale="db")
    assert store.extract(corpus, SpectrogramExtractor(other), progress=False).misses == 4


def test_a_copied_or_touched_corpus_reuses_its_features(tmp_path, corpus):
    """The cache keys audio by its bytes: a copy elsewhere, or a file with a new time stamp (a remount, an rsync
    without times), extracts nothing again; a file whose bytes changed does."""
    import shutil

    store = FeatureStore(tmp_path / "cache")
    store.extract(corpus, SpectrogramExtractor(SMALL), progress=False)
    copy = tmp_path / "copy"
    copy.mkdir()
    copied = utterances([Path(shutil.copy(u.path, copy / u.path.name)) for u in corpus])
    os.utime(copied[0].path, ns=(10**18, 10**18))
    report = store.extract(copied, SpectrogramExtractor(SMALL), progress=False)
    assert (report.hits, report.misses) == (4, 0)
    write_tone(copied[2].path, freq=999.0, seconds=1.0)
    assert store.extract(copied, SpectrogramExtractor(SMALL), progress=False).misses == 1


def test_parallel_equals_serial(tmp_path, corpus):
    serial = FeatureStore(tmp_path / "a").extract(corpus, SpectrogramExtractor(SMALL), progress=False)
    parallel = FeatureStore(tmp_path / "b").extract(corpus, SpectrogramExtractor(SMALL), n_jobs=2, progress=False)
    for i in range(len(corpus)):
        np.testing.assert_array_equal(serial.load(i), parallel.load(i))


def test_interrupted_write_leaves_no_entry(tmp_path, corpus, monkeypatch):
    calls = {"n": 0}
    real_save = np.save

    def crash_on_second(handle, array, allow_pickle=False):
        calls["n"] += 1
        if calls["n"] == 2:
            handle.write(b"\x93NUMPY partial")
            raise KeyboardInterrupt
        real_save(handle, array, allow_pickle=allow_pickle)

    monkeypatch.setattr(store_module.np, "save", crash_on_second)
    store = FeatureStore(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        store.extract(corpus, SpectrogramExtractor(SMALL), progress=False)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len([p for p in files if p.suffix == ".npy"]) == 1
    assert not [p for p in files if p.name.endswith(".tmp")]
    monkeypatch.undo()
    resumed = store.extract(corpus, SpectrogramExtractor(SMALL), progress=False)
    assert (resumed.hits, resumed.misses) == (1, 3)


def test_bad_audio_error_or_skip(tmp_path, corpus):
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(16000, dtype=np.float32), 16000)
    bad = corpus + utterances([silent, tmp_path / "nothere.wav"])
    store = FeatureStore(tmp_path / "cache")
    with pytest.raises(AudioError, match=r"silent.wav: silent audio.*\(and 1 more bad files\)"):
        store.extract(bad, SpectrogramExtractor(SMALL), progress=False)
    report = store.extract(bad, SpectrogramExtractor(SMALL), on_bad_audio="skip", progress=False)
    assert [u.path.name for u, _ in report.skipped] == ["silent.wav", "nothere.wav"]
    assert report.files[4] is None and report.files[5] is None and report.files[0] is not None


def test_an_entry_another_writer_holds_is_waited_for_and_not_written_twice(tmp_path, corpus):
    import threading

    from nni_emotionnas.locks import entry_lock

    store = FeatureStore(tmp_path / "cache")
    extractor = SpectrogramExtractor(SMALL)
    key = store_module.audio_key(corpus[0].path)
    target = store.folder(extractor) / key[:2] / f"{key}.npy"
    theirs = np.full((20, 30), 7.0, dtype=np.float32)
    reports = []
    extraction = threading.Thread(target=lambda: reports.append(store.extract(corpus[:1], extractor, progress=False)))
    with entry_lock(target):  # another process (here: another open file) is writing this entry
        extraction.start()
        extraction.join(timeout=2.0)
        assert extraction.is_alive() and not target.exists()
        store_module.save_array(target, theirs)
    extraction.join(timeout=60)
    np.testing.assert_array_equal(reports[0].load(0), theirs)
