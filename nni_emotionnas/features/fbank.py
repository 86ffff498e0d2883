"""Log-mel filterbanks with deltas: a deep-stream frame sequence that needs no pretrained weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import librosa
import numpy as np

from nni_emotionnas.features.base import UtteranceExtractor


@dataclass
class FbankConfig:
    """`n_mels` log-mel bands every `hop_ms` over `window_ms` Hann windows, plus `deltas` orders of
    time derivatives (0, 1 or 2), so the frame size is `n_mels * (deltas + 1)`."""

    sample_rate: int = 16000
    n_mels: int = 40
    window_ms: float = 25.0
    hop_ms: float = 10.0
    deltas: int = 2
    delta_width: int = 9
    fmin: float = 20.0
    fmax: float = 7600.0
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.deltas not in (0, 1, 2):
            raise ValueError(f"deltas must be 0, 1 or 2, got {self.deltas}")
        if self.n_mels < 1 or self.hop_ms <= 0 or self.window_ms < self.hop_ms:
            raise ValueError("need n_mels >= 1 and 0 < hop_ms <= window_ms")


class FbankExtractor(UtteranceExtractor):
    """Pure numpy/librosa, so the feature store runs it in worker processes (`parallel = True`)."""

    name = "fbank"

    def __init__(self, config: FbankConfig | None = None) -> None:
        self.settings = config or FbankConfig()

    @property
    def dim(self) -> int:
        return self.settings.n_mels * (self.settings.deltas + 1)

    def config(self) -> dict[str, Any]:
        return asdict(self.settings)

    def extract(self, audio: np.ndarray) -> np.ndarray:
        s = self.settings
        hop = int(round(s.sample_rate * s.hop_ms / 1000))
        win = int(round(s.sample_rate * s.window_ms / 1000))
        mel = librosa.feature.melspectrogram(
            y=np.asarray(audio, dtype=np.float32), sr=s.sample_rate, n_fft=win, hop_length=hop,
            win_length=win, window="hann", center=True, n_mels=s.n_mels, fmin=s.fmin,
            fmax=min(s.fmax, s.sample_rate / 2), power=2.0,
        )
        logmel = np.log(mel + s.eps)
        parts = [logmel]
        width = min(s.delta_width, logmel.shape[1] if logmel.shape[1] % 2 else logmel.shape[1] - 1)
        for order in range(1, s.deltas + 1):
            if width >= 3:
                parts.append(librosa.feature.delta(logmel, width=width, order=order, mode="interp"))
            else:  # too short for a delta window: no change over time
                parts.append(np.zeros_like(logmel))
        return np.concatenate(parts, axis=0).T.astype(np.float32)
