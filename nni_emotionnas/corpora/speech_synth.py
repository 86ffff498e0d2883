"""Source-filter synthesis of emotional speech-like utterances (numpy/scipy only, vectorised).

Why it exists: the demo must run without user data, so the project renders its own corpus. An utterance is
a glottal pulse train that follows an F0 contour (declination, accents, final movement, jitter, shimmer),
plus aspiration noise, shaped by a syllable envelope, filtered by speaker-specific vowel formants and a
spectral tilt, plus consonant noise and background noise. Emotions change the prosody and voice quality the
way acted speech does; speakers change the voice. Each expression has a random intensity, so classes
overlap: learnable, not trivial.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import numpy as np
from scipy import signal

EMOTIONS = ("neu", "ang", "hap", "sad")

# Formants F1-F5 (Hz) of five vowels for a reference (adult male) vocal tract.
_VOWELS = np.array(
    [
        [730.0, 1090.0, 2440.0, 3400.0, 4200.0],  # a
        [530.0, 1840.0, 2480.0, 3500.0, 4300.0],  # e
        [270.0, 2290.0, 3010.0, 3600.0, 4400.0],  # i
        [570.0, 840.0, 2410.0, 3300.0, 4200.0],  # o
        [300.0, 870.0, 2240.0, 3300.0, 4200.0],  # u
    ]
)
_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0, 260.0])

_WIN = 512  # analysis window of the time-varying filter (32 ms)
_HOP = 256  # 16 ms: formant and tilt trajectories are updated at this rate
_FFT = 1024  # room for the filter's impulse response on both sides of the window
_REFERENCE_DBFS = -32.0  # active-speech RMS of a neutral utterance by a speaker at 0 dB


@dataclass(frozen=True)
class Voice:
    """One speaker: what stays the same whatever the emotion."""

    gender: str
    f0_hz: float  # habitual median F0
    range_scale: float  # how wide this speaker's intonation is
    vtl_scale: float  # formant scaling (shorter vocal tract = higher formants)
    bandwidth_scale: float  # formant damping: part of the timbre
    tilt_db: float  # spectral tilt offset, dB per octave (positive = brighter)
    open_quotient: float  # habitual glottal open quotient (pressed < 0.5 < breathy)
    breathiness: float  # habitual aspiration noise
    rate_scale: float  # habitual speaking rate factor
    level_db: float  # habitual loudness and recording gain
    expressiveness: float  # how strongly this speaker acts emotions


@dataclass(frozen=True)
class Style:
    """How an emotion is expressed; utterances move from neutral towards it by a random intensity."""

    f0_shift_st: float  # F0 level relative to the speaker's habit, semitones
    f0_range_st: float  # size of syllable accents, semitones
    slope_st_s: float  # declination, semitones per second
    final_st: float  # final rise (+) or fall (-) over the last ~0.4 s
    smoothing_s: float  # contour time constant: small = abrupt pitch moves
    rate_syl_s: float  # syllables per second
    level_db: float  # loudness
    tilt_db: float  # spectral tilt change, dB per octave (positive = pressed, brighter)
    open_quotient: float
    breathiness: float
    jitter: float  # relative period perturbation per cycle
    shimmer: float  # relative amplitude perturbation per cycle
    f1_scale: float  # jaw opening raises F1
    formant_scale: float  # smiling shortens the vocal tract


STYLES: dict[str, Style] = {
    "neu": Style(0.0, 2.0, -1.2, -1.0, 0.060, 4.2, 0.0, 0.0, 0.60, 0.08, 0.008, 0.04, 1.00, 1.00),
    "ang": Style(3.5, 5.0, -2.0, -3.0, 0.020, 4.7, 8.0, 3.0, 0.42, 0.03, 0.020, 0.08, 1.08, 1.00),
    "hap": Style(3.5, 5.0, -0.3, 3.0, 0.070, 4.9, 5.5, 0.8, 0.56, 0.09, 0.012, 0.05, 1.05, 1.04),
    "sad": Style(-2.0, 1.0, -2.0, -2.0, 0.110, 3.2, -6.0, -3.0, 0.75, 0.22, 0.025, 0.08, 0.96, 0.99),
}


@dataclass(frozen=True)
class Session:
    """Recording conditions shared by a session's speakers."""

    gain_db: float
    tilt_db: float  # microphone colouration
    noise_dbfs: float  # background noise level


def make_voice(rng: np.random.Generator, gender: str) -> Voice:
    """Draws a speaker; between-speaker spread is comparable to some emotion effects on purpose."""
    female = gender == "F"
    return Voice(
        gender=gender,
        f0_hz=(205.0 if female else 115.0) * float(np.exp(rng.normal(0.0, 0.12))),
        range_scale=float(np.exp(rng.normal(0.0, 0.2))),
        vtl_scale=(1.17 if female else 1.0) * float(np.exp(rng.normal(0.0, 0.04))),
        bandwidth_scale=float(np.exp(rng.normal(0.0, 0.2))),
        tilt_db=float(rng.normal(0.0, 1.5)),
        open_quotient=float(np.clip(rng.normal(0.0, 0.06), -0.12, 0.12)),
        breathiness=float(np.clip(rng.normal(0.0, 0.04), -0.05, 0.1)),
        rate_scale=float(np.exp(rng.normal(0.0, 0.1))),
        level_db=float(rng.normal(0.0, 2.5)),
        expressiveness=float(rng.uniform(0.7, 1.2)),
    )


def make_session(rng: np.random.Generator) -> Session:
    """Draws recording conditions: level, colouration and noise shift every speaker of a session alike."""
    return Session(
        gain_db=float(rng.normal(0.0, 2.0)),
        tilt_db=float(rng.normal(0.0, 1.0)),
        noise_dbfs=float(rng.uniform(-66.0, -54.0)),
    )


def expressed_style(rng: np.random.Generator, emotion: str, voice: Voice) -> Style:
    """The style one utterance realises: neutral + random intensity x (emotion - neutral) + noise."""
    if emotion not in STYLES:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {', '.join(EMOTIONS)}")
    neutral, target = STYLES["neu"], STYLES[emotion]
    intensity = float(np.clip(rng.normal(0.85, 0.3), 0.15, 1.5)) * voice.expressiveness
    mixed = {
        name: getattr(neutral, name) + intensity * (getattr(target, name) - getattr(neutral, name))
        for name in Style.__dataclass_fields__
    }
    return replace(
        Style(**mixed),
        f0_shift_st=mixed["f0_shift_st"] + rng.normal(0.0, 1.2),
        f0_range_st=mixed["f0_range_st"] * float(np.exp(rng.normal(0.0, 0.25))),
        slope_st_s=mixed["slope_st_s"] + rng.normal(0.0, 0.6),
        final_st=mixed["final_st"] + rng.normal(0.0, 1.2),
        rate_syl_s=mixed["rate_syl_s"] * float(np.exp(rng.normal(0.0, 0.1))),
        level_db=mixed["level_db"] + rng.normal(0.0, 2.5),
        tilt_db=mixed["tilt_db"] + rng.normal(0.0, 1.2),
    )


@dataclass(frozen=True)
class _Timeline:
    """Syllable boundaries (samples): consonant onset [start, vowel), vowel nucleus [vowel, end)."""

    start: np.ndarray
    vowel: np.ndarray
    end: np.ndarray
    accent: np.ndarray  # standard-normal accent strength per syllable
    vowel_id: np.ndarray
    fricative: np.ndarray  # consonant kind: fricative noise, else stop (closure + burst)


def _timeline(rng: np.random.Generator, n: int, sr: int, style: Style, voice: Voice) -> _Timeline:
    lead, tail = rng.uniform(0.06, 0.18) * sr, rng.uniform(0.08, 0.22) * sr
    speech = max(n - lead - tail, 0.3 * sr)
    count = max(2, int(round(speech / sr * style.rate_syl_s * voice.rate_scale)))
    weights = rng.gamma(6.0, 1.0, count)
    edges = lead + np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * speech
    starts, ends = edges[:-1], edges[1:]
    if count >= 6 and rng.random() < 0.5:  # one phrase break: a short pause inside the utterance
        shift = np.where(np.arange(count) > rng.integers(2, count - 2), rng.uniform(0.12, 0.3) * sr, 0.0)
        scale = speech / (ends[-1] + shift[-1] - lead)
        starts, ends = lead + (starts + shift - lead) * scale, lead + (ends + shift - lead) * scale
    onset = rng.uniform(0.2, 0.4, len(starts)) * (ends - starts)
    return _Timeline(
        start=starts.astype(int),
        vowel=(starts + onset).astype(int),
        end=ends.astype(int),
        accent=rng.standard_normal(len(starts)),
        vowel_id=rng.integers(0, len(_VOWELS), len(starts)),
        fricative=rng.random(len(starts)) < 0.5,
    )


def _segment_positions(lo: np.ndarray, hi: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At times `t`: index of the segment [lo, hi) each falls in (-1 outside), relative position 0..1 in it."""
    idx = np.searchsorted(lo, t, side="right") - 1
    safe = np.clip(idx, 0, None)
    inside = (idx >= 0) & (t < hi[safe])
    pos = np.where(inside, (t - lo[safe]) / np.maximum(hi[safe] - lo[safe], 1), 0.0)
    return np.where(inside, idx, -1), pos


def _smooth(x: np.ndarray, tau_steps: float) -> np.ndarray:
    """Zero-phase one-pole smoothing: the time constant sets how abrupt pitch movements are."""
    alpha = float(np.exp(-1.0 / max(tau_steps, 1.0)))
    return signal.filtfilt([1.0 - alpha], [1.0, -alpha], x, padlen=min(len(x) - 1, 3 * int(tau_steps) + 1))


def _f0_contour(rng: np.random.Generator, tl: _Timeline, t: np.ndarray, sr: int, style: Style, voice: Voice):
    """F0 in Hz at control times `t`: speaker level + emotion shift + accents, declination, final move."""
    step = float(t[1] - t[0])
    seg, _ = _segment_positions(tl.start, tl.end, t)
    accents = tl.accent * 0.5 * style.f0_range_st * voice.range_scale
    # pauses keep the previous syllable's target so smoothing does not dip towards zero
    filled = np.maximum.accumulate(np.where(seg >= 0, np.arange(len(t)), 0))
    targets = np.where(seg >= 0, accents[np.clip(seg, 0, None)], 0.0)[filled]
    st = _smooth(targets, style.smoothing_s * sr / step)
    speech_start, speech_end = tl.start[0], tl.end[-1]
    st += style.slope_st_s * (np.clip(t, speech_start, speech_end) - speech_start) / sr
    ramp = np.clip((t - speech_end) / (0.4 * sr) + 1.0, 0.0, 1.0)
    st += style.final_st * ramp * ramp * (3.0 - 2.0 * ramp)
    drift = _smooth(rng.standard_normal(len(t)), 0.05 * sr / step)
    st += 0.3 * drift / max(float(np.std(drift)), 1e-9)
    return voice.f0_hz * 2.0 ** ((st + style.f0_shift_st) / 12.0)


def _jittered(rng: np.random.Generator, f0: np.ndarray, step: int, sr: int, jitter: float) -> np.ndarray:
    """Scales F0 by an independent random factor per glottal cycle (cycles counted on the control grid)."""
    cycles = np.floor(np.cumsum(f0) * step / sr).astype(int)
    return f0 * (1.0 + jitter * rng.standard_normal(cycles[-1] + 1))[cycles]


def _glottal_source(rng: np.random.Generator, f0: np.ndarray, sr: int, style: Style, voice: Voice):
    """Flow derivative of a polynomial Rosenberg pulse train with shimmer, plus pitch-synchronous noise.

    A small open quotient with a fast closure (pressed voice) puts more energy in high harmonics.
    """
    phase = np.cumsum(f0) / sr
    cycle = phase.astype(int)
    frac = phase - cycle
    oq = float(np.clip(style.open_quotient + voice.open_quotient, 0.25, 0.9))
    rise, fall = 0.7 * oq, 0.3 * oq
    opening = np.minimum(frac / rise, 1.0)
    closing = np.clip((frac - rise) / fall, 0.0, 1.0)
    flow = opening * opening * (3.0 - 2.0 * opening) * (1.0 - closing * closing) * (frac < oq)
    flow *= (1.0 + style.shimmer * rng.standard_normal(cycle[-1] + 1))[cycle]
    derivative = np.diff(flow, prepend=0.0) * (sr / 200.0)
    breath = float(np.clip(style.breathiness + voice.breathiness, 0.0, 0.5))
    aspiration = rng.standard_normal(len(f0), dtype=np.float32) * (0.3 + flow) * (breath * 0.4)
    return derivative + aspiration


def _envelopes(tl: _Timeline, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vowel (voiced) amplitude envelope and consonant noise envelope at control times `t`."""
    seg, pos = _segment_positions(tl.vowel, tl.end, t)
    gain = 1.0 + 0.25 * np.clip(tl.accent, -1.5, 1.5)
    voiced = np.where(seg >= 0, np.sin(np.pi * pos) ** 0.6 * gain[np.clip(seg, 0, None)], 0.0)
    cseg, cpos = _segment_positions(tl.start, tl.vowel, t)
    fric = tl.fricative[np.clip(cseg, 0, None)]
    consonant = np.where(cseg < 0, 0.0, np.where(fric, 0.35 * np.sin(np.pi * cpos), np.where(cpos > 0.85, 0.25, 0.0)))
    return voiced, consonant


def _formant_tracks(tl: _Timeline, frame_times: np.ndarray, style: Style, voice: Voice) -> np.ndarray:
    """Formant frequencies (frames x 5): vowel targets at nucleus centres, interpolated (coarticulation)."""
    centres = 0.5 * (tl.vowel + tl.end)
    targets = _VOWELS[tl.vowel_id] * voice.vtl_scale * style.formant_scale
    targets[:, 0] *= style.f1_scale
    return np.stack([np.interp(frame_times, centres, targets[:, k]) for k in range(targets.shape[1])], axis=1)


def _vocal_tract_gains(formants: np.ndarray, bandwidths: np.ndarray, tilt_db: float, sr: int) -> np.ndarray:
    """|H| per frame and FFT bin: cascade of unit-DC-gain two-pole resonators times a spectral tilt.

    With pole p = r e^{j theta}: |1 - p e^{-jw}|^2 |1 - p* e^{-jw}|^2 = (b - 2r cos t cos w)^2 - (2r sin t sin w)^2,
    b = 1 + r^2; float32 keeps this (frames x formants x bins) product cheap.
    """
    freqs = np.fft.rfftfreq(_FFT, 1.0 / sr)
    omega = (2.0 * np.pi * freqs / sr).astype(np.float32)
    radius = np.exp(-np.pi * bandwidths / sr).astype(np.float32)
    theta = (2.0 * np.pi * formants / sr).astype(np.float32)
    base = 1.0 + radius * radius
    at_dc = base - 2.0 * radius * np.cos(theta)
    even = base[:, None] - (2.0 * radius * np.cos(theta))[:, :, None] * np.cos(omega)
    odd = (2.0 * radius * np.sin(theta))[:, :, None] * np.sin(omega)
    denominator = np.prod(even * even - odd * odd, axis=1)
    numerator = np.prod(at_dc * at_dc, axis=1)[:, None]
    tilt = 10.0 ** (tilt_db * np.log2(np.maximum(freqs, 60.0) / 500.0) / 20.0)
    return np.sqrt(numerator / denominator) * tilt.astype(np.float32)


def _time_varying_filter(x: np.ndarray, gains_for: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Short-time filtering by overlap-add: each 32 ms Hann frame gets its own zero-phase response.

    `gains_for(centres)` gives |H| (frames x FFT bins) for frames centred on those sample positions. Frames
    sit in the middle of a zero-padded FFT buffer so the response's tails do not wrap around (float32: speed).
    """
    n = len(x)
    padded = np.concatenate([np.zeros(_WIN, np.float32), x.astype(np.float32), np.zeros(_WIN, np.float32)])
    window = signal.get_window("hann", _WIN).astype(np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded, _WIN)[::_HOP]
    count = len(frames)
    offset = (_FFT - _WIN) // 2
    buffers = np.zeros((count, _FFT), np.float32)
    buffers[:, offset : offset + _WIN] = frames * window
    centres = np.arange(count) * _HOP + _WIN // 2 - _WIN  # frame k starts at x[k * hop - win]
    out_frames = np.fft.irfft(np.fft.rfft(buffers, axis=1) * gains_for(centres), n=_FFT, axis=1)
    blocks = _FFT // _HOP
    out = np.zeros((count + blocks - 1, _HOP), np.float32)
    for b in range(blocks):
        out[b : b + count] += out_frames[:, b * _HOP : (b + 1) * _HOP]
    out = out.reshape(-1) * (2.0 * _HOP / _WIN)  # periodic Hann windows at hop N/2^k sum to N/(2 hop)
    start = _WIN + offset  # out[i] holds padded[i - offset]; x[0] is padded[win]
    return out[start : start + n].astype(np.float64)


@lru_cache(maxsize=4)
def _fricative_filter(sr: int) -> np.ndarray:
    """Band-pass that turns white noise into a generic fricative (energy at 2.5-7.5 kHz)."""
    return signal.butter(2, [2500.0, min(7500.0, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")


def _db(x: float) -> float:
    return 10.0 ** (x / 20.0)


def synthesize(rng: np.random.Generator, n: int, sr: int, style: Style, voice: Voice, session: Session) -> np.ndarray:
    """Renders one utterance of `n` samples as float64 in [-1, 1].

    Prosody and envelopes are computed on a 1 ms control grid and interpolated: per-sample work stays small.
    """
    tl = _timeline(rng, n, sr, style, voice)
    step = max(sr // 1000, 1)
    control = np.arange(0, n + step, step)
    samples = np.arange(n)
    f0 = _jittered(rng, _f0_contour(rng, tl, control, sr, style, voice), step, sr, style.jitter)
    voiced_env, consonant_env = (np.interp(samples, control, e) for e in _envelopes(tl, control))
    source = _glottal_source(rng, np.interp(samples, control, f0), sr, style, voice) * voiced_env
    bandwidths = _BANDWIDTHS * voice.bandwidth_scale
    tilt = style.tilt_db + voice.tilt_db + session.tilt_db

    def gains(centres: np.ndarray) -> np.ndarray:
        return _vocal_tract_gains(_formant_tracks(tl, centres, style, voice), bandwidths, tilt, sr)

    speech = _time_varying_filter(source, gains)
    active = voiced_env > 0.3
    speech /= max(float(np.sqrt(np.mean(speech[active] ** 2))) if active.any() else 0.0, 1e-9)
    white, hiss = rng.standard_normal((2, n), dtype=np.float32)
    noise = signal.sosfilt(_fricative_filter(sr), hiss) * consonant_env
    speech = speech + noise * (0.5 * _db(0.5 * style.tilt_db))
    speech *= _db(_REFERENCE_DBFS + style.level_db + voice.level_db + session.gain_db)
    background = signal.lfilter([0.25], [1.0, -0.9], white) + white
    out = speech + background * _db(session.noise_dbfs)
    peak = float(np.max(np.abs(out)))
    return out * (0.97 / peak) if peak > 0.97 else out
