"""Audio loading: any file soundfile reads, any rate and channel count, out as 16 kHz mono float32."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from nni_emotionnas.errors import AudioError

SAMPLE_RATE = 16000
MIN_SECONDS = 0.1
SILENCE_PEAK = 1e-4


def load_audio(path: Path, sample_rate: int = SAMPLE_RATE, min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Loads, downmixes and resamples; unusable audio raises `AudioError` naming the file and why."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError) as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from exc
    if data.size == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: corrupt audio (non-finite samples)")
    mono = data.mean(axis=1)
    seconds = len(mono) / rate
    if seconds < min_seconds:
        raise AudioError(f"{path}: too short ({seconds:.3f} s < {min_seconds} s)")
    if np.max(np.abs(mono)) < SILENCE_PEAK:
        raise AudioError(f"{path}: silent audio (peak below {SILENCE_PEAK})")
    if rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)
