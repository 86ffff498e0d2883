"""The paper's spectrogram: fixed-length audio, Hamming STFT, average-pooled to a square image."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import librosa
import numpy as np

from nni_emotionnas.config.experiment import SpectrogramConfig
from nni_emotionnas.features.base import UtteranceExtractor


def adaptive_average_pool(matrix: np.ndarray, out_rows: int, out_cols: int) -> np.ndarray:
    """Average over bins [floor(i*n/out), ceil((i+1)*n/out)) along each axis, as torch's adaptive pooling."""

    def pool_axis(x: np.ndarray, out: int, axis: int) -> np.ndarray:
        n = x.shape[axis]
        starts = (np.arange(out) * n) // out
        ends = -((-(np.arange(1, out + 1)) * n) // out)
        cumsum = np.cumsum(np.moveaxis(x, axis, 0), axis=0, dtype=np.float64)
        cumsum = np.concatenate([np.zeros_like(cumsum[:1]), cumsum], axis=0)
        pooled = (cumsum[ends] - cumsum[starts]) / (ends - starts).reshape(-1, *([1] * (x.ndim - 1)))
        return np.moveaxis(pooled, 0, axis)

    return pool_axis(pool_axis(matrix, out_rows, 0), out_cols, 1)


class SpectrogramExtractor(UtteranceExtractor):
    """Frequency x time spectrogram pooled to `size`; CPU-only numpy, so it runs in worker processes."""

    name = "spectrogram"

    def __init__(self, config: SpectrogramConfig) -> None:
        self.settings = config
        rate = config.sample_rate
        self.n_samples = int(round(config.duration * rate))
        self.win_length = int(round(config.window_ms * rate / 1000))
        self.hop_length = self.win_length - int(round(config.overlap_ms * rate / 1000))  # >= 1: the config checks it
        self.mel_filters = (
            None
            if config.mel_bands is None
            else librosa.filters.mel(sr=rate, n_fft=self.win_length, n_mels=config.mel_bands).astype(np.float32)
        )

    def config(self) -> dict[str, Any]:
        return asdict(self.settings)

    def extract(self, audio: np.ndarray) -> np.ndarray:
        if self.settings.padding == "repeat":
            fixed = np.resize(audio, self.n_samples)  # cyclic: the utterance looped, or cut when longer
        else:
            fixed = librosa.util.fix_length(audio, size=self.n_samples)
        magnitude = np.abs(
            librosa.stft(
                fixed,
                n_fft=self.win_length,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.settings.scipy_window,
            )
        )
        if self.mel_filters is not None:
            magnitude = self.mel_filters @ magnitude
        if self.settings.scale == "log":
            magnitude = np.log(magnitude + self.settings.eps)
        elif self.settings.scale == "db":
            magnitude = librosa.amplitude_to_db(magnitude, ref=1.0, amin=self.settings.eps, top_db=None)
        rows, cols = self.settings.size
        return adaptive_average_pool(magnitude, rows, cols).astype(np.float32)

