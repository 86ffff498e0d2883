"""Audio loading errors and conversions; the spectrogram against a direct librosa computation."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_tone

from nni_emotionnas.config.experiment import SpectrogramConfig
from nni_emotionnas.errors import AudioError
from nni_emotionnas.features.audio import load_audio
from nni_emotionnas.features.spectrogram import SpectrogramExtractor, adaptive_average_pool


def test_stereo_44k_becomes_16k_mono(tmp_path):
    path = write_tone(tmp_path / "stereo.wav", seconds=1.0, rate=44100, freq=440.0, channels=2)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) == 16000
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) == pytest.approx(440, abs=2)  # 1 Hz bins over one second


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "audio file not found"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "cannot decode audio"),
        (lambda p: sf.write(str(p), np.zeros(0, dtype=np.float32), 16000), "empty audio|cannot decode"),
        (lambda p: sf.write(str(p), np.zeros(16000, dtype=np.float32), 16000), "silent audio"),
        (lambda p: sf.write(str(p), 0.5 * np.ones(80, dtype=np.float32), 16000), "too short"),
    ],
    ids=["missing", "corrupt", "empty", "silent", "short"],
)
def test_bad_audio_is_named(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=f"bad.wav: ({message})"):
        load_audio(path)


def test_spectrogram_matches_direct_librosa(tmp_path):
    audio = load_audio(write_tone(tmp_path / "t.wav", seconds=3.0, freq=180.0))
    extractor = SpectrogramExtractor(SpectrogramConfig())
    features = extractor.extract(audio)
    assert features.shape == (140, 140) and features.dtype == np.float32
    # the paper's settings at 16 kHz: 8 s, 400-sample Hamming window, 224-sample overlap
    padded = np.concatenate([audio, np.zeros(8 * 16000 - len(audio), dtype=np.float32)])
    stft = librosa.stft(padded, n_fft=400, hop_length=176, win_length=400, window="hamming")
    reference = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(np.log(np.abs(stft) + 1e-5))[None, None], (140, 140)
    )[0, 0].numpy()
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-4)


def test_spectrogram_truncates_long_audio_and_scales(tmp_path):
    long_audio = load_audio(write_tone(tmp_path / "long.wav", seconds=10.0))
    extractor = SpectrogramExtractor(SpectrogramConfig())
    np.testing.assert_allclose(extractor.extract(long_audio), extractor.extract(long_audio[: 8 * 16000]))
    linear = SpectrogramExtractor(SpectrogramConfig(scale="magnitude", size=[64, 32])).extract(long_audio)
    assert linear.shape == (64, 32) and linear.min() >= 0


def test_mel_spectrogram_sums_magnitudes_into_mel_bands(tmp_path):
    audio = load_audio(write_tone(tmp_path / "t.wav", seconds=3.0, freq=300.0))
    features = SpectrogramExtractor(SpectrogramConfig(duration=3.0, size=[40, 50], mel_bands=40)).extract(audio)
    stft = np.abs(librosa.stft(audio[: 3 * 16000], n_fft=400, hop_length=176, win_length=400, window="hamming"))
    mel = librosa.feature.melspectrogram(S=stft, sr=16000, n_fft=400, n_mels=40, power=1.0)
    reference = adaptive_average_pool(np.log(mel + 1e-5), 40, 50)
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-4)
    assert np.argmax(features.mean(axis=1)) < 20  # a 300 Hz tone lands in the low mel bands
    with pytest.raises(ValueError, match="mel_bands must be between 1 and the window's 201 frequency bins"):
        SpectrogramConfig(mel_bands=500)


def test_repeat_padding_loops_a_short_utterance(tmp_path):
    audio = load_audio(write_tone(tmp_path / "t.wav", seconds=1.25, freq=250.0))
    config = {"duration": 3.0, "size": [40, 48]}
    looped = SpectrogramExtractor(SpectrogramConfig(**config, padding="repeat")).extract(audio)
    stft = np.abs(librosa.stft(np.tile(audio, 3)[: 3 * 16000], n_fft=400, hop_length=176, win_length=400,
                               window="hamming"))
    np.testing.assert_allclose(looped, adaptive_average_pool(np.log(stft + 1e-5), 40, 48), rtol=1e-4, atol=1e-4)
    silent_tail = SpectrogramExtractor(SpectrogramConfig(**config)).extract(audio)
    assert silent_tail[:, -1].max() == pytest.approx(np.log(1e-5))  # zeros: the last columns are silence
    assert looped[:, -1].max() > np.log(1e-5) + 5  # repeat: speech to the end
    long_audio = load_audio(write_tone(tmp_path / "long.wav", seconds=4.0, freq=250.0))
    zeros, repeat = (SpectrogramExtractor(SpectrogramConfig(**config, padding=p)) for p in ("zeros", "repeat"))
    # longer than `duration`: both cut it
    np.testing.assert_array_equal(zeros.extract(long_audio), repeat.extract(long_audio))


def test_unknown_padding_is_a_config_error_naming_the_key(tmp_path):
    from nni_emotionnas.config.experiment import experiment_from_dict
    from nni_emotionnas.errors import ConfigError

    with pytest.raises(ConfigError, match="features.spectrogram.padding: 'mirror' is not one of 'zeros', 'repeat'"):
        experiment_from_dict(
            {"corpus": {"reader": "synthetic"}, "features": {"spectrogram": {"padding": "mirror"}}}, tmp_path
        )


def test_adaptive_pool_matches_torch():
    matrix = np.random.default_rng(0).standard_normal((201, 728))
    ours = adaptive_average_pool(matrix, 140, 140)
    theirs = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(matrix)[None, None], (140, 140))[0, 0]
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-10)
