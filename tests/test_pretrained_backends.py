"""The pretrained deep backends: resemblyzer's packaged LSTM and transformers-format SSL checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tone

from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.errors import BackendError, ConfigError
from nni_emotionnas.features.hf_backend import HFExtractor, import_transformers
from nni_emotionnas.features.registry import build_deep_extractor
from nni_emotionnas.features.resemblyzer_backend import ResemblyzerExtractor, packaged_weights
from nni_emotionnas.features.store import FeatureStore

RATE = 16000


def speechlike(seconds: float, seed: int = 0, amplitude: float = 0.1) -> np.ndarray:
    """Noise shaped by a slow envelope: enough spectral variety to make LSTM states differ over time."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * np.arange(n) / RATE + seed)
    tone = np.sin(2 * np.pi * (120 + 30 * seed) * np.arange(n) / RATE)
    return (amplitude * envelope * (0.6 * tone + 0.4 * rng.standard_normal(n))).astype(np.float32)


def resemblyzer(options: dict) -> ResemblyzerExtractor:
    return build_deep_extractor({"backend": "resemblyzer", **options})


@pytest.fixture(scope="module")
def lstm_extractor() -> ResemblyzerExtractor:
    return resemblyzer({"device": "cpu"})


# --- resemblyzer -----------------------------------------------------------------------------------------


def test_resemblyzer_shapes_10ms_frames_and_layers(lstm_extractor):
    audio = speechlike(2.5)
    last = lstm_extractor.extract(audio)
    assert last.shape == (251, 256) and last.dtype == np.float32 and np.isfinite(last).all()
    assert np.abs(last).max() <= 1.0  # LSTM outputs are tanh-bounded
    stacked = resemblyzer({"layer": "weighted", "device": "cpu"})
    assert stacked.n_stacked_layers == 3 and stacked.dim == 768
    all_layers = stacked.extract(audio)
    assert all_layers.shape == (251, 768)
    np.testing.assert_allclose(all_layers[:, 512:], last, atol=1e-6)
    first = resemblyzer({"layer": 1, "device": "cpu"}).extract(audio)
    np.testing.assert_allclose(all_layers[:, :256], first, atol=1e-6)
    assert not np.allclose(first, last, atol=1e-2)
    assert resemblyzer({"layer": -3, "device": "cpu"}).config()["layers"] == [1]


def test_resemblyzer_batch_equals_single_calls(lstm_extractor):
    audios = [speechlike(s, seed=i) for i, s in enumerate((0.7, 1.9, 1.3))]
    batched = lstm_extractor.extract_batch(audios)
    assert [f.shape[0] for f in batched] == [71, 191, 131]
    for audio, frames in zip(audios, batched):
        np.testing.assert_allclose(frames, lstm_extractor.extract(audio), atol=1e-5)


def test_resemblyzer_is_deterministic_across_instances(lstm_extractor):
    audio = speechlike(1.2, seed=3)
    again = resemblyzer({"device": "cpu"})
    np.testing.assert_array_equal(lstm_extractor.extract(audio), again.extract(audio))
    np.testing.assert_array_equal(again.extract(audio), again.extract(audio))
    assert lstm_extractor.config() == again.config()
    threads = torch.get_num_threads()
    two_threads = resemblyzer({"device": "cpu", "cpu_threads": 2})
    np.testing.assert_allclose(two_threads.extract(audio), again.extract(audio), atol=1e-5)
    assert two_threads.config() == again.config()  # threads change speed, not features: same cache entry
    assert torch.get_num_threads() == threads  # the LSTM's thread count is restored afterwards


def test_resemblyzer_equals_the_package_lstm_on_the_same_mel(lstm_extractor):
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

    encoder = VoiceEncoder("cpu", verbose=False)
    audio = speechlike(1.9, seed=5, amplitude=0.3)  # louder than -30 dBFS: volume normalisation is a no-op
    mel = lstm_extractor.mel_frames(audio)
    np.testing.assert_array_equal(mel, wav_to_mel_spectrogram(audio))
    with torch.no_grad():
        package = encoder.lstm(torch.from_numpy(mel)[None])[0][0].numpy()
    np.testing.assert_allclose(lstm_extractor.extract(audio), package, atol=1e-5)
    # intermediate layers equal torch's own multi-layer LSTM cut after that layer, on the package's weights
    weights = encoder.lstm.state_dict()
    for depth in (1, 2):
        cut = torch.nn.LSTM(40, 256, num_layers=depth, batch_first=True)
        cut.load_state_dict({k: v for k, v in weights.items() if int(k[-1]) < depth})
        with torch.no_grad():
            expected = cut(torch.from_numpy(mel)[None])[0][0].numpy()
        np.testing.assert_allclose(resemblyzer({"layer": depth, "device": "cpu"}).extract(audio), expected, atol=1e-5)


def test_resemblyzer_volume_normalisation_and_silence_trimming():
    quiet, quieter = speechlike(1.0, amplitude=0.01), speechlike(1.0, amplitude=0.005)
    normalised = resemblyzer({"device": "cpu"})
    np.testing.assert_allclose(normalised.extract(quiet), normalised.extract(quieter), atol=1e-4)
    raw = resemblyzer({"normalize_volume": False, "device": "cpu"})
    assert not np.allclose(raw.extract(quiet), raw.extract(quieter), atol=1e-3)
    assert normalised.config() != raw.config()

    with_pause = np.concatenate([speechlike(1.0, amplitude=0.3), np.zeros(2 * RATE, np.float32),
                                 speechlike(1.0, seed=1, amplitude=0.3)])
    assert normalised.extract(with_pause).shape[0] == 401  # default: no trimming, 10 ms frames
    trimmed = resemblyzer({"trim_silence": True, "device": "cpu"}).extract(with_pause)
    assert trimmed.shape[0] < 300


def test_resemblyzer_option_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"features\.deep\.layer: 4 is out of range"):
        resemblyzer({"layer": 4})
    with pytest.raises(ConfigError, match=r"features\.deep\.layer"):
        resemblyzer({"layer": "mean"})
    with pytest.raises(ConfigError, match=r"features\.deep\.trim: unknown key"):
        resemblyzer({"trim": True})
    with pytest.raises(BackendError, match=r"features\.deep\.weights: .*nope\.pt not found"):
        resemblyzer({"weights": str(tmp_path / "nope.pt")})
    bogus = tmp_path / "bogus.pt"
    torch.save({"model_state": {"linear.weight": torch.zeros(2)}}, bogus)
    with pytest.raises(BackendError, match="not a resemblyzer voice-encoder checkpoint"):
        resemblyzer({"weights": str(bogus), "device": "cpu"}).extract(speechlike(0.5))


def test_resemblyzer_missing_package_says_how_to_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    with pytest.raises(BackendError, match="pip install resemblyzer"):
        build_deep_extractor({"backend": "resemblyzer"})


def test_weights_come_from_the_installed_package_not_the_repo():
    import resemblyzer

    assert packaged_weights() == Path(resemblyzer.__file__).resolve().parent / "pretrained.pt"
    assert packaged_weights().is_file()
    assert not list((Path(__file__).resolve().parents[1] / "nni_emotionnas").rglob("*.pt"))


def test_resemblyzer_features_are_cached(tmp_path):
    paths = [write_tone(tmp_path / f"u{i}.wav", seconds=0.5 + 0.3 * i, freq=140 + 50 * i, seed=i) for i in range(3)]
    utterances = [Utterance(p, "neu", f"s{i}", f"s{i}", p.stem, "test") for i, p in enumerate(paths)]
    store = FeatureStore(tmp_path / "cache")
    extractor = build_deep_extractor({"backend": "resemblyzer", "device": "cpu"})
    first = store.extract(utterances, extractor, progress=False, batch_size=2)
    assert (first.hits, first.misses) == (0, 3)
    second = store.extract(utterances, build_deep_extractor({"backend": "resemblyzer"}), progress=False)
    assert (second.hits, second.misses) == (3, 0)
    assert [second.load(i).shape for i in range(3)] == [(51, 256), (81, 256), (111, 256)]
    np.testing.assert_array_equal(second.load(1), first.load(1))
    other_layer = store.extract(utterances, build_deep_extractor({"backend": "resemblyzer", "layer": 2}),
                                progress=False)
    assert other_layer.misses == 3


# --- hf (transformers checkpoints) -----------------------------------------------------------------------

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(16, 16),
            conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            vocab_size=10)
KINDS = {  # name -> (config class, model class, front-end norm, whether the product batches it with masks)
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", "layer", True),
    "hubert": ("HubertConfig", "HubertModel", "group", False),
    "wavlm": ("WavLMConfig", "WavLMModel", "layer", True),
}


def save_tiny_model(directory: Path, kind: str, preprocessor: bool = True) -> torch.nn.Module:
    """A randomly initialised encoder in the real `save_pretrained` format (no weights can be downloaded)."""
    tf = import_transformers()
    config_name, model_name, norm, _ = KINDS[kind]
    torch.manual_seed(0)
    config = getattr(tf, config_name)(**TINY, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer")
    model = getattr(tf, model_name)(config).eval()
    model.save_pretrained(directory)
    if preprocessor:
        tf.Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True,
                                    return_attention_mask=norm == "layer").save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: (root / kind, save_tiny_model(root / kind, kind)) for kind in KINDS}


def direct_hidden_states(model: torch.nn.Module, audio: np.ndarray, normalize: bool = True) -> list[np.ndarray]:
    x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7) if normalize else audio
    with torch.no_grad():
        states = model(torch.from_numpy(x.astype(np.float32))[None], output_hidden_states=True).hidden_states
    return [s[0].numpy() for s in states]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_hf_round_trip_equals_direct_model_call(tiny_models, kind):
    path, model = tiny_models[kind]
    audios = [speechlike(s, seed=i) for i, s in enumerate((0.25, 0.55, 0.4))]
    expected = [direct_hidden_states(model, a) for a in audios]
    for layer, index in ((-1, 2), (0, 0), (1, 1)):
        extractor = build_deep_extractor({"backend": "hf", "path": str(path), "layer": layer, "device": "cpu"})
        assert isinstance(extractor, HFExtractor) and extractor.batchable == KINDS[kind][3]
        batched = extractor.extract_batch(audios)
        for frames, states in zip(batched, expected):
            assert frames.dtype == np.float32 and frames.shape == states[index].shape
            np.testing.assert_allclose(frames, states[index], atol=1e-5)
    weighted = build_deep_extractor({"backend": "hf", "path": str(path), "layer": "weighted", "device": "cpu"})
    assert weighted.n_stacked_layers == 3 and weighted.dim == 96
    np.testing.assert_allclose(weighted.extract(audios[1]), np.concatenate(expected[1], axis=-1), atol=1e-5)


def test_hf_frame_counts_follow_the_conv_front_end(tiny_models):
    path, _ = tiny_models["wav2vec2"]
    frames = build_deep_extractor({"backend": "hf", "path": str(path), "device": "cpu"}).extract_batch(
        [speechlike(0.25), speechlike(0.5)])
    # (n - 10) // 5 + 1 samples -> then (m - 8) // 4 + 1 frames: 4000 -> 799 -> 198, 8000 -> 1599 -> 398
    assert [f.shape for f in frames] == [(198, 32), (398, 32)]


def test_hf_without_preprocessor_config_follows_the_front_end_norm(tmp_path):
    audio = speechlike(0.4, amplitude=0.3)
    for kind, normalize in (("wav2vec2", True), ("hubert", False)):
        model = save_tiny_model(tmp_path / kind, kind, preprocessor=False)
        frames = build_deep_extractor({"backend": "hf", "path": str(tmp_path / kind), "device": "cpu"}).extract(audio)
        np.testing.assert_allclose(frames, direct_hidden_states(model, audio, normalize)[-1], atol=1e-5)


def test_hf_cache_hit_and_invalidation_when_weights_change(tmp_path, tiny_models):
    path = tmp_path / "model"
    save_tiny_model(path, "wav2vec2")
    wavs = [write_tone(tmp_path / f"u{i}.wav", seconds=0.3 + 0.1 * i, seed=i) for i in range(2)]
    utterances = [Utterance(p, "neu", f"s{i}", f"s{i}", p.stem, "test") for i, p in enumerate(wavs)]
    store = FeatureStore(tmp_path / "cache")
    options = {"backend": "hf", "path": str(path), "device": "cpu"}
    assert store.extract(utterances, build_deep_extractor(options), progress=False).misses == 2
    assert store.extract(utterances, build_deep_extractor(options), progress=False).hits == 2
    save_tiny_model(path, "hubert")  # a different checkpoint saved over the same directory
    assert store.extract(utterances, build_deep_extractor(options), progress=False).misses == 2


def test_hf_errors_say_what_is_wrong_and_how_to_fix(tmp_path, tiny_models, monkeypatch):
    def build(path, **extra):
        return build_deep_extractor({"backend": "hf", "path": str(path), **extra})

    with pytest.raises(ConfigError, match=r"features\.deep\.path: required key is missing"):
        build_deep_extractor({"backend": "hf"})
    with pytest.raises(BackendError, match=r"features\.deep\.path: .*missing does not exist; point .*save_pretrained"):
        build(tmp_path / "missing")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(BackendError, match="is a file, not a checkpoint directory"):
        build(tmp_path / "file.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match=r"not a Hugging Face checkpoint \(no config\.json\)"):
        build(tmp_path / "empty")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(BackendError, match=r"holds a 'bert' checkpoint, not a speech encoder.*wav2vec2"):
        build(bert)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_models["wav2vec2"][0] / "config.json").read_text())
    with pytest.raises(BackendError, match="has config.json but no model weights"):
        build(no_weights)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_models["wav2vec2"][0] / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BackendError, match="cannot load the model in"):
        build(broken, device="cpu").extract(speechlike(0.3))
    with pytest.raises(ConfigError, match=r"features\.deep\.layer: 3 is out of range; use 0\.\.2"):
        build(tiny_models["wav2vec2"][0], layer=3)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(BackendError, match=r"needs Hugging Face transformers: pip install 'nni-emotionnas\[hf\]'"):
        build(tiny_models["wav2vec2"][0])
