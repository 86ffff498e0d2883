"""The synthetic default corpus: deterministic, IEMOCAP-shaped, cached atomically, learnable but not trivial."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy import signal as scipy_signal
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nni_emotionnas.config.parse import parse
from nni_emotionnas.corpora import speech_synth, synthetic
from nni_emotionnas.corpora.iemocap import read_iemocap
from nni_emotionnas.corpora.synthetic import SyntheticCorpusConfig, cached_corpus, generate
from nni_emotionnas.errors import ConfigError, CorpusError

SMALL = SyntheticCorpusConfig(sessions=2, utterances_per_emotion=1, min_seconds=1.0, max_seconds=1.6)
EMOTIONS = ("neu", "ang", "hap", "sad")
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
SUMMARY = re.compile(
    r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(Ses0(\d)([FM])_impro\d\d)_([FM])(\d{3})\t(\w+)\t"
    r"\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$"
)
CATEGORICAL = re.compile(r"^C-E\d:\t[A-Z][a-z]+( state)?;\t\(\)$")
DIMENSIONAL = re.compile(r"^A-E\d:\tval [1-5]; act [1-5]; dom  [1-5];\t\(\)$")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def parse_label_files(release: Path) -> list[dict]:
    """Our own strict reading of the EmoEvaluation syntax (independent of the product's reader)."""
    records = []
    for label_file in sorted(release.glob("Session*/dialog/EmoEvaluation/*.txt")):
        text = label_file.read_text()
        assert text.startswith(HEADER + "\n\n"), label_file
        for block in text[len(HEADER) + 2 :].strip("\n").split("\n\n"):
            summary, *evaluators = block.split("\n")
            match = SUMMARY.match(summary)
            assert match, f"{label_file}: bad summary line {summary!r}"
            assert [line for line in evaluators if not (CATEGORICAL.match(line) or DIMENSIONAL.match(line))] == []
            start, end, dialog, session, _, gender, _, label, *vad = match.groups()
            records.append(
                dict(
                    file=label_file,
                    start=float(start),
                    end=float(end),
                    dialog=dialog,
                    uid=summary.split("\t")[1],
                    session=int(session),
                    gender=gender,
                    label=label,
                    vad=tuple(map(float, vad)),
                )
            )
    return records


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path: Path) -> None:
    first = tree_bytes(generate(SMALL, tmp_path / "a"))
    again = tree_bytes(generate(SMALL, tmp_path / "b"))
    assert len(first) == 2 * 4 + 2 * 2 * 4 and first == again
    fewer_sessions = tree_bytes(generate(replace(SMALL, sessions=1), tmp_path / "d"))
    assert fewer_sessions == {k: v for k, v in first.items() if k.startswith("Session1/")}
    generate(replace(SMALL, seed=1), tmp_path / "c")
    old_audio = {sf.read(str(p))[0].tobytes() for p in (tmp_path / "a").rglob("*.wav")}
    new_audio = {sf.read(str(p))[0].tobytes() for p in (tmp_path / "c").rglob("*.wav")}
    assert not old_audio & new_audio


def test_time_varying_filter_is_exact_for_a_constant_response() -> None:
    """Overlap-add bookkeeping: a flat response returns the input, a fixed resonance equals lfilter's."""
    x = np.random.default_rng(0).standard_normal(9000)
    flat = speech_synth._time_varying_filter(x, lambda c: np.ones((len(c), speech_synth._FFT // 2 + 1)))
    np.testing.assert_allclose(flat, x, atol=1e-5)
    gains = speech_synth._vocal_tract_gains(np.array([[700.0]]), np.array([80.0]), 0.0, 16000)
    resonated = speech_synth._time_varying_filter(x, lambda c: np.repeat(gains**2, len(c), axis=0))
    r, theta = np.exp(-np.pi * 80.0 / 16000), 2 * np.pi * 700.0 / 16000
    a = [1.0, -2 * r * np.cos(theta), r * r]
    reference = scipy_signal.filtfilt([sum(a)], a, x)  # |H|^2 at unit DC gain, zero phase
    middle = slice(1000, 8000)
    assert np.corrcoef(resonated[middle], reference[middle])[0, 1] > 0.999
    assert np.std(resonated[middle]) == pytest.approx(np.std(reference[middle]), rel=0.01)


def test_layout_follows_emoevaluation_lines(tmp_path: Path) -> None:
    config = SyntheticCorpusConfig(sessions=2, utterances_per_emotion=2, min_seconds=1.0, max_seconds=2.0)
    release = generate(config, tmp_path)
    records = parse_label_files(release)
    assert len(records) == 2 * 2 * 4 * 2
    assert Counter((r["session"], r["gender"], r["label"]) for r in records) == {
        (s, g, e): 2 for s in (1, 2) for g in "FM" for e in EMOTIONS
    }
    expected = {}
    for r in records:
        assert r["file"].name == f"{r['dialog']}.txt" and r["file"].parents[2].name == f"Session{r['session']}"
        wav = release / f"Session{r['session']}" / "sentences" / "wav" / r["dialog"] / f"{r['uid']}.wav"
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames / info.samplerate == pytest.approx(r["end"] - r["start"], abs=1e-6)
        assert 1.0 <= info.frames / info.samplerate <= 2.0
        expected[wav] = r
    assert set(release.rglob("*.wav")) == set(expected)  # every wav is labelled, every label has its wav
    for dialog in {r["dialog"] for r in records}:
        turns = sorted((r for r in records if r["dialog"] == dialog), key=lambda r: r["start"])
        assert all(a["end"] < b["start"] for a, b in zip(turns, turns[1:])), f"{dialog}: overlapping turns"
        for gender in "FM":  # utterance numbers count each speaker's turns in time order
            numbers = [r["uid"][-3:] for r in turns if r["gender"] == gender]
            assert numbers == [f"{i:03d}" for i in range(len(numbers))]
    mean_vad = {e: np.mean([r["vad"] for r in records if r["label"] == e], axis=0) for e in EMOTIONS}
    assert mean_vad["hap"][0] > mean_vad["neu"][0] > mean_vad["sad"][0]  # valence
    assert mean_vad["ang"][1] > mean_vad["neu"][1] > mean_vad["sad"][1]  # activation


def test_product_reader_reads_the_corpus(tmp_path: Path) -> None:
    release = generate(SMALL, tmp_path)
    utterances = read_iemocap(tmp_path, subset="improvised")
    assert len(utterances) == 16 and read_iemocap(release, subset="all") == utterances
    assert {u.speaker for u in utterances} == {"Ses01F", "Ses01M", "Ses02F", "Ses02M"}
    assert {u.session for u in utterances} == {"Ses01", "Ses02"}
    assert Counter(u.label for u in utterances) == dict.fromkeys(EMOTIONS, 4)
    for u in utterances:
        assert u.duration == pytest.approx(sf.info(str(u.path)).duration, abs=1e-6)
        assert u.speaker == u.session + u.gender


def test_cache_reuses_a_finished_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_generate = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda c, root: calls.append(c) or real_generate(c, root))
    release = cached_corpus(SMALL, tmp_path)
    assert release == tmp_path / "synthetic" / SMALL.key() / "IEMOCAP_full_release"
    marker = release.parent / synthetic.MARKER
    before = (marker.stat().st_ino, marker.stat().st_mtime_ns)
    assert cached_corpus(SMALL, tmp_path) == release and len(calls) == 1
    assert (marker.stat().st_ino, marker.stat().st_mtime_ns) == before
    assert len(read_iemocap(release)) == 16
    other = cached_corpus(replace(SMALL, seed=7), tmp_path)
    assert other != release and len(calls) == 2
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == sorted(
        [release.parent.name, other.parent.name]
    )


def test_interrupted_generation_leaves_no_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = []
    real_render = synthetic._render

    def render_then_interrupt(config, turn):
        rendered.append(turn.uid)
        if len(rendered) == 5:
            raise KeyboardInterrupt
        return real_render(config, turn)

    monkeypatch.setattr(synthetic, "_render", render_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        cached_corpus(SMALL, tmp_path)
    assert list((tmp_path / "synthetic").iterdir()) == []  # no final folder, no staging leftovers
    killed = tmp_path / "synthetic" / f".{SMALL.key()}-killed"  # staging folders of killed runs
    recent = tmp_path / "synthetic" / f".{SMALL.key()}-running"
    for staging in (killed, recent):
        (staging / "IEMOCAP_full_release" / "Session1").mkdir(parents=True)
    long_ago = time.time() - synthetic.STALE_STAGING_SECONDS - 60
    os.utime(killed, (long_ago, long_ago))
    monkeypatch.setattr(synthetic, "_render", real_render)
    assert len(read_iemocap(cached_corpus(SMALL, tmp_path))) == 16
    assert not killed.exists() and recent.is_dir()  # a recent one may be a concurrent run's: kept


def test_concurrent_winner_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process publishes the same corpus while this one generates: this one's copy is discarded."""
    calls = []
    real_generate = synthetic.generate

    def generate_while_another_finishes(config, root):
        calls.append(root)
        release = real_generate(config, root)
        if len(calls) == 1:
            cached_corpus(config, tmp_path)  # the concurrent run wins the race
        return release

    monkeypatch.setattr(synthetic, "generate", generate_while_another_finishes)
    release = cached_corpus(SMALL, tmp_path)
    assert len(calls) == 2 and not calls[0].exists()
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == [SMALL.key()]
    assert len(read_iemocap(release)) == 16


def test_refuses_to_overwrite_or_adopt_foreign_folders(tmp_path: Path) -> None:
    (tmp_path / "IEMOCAP_full_release" / "mine.txt").parent.mkdir()
    (tmp_path / "IEMOCAP_full_release" / "mine.txt").write_text("user data")
    with pytest.raises(CorpusError, match="IEMOCAP_full_release: already exists"):
        generate(SMALL, tmp_path)
    unfinished = tmp_path / "cache" / "synthetic" / SMALL.key()
    unfinished.mkdir(parents=True)
    with pytest.raises(CorpusError, match=f"{SMALL.key()}: exists but has no synthetic_corpus.json"):
        cached_corpus(SMALL, tmp_path / "cache")


def test_options_parse_into_a_stable_cache_key() -> None:
    parsed = parse(SyntheticCorpusConfig, {"sessions": 2, "min_seconds": 2, "seed": 3}, "corpus.options")
    assert parsed == SyntheticCorpusConfig(sessions=2, min_seconds=2.0, seed=3)
    assert parsed.key() == SyntheticCorpusConfig(sessions=2, min_seconds=2, seed=3).key()
    assert len({parsed.key(), replace(parsed, seed=4).key(), replace(parsed, max_seconds=3.0).key()}) == 3


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"sessions": 12}, "sessions"),
        ({"utterances_per_emotion": 0}, "utterances_per_emotion"),
        ({"min_seconds": 4.0}, "min_seconds"),
        ({"sample_rate": 22050}, "sample_rate"),
        ({"speakers": 3}, "speakers"),
    ],
)
def test_bad_options_name_the_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"corpus\.options.*{key}"):
        parse(SyntheticCorpusConfig, options, "corpus.options")


def prosodic_statistics(path: Path) -> np.ndarray:
    """Utterance-level prosody: F0 (yin, semitones) level/range/slope/jumps, loudness, brightness, voicing."""
    y, sr = sf.read(str(path), dtype="float32")
    hop = 256
    f0 = librosa.yin(y, fmin=60, fmax=500, sr=sr, frame_length=1024, hop_length=hop)
    rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=hop)[0]
    centroid = librosa.feature.spectral_centroid(y=y, sr=sr, n_fft=1024, hop_length=hop)[0]
    frames = min(len(f0), len(rms), len(centroid))
    f0, db, centroid = f0[:frames], 20 * np.log10(rms[:frames] + 1e-6), centroid[:frames]
    voiced = db > db.max() - 20
    semitones = 12 * np.log2(f0[voiced] / 100.0)
    slope = np.polyfit(np.flatnonzero(voiced) * hop / sr, semitones, 1)[0]
    return np.array(
        [
            semitones.mean(),
            semitones.std(),
            *np.percentile(semitones, [10, 50, 90]),
            slope,
            np.abs(np.diff(semitones)).mean(),
            db[voiced].mean(),
            db[voiced].std(),
            np.percentile(db[voiced], 90),
            centroid[voiced].mean(),
            centroid[voiced].std(),
            voiced.mean(),
        ]
    )


@pytest.mark.slow
def test_prosodic_probe_is_above_chance_and_below_perfect(tmp_path: Path) -> None:
    """Leave-one-session-out logistic regression on prosodic statistics of the default corpus."""
    utterances = read_iemocap(generate(SyntheticCorpusConfig(), tmp_path), subset="improvised")
    assert len(utterances) == 320
    features = np.stack([prosodic_statistics(u.path) for u in utterances])
    labels = np.array([u.label for u in utterances])
    sessions = np.array([u.session for u in utterances])
    recalls = []
    for held_out in sorted(set(sessions)):
        train, test = sessions != held_out, sessions == held_out
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(features[train], labels[train])
        recalls.append(recall_score(labels[test], probe.predict(features[test]), average="macro"))
    ua = float(np.mean(recalls))
    print(f"synthetic corpus prosodic probe: UA {ua:.3f} (folds {np.round(recalls, 3).tolist()}, chance 0.25)")
    assert len(recalls) == 5 and 0.45 <= ua <= 0.92
    # acted-speech directions: angry/happy loud and high, sad quiet and low
    by = {e: features[labels == e].mean(axis=0) for e in EMOTIONS}
    assert by["ang"][7] > by["neu"][7] > by["sad"][7] and by["hap"][7] > by["neu"][7]
    assert by["ang"][0] > by["neu"][0] > by["sad"][0] and by["hap"][0] > by["neu"][0]
    # distinct voices: the female-male F0 gap exceeds every between-emotion F0 gap
    gender = np.array([u.gender for u in utterances])
    gap = features[gender == "F", 0].mean() - features[gender == "M", 0].mean()
    assert gap > max(by[a][0] - by[b][0] for a in EMOTIONS for b in EMOTIONS)
