"""openSMILE backend: LLD frames and functionals equal the package's own output, cached like every backend."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import opensmile
import pytest
from conftest import write_tone

from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import BackendError, ConfigError
from nni_emotionnas.features.audio import load_audio
from nni_emotionnas.features.opensmile_backend import OpenSmileFunctionalsExtractor
from nni_emotionnas.features.registry import build_deep_extractor
from nni_emotionnas.features.store import FeatureStore


def direct(audio: np.ndarray, feature_set: str, level: str):
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel[level])
    return smile.process_signal(audio, 16000)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> list[Utterance]:
    root = tmp_path_factory.mktemp("smile")
    return [
        Utterance(write_tone(root / f"t{i}.wav", seconds=0.8 + 0.3 * i, rate=22050, freq=140 + 60 * i, seed=i),
                  "neu", f"s{i}", f"s{i}", f"t{i}", "test")
        for i in range(2)
    ]


def test_egemaps_frames_equal_the_package_and_are_cached(tmp_path, tones):
    store = FeatureStore(tmp_path / "cache")
    first = store.extract(tones, build_deep_extractor({"backend": "opensmile", "feature_set": "eGeMAPSv02"}),
                          progress=False)
    assert (first.hits, first.misses) == (0, 2)
    for i, u in enumerate(tones):
        expected = direct(load_audio(u.path), "eGeMAPSv02", "LowLevelDescriptors")
        starts = expected.index.get_level_values("start").total_seconds()
        assert np.allclose(np.diff(starts[:-2]), 0.010)  # 10 ms hop (openSMILE clips the last timestamps)
        frames = first.load(i)
        assert frames.shape == expected.shape and frames.shape[1] == 25
        np.testing.assert_array_equal(frames, expected.to_numpy(dtype=np.float32))
    assert first.load(1).shape[0] > first.load(0).shape[0] + 25  # 0.3 s longer: ~30 more frames
    again = store.extract(tones, build_deep_extractor({"backend": "opensmile", "feature_set": "eGeMAPSv02"}),
                          progress=False)
    assert (again.hits, again.misses) == (2, 0)
    np.testing.assert_array_equal(again.load(0), first.load(0))


def test_compare_frames_append_the_sets_deltas(tmp_path, tones):
    extractor = build_deep_extractor({"backend": "opensmile"})  # ComParE_2016 with deltas by default
    audio = load_audio(tones[0].path)
    frames = extractor.extract(audio)
    lld = direct(audio, "ComParE_2016", "LowLevelDescriptors").to_numpy(dtype=np.float32)
    deltas = direct(audio, "ComParE_2016", "LowLevelDescriptors_Deltas").to_numpy(dtype=np.float32)
    assert frames.shape == (len(lld), 130) and len(deltas) >= len(lld)
    np.testing.assert_array_equal(frames[:, :65], lld)
    np.testing.assert_array_equal(frames[:, 65:], deltas[: len(lld)])
    gemaps = build_deep_extractor({"backend": "opensmile", "feature_set": "GeMAPSv01b", "deltas": True})
    assert gemaps.config()["deltas"] is False and gemaps.extract(audio).shape == (len(lld), 18)


def test_functionals_equal_the_package(tones):
    audio = load_audio(tones[1].path)
    vector = OpenSmileFunctionalsExtractor("eGeMAPSv02").extract(audio)
    expected = direct(audio, "eGeMAPSv02", "Functionals").to_numpy(dtype=np.float32)
    assert vector.shape == (88,)
    np.testing.assert_array_equal(vector, expected[0])


def test_extractor_pickles_for_worker_processes(tones):
    extractor = build_deep_extractor({"backend": "opensmile", "feature_set": "GeMAPSv01b"})
    audio = load_audio(tones[0].path)
    frames = extractor.extract(audio)  # a built Smile must not travel to the store's worker processes
    copy = pickle.loads(pickle.dumps(extractor))
    assert copy._lld._smile is None
    np.testing.assert_array_equal(copy.extract(audio), frames)


def test_bad_options_and_missing_package(monkeypatch):
    with pytest.raises(ConfigError, match="features.deep.feature_set"):
        build_deep_extractor({"backend": "opensmile", "feature_set": "emobase"})
    monkeypatch.setitem(sys.modules, "opensmile", None)
    with pytest.raises(BackendError, match=r"pip install 'nni-emotionnas\[opensmile\]'") as error:
        build_deep_extractor({"backend": "opensmile"})
    assert "\n" not in str(error.value)
