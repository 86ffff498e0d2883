"""The embedded default corpus: a deterministic synthetic emotional-speech corpus in the IEMOCAP layout.

Why: `emotionnas demo` must run with no data from the user, and writing the corpus exactly like IEMOCAP
(`SessionN/sentences/wav/<dialog>/<utt>.wav` + `SessionN/dialog/EmoEvaluation/<dialog>.txt`) exercises the
same reader and leave-one-session-out folds as the real corpus. Each session has one female and one male
speaker; every utterance is a pure function of (seed, session, speaker, emotion, index).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from nni_emotionnas.corpora import speech_synth
from nni_emotionnas.corpora.speech_synth import EMOTIONS
from nni_emotionnas.errors import CorpusError

GENERATOR_VERSION = 1  # bump when the synthesis changes: cached corpora are keyed by it
RELEASE_DIR = "IEMOCAP_full_release"
MARKER = "synthetic_corpus.json"  # written last: a cache folder without it is not a finished corpus
STALE_STAGING_SECONDS = 6 * 3600  # a staging folder this old belongs to a run that was killed
_GENDERS = ("F", "M")
_DIALOGS_PER_GENDER = 2  # dialogs Ses0nF_impro01, Ses0nF_impro02, Ses0nM_impro01, ...
_TIME_QUANTUM_HZ = 2000  # durations are whole multiples of 0.5 ms, exact with 4 decimals

# Evaluator wording and the (valence, activation, dominance) an evaluator tends to give, per label.
_CATEGORY = {"neu": "Neutral state", "ang": "Anger", "hap": "Happiness", "sad": "Sadness"}
_CONFUSION = {"neu": "Frustration", "ang": "Frustration", "hap": "Excited", "sad": "Neutral state"}
_VAD = {"neu": (3.0, 2.5, 2.7), "ang": (1.8, 4.0, 3.9), "hap": (4.0, 3.4, 3.1), "sad": (1.9, 2.0, 2.1)}


@dataclass(frozen=True)
class SyntheticCorpusConfig:
    """Size and seed of the generated corpus; the default (320 utterances, ~13 min) renders in seconds."""

    sessions: int = 5
    utterances_per_emotion: int = 8  # per speaker; two speakers per session, four emotions
    min_seconds: float = 1.5
    max_seconds: float = 3.5
    sample_rate: int = 16000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_seconds", "max_seconds"):  # 2 and 2.0 must give the same cache key
            object.__setattr__(self, name, float(getattr(self, name)))
        if not 1 <= self.sessions <= 9:
            raise ValueError(f"sessions: expected 1..9 (IEMOCAP session ids are one digit), got {self.sessions}")
        if self.utterances_per_emotion < 1:
            raise ValueError(f"utterances_per_emotion: expected >= 1, got {self.utterances_per_emotion}")
        if not 0.8 <= self.min_seconds <= self.max_seconds <= 30.0:
            raise ValueError(
                f"min_seconds/max_seconds: expected 0.8 <= min <= max <= 30, got {self.min_seconds}, {self.max_seconds}"
            )
        if self.sample_rate % _TIME_QUANTUM_HZ or not 8000 <= self.sample_rate <= 48000:
            raise ValueError(
                f"sample_rate: expected a multiple of {_TIME_QUANTUM_HZ} Hz in 8000..48000, got {self.sample_rate}"
            )

    def key(self) -> str:
        """Cache key: changes with any field or with the generator version."""
        text = json.dumps({"generator": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Turn:
    """One planned utterance: who says it, in which emotion, where in which dialog."""

    session: int
    gender: str
    emotion: str
    index: int  # k-th utterance of this speaker and emotion
    dialog: str
    uid: str
    start: float
    samples: int


def _rng(config: SyntheticCorpusConfig, *key: int) -> np.random.Generator:
    """Independent stream per purpose: any utterance can be rendered alone, in any order."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, *key]))


def _plan_session(config: SyntheticCorpusConfig, session: int) -> list[_Turn]:
    """Spreads the session's utterances over its dialogs in a shuffled order, with turn times."""
    rng = _rng(config, session, 0)
    items = list(itertools.product(range(len(_GENDERS)), range(len(EMOTIONS)), range(config.utterances_per_emotion)))
    order = rng.permutation(len(items))
    dialogs = [f"Ses{session:02d}{g}_impro{d:02d}" for g in _GENDERS for d in range(1, _DIALOGS_PER_GENDER + 1)]
    quantum = config.sample_rate // _TIME_QUANTUM_HZ
    clock = dict.fromkeys(dialogs, 0.0)
    counters: dict[tuple[str, str], int] = {}
    turns = []
    for position, item in enumerate(order):
        g, e, k = items[item]
        dialog = dialogs[position % len(dialogs)]
        gender = _GENDERS[g]
        seconds = rng.uniform(config.min_seconds, config.max_seconds)
        samples = int(round(seconds * _TIME_QUANTUM_HZ)) * quantum
        start = clock[dialog] + round(rng.uniform(0.2, 1.5) * _TIME_QUANTUM_HZ) / _TIME_QUANTUM_HZ
        clock[dialog] = start + samples / config.sample_rate
        idx = counters.get((dialog, gender), 0)
        counters[(dialog, gender)] = idx + 1
        uid = f"{dialog}_{gender}{idx:03d}"
        turns.append(_Turn(session, gender, EMOTIONS[e], k, dialog, uid, start, samples))
    return turns


def _render(config: SyntheticCorpusConfig, turn: _Turn) -> np.ndarray:
    """16-bit samples of one turn; the speaker's voice and session conditions come from their own streams."""
    g = _GENDERS.index(turn.gender)
    voice = speech_synth.make_voice(_rng(config, turn.session, 1, g), turn.gender)
    conditions = speech_synth.make_session(_rng(config, turn.session, 2))
    rng = _rng(config, turn.session, 3, g, EMOTIONS.index(turn.emotion), turn.index)
    style = speech_synth.expressed_style(rng, turn.emotion, voice)
    audio = speech_synth.synthesize(rng, turn.samples, config.sample_rate, style, voice, conditions)
    return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def _wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV encoded in memory: soundfile's file close fsyncs, which dominates small writes."""
    buffer = io.BytesIO()
    sf.write(buffer, pcm, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _evaluation_block(rng: np.random.Generator, turn: _Turn, sample_rate: int) -> str:
    """One utterance in EmoEvaluation syntax: summary line, categorical and dimensional evaluator lines."""
    end = turn.start + turn.samples / sample_rate
    categories = [_CATEGORY[turn.emotion]] * 2 + [
        _CONFUSION[turn.emotion] if rng.random() < 0.3 else _CATEGORY[turn.emotion]
    ]
    scores = np.clip(np.round(np.array(_VAD[turn.emotion]) + rng.normal(0.0, 0.6, (2, 3))), 1, 5).astype(int)
    vad = ", ".join(f"{v:.4f}" for v in scores.mean(axis=0))
    lines = [f"[{turn.start:.4f} - {end:.4f}]\t{turn.uid}\t{turn.emotion}\t[{vad}]"]
    lines += [f"C-E{i + 1}:\t{category};\t()" for i, category in enumerate(categories)]
    lines += [f"A-E{i + 1}:\tval {v}; act {a}; dom  {d};\t()" for i, (v, a, d) in enumerate(scores)]
    return "\n".join(lines) + "\n"


def generate(config: SyntheticCorpusConfig, root: Path) -> Path:
    """Writes the corpus under `root/IEMOCAP_full_release` and returns that folder; never overwrites."""
    release = Path(root) / RELEASE_DIR
    if release.exists() and any(release.iterdir()):
        raise CorpusError(f"{release}: already exists and is not empty; refusing to overwrite it")
    for session in range(1, config.sessions + 1):
        session_dir = release / f"Session{session}"
        label_dir = session_dir / "dialog" / "EmoEvaluation"
        label_dir.mkdir(parents=True, exist_ok=True)
        turns = _plan_session(config, session)
        label_rng = _rng(config, session, 4)
        for dialog in sorted({t.dialog for t in turns}):
            in_dialog = sorted((t for t in turns if t.dialog == dialog), key=lambda t: t.start)
            wav_dir = session_dir / "sentences" / "wav" / dialog
            wav_dir.mkdir(parents=True, exist_ok=True)
            for turn in in_dialog:
                (wav_dir / f"{turn.uid}.wav").write_bytes(_wav_bytes(_render(config, turn), config.sample_rate))
            blocks = [_evaluation_block(label_rng, t, config.sample_rate) for t in in_dialog]
            header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
            (label_dir / f"{dialog}.txt").write_text(header + "\n".join(blocks) + "\n")
    return release


def _remove_stale_staging(parent: Path, key: str) -> None:
    """Staging folders of killed runs would pile up; only ones far older than any generation are removed."""
    for staging in parent.glob(f".{key}-*"):
        try:
            stale = time.time() - staging.stat().st_mtime > STALE_STAGING_SECONDS
        except FileNotFoundError:  # a concurrent run just published or removed it
            continue
        if stale:
            shutil.rmtree(staging, ignore_errors=True)


def cached_corpus(config: SyntheticCorpusConfig, cache_root: Path) -> Path:
    """The corpus under `cache_root/synthetic/<key>/`, generated once; returns its release folder.

    Generation happens in a temporary folder beside the final one and is published with one `os.replace`,
    so a concurrent or interrupted run never exposes a half-written corpus; a concurrent winner is reused.
    """
    parent = Path(cache_root) / "synthetic"
    final = parent / config.key()
    if (final / MARKER).is_file():
        return final / RELEASE_DIR
    if final.exists():
        raise CorpusError(f"{final}: exists but has no {MARKER}; not a finished synthetic corpus, remove it")
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(parent, config.key())
    staging = Path(tempfile.mkdtemp(prefix=f".{config.key()}-", dir=parent))
    try:
        generate(config, staging)
        manifest = {"generator": GENERATOR_VERSION, "config": asdict(config)}
        (staging / MARKER).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        try:
            os.replace(staging, final)
        except OSError:
            if not (final / MARKER).is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / RELEASE_DIR
