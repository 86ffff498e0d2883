"""Deep-feature extraction time on EmoDB and a linear probe of each backend's frames.

Extracts the 535 EmoDB files (22.05 kHz, resampled to 16 kHz by the product's audio loader) through the
real `FeatureStore` into a fresh temporary cache, times the cold run and the cached re-run, then fits a
logistic regression on the mean and std of each utterance's frames, leave-one-speaker-out (speaker = first 2
characters of the file name, emotion = 6th), and prints UA (mean per-class recall) and WA (accuracy).

    .venv/bin/python benchmarks/extract_emodb_features.py [--data ../shared/data/emodb] [--backends resemblyzer fbank]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nni_emotionnas.corpora.records import Utterance
from nni_emotionnas.features.audio import load_audio
from nni_emotionnas.features.registry import build_deep_extractor
from nni_emotionnas.features.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]


def emodb_utterances(root: Path) -> list[Utterance]:
    wavs = sorted((root / "wav").glob("*.wav"))
    if not wavs:
        raise SystemExit(f"no EmoDB wav files under {root / 'wav'}")
    return [Utterance(p, p.stem[5], p.stem[:2], p.stem[:2], p.stem, "emodb") for p in wavs]


def statistics(frames: np.ndarray) -> np.ndarray:
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)])


def probe(features: np.ndarray, labels: np.ndarray, speakers: np.ndarray) -> tuple[float, float]:
    """Leave-one-speaker-out logistic regression on standardised statistics; pooled UA / WA in percent."""
    predictions = np.empty_like(labels)
    for speaker in np.unique(speakers):
        test = speakers == speaker
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        model.fit(features[~test], labels[~test])
        predictions[test] = model.predict(features[test])
    return 100 * balanced_accuracy_score(labels, predictions), 100 * float(np.mean(predictions == labels))


def extract(utterances: list[Utterance], options: dict, n_jobs: int, batch_size: int) -> tuple[list, float, float]:
    with tempfile.TemporaryDirectory() as cache:
        store = FeatureStore(Path(cache))
        start = time.perf_counter()
        report = store.extract(utterances, build_deep_extractor(options), n_jobs=n_jobs, progress=False,
                               batch_size=batch_size)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        again = store.extract(utterances, build_deep_extractor(options), n_jobs=n_jobs, progress=False)
        warm = time.perf_counter() - start
        assert again.hits == len(utterances), "second run should be all cache hits"
        frames = [np.array(report.load(i)) for i in range(len(utterances))]
    return frames, cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "emodb")
    parser.add_argument("--backends", nargs="+", default=["resemblyzer", "fbank"])
    parser.add_argument("--n-jobs", type=int, default=2, help="worker processes for parallel (numpy) backends")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for neural backends")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    utterances = emodb_utterances(args.data)
    labels = np.array([u.label for u in utterances])
    speakers = np.array([u.speaker for u in utterances])
    audio_seconds = sum(sf.info(str(u.path)).duration for u in utterances)
    print(f"EmoDB: {len(utterances)} files, {len(set(speakers))} speakers, {len(set(labels))} emotions; "
          f"torch threads {args.threads}, workers {args.n_jobs}, load average at start {os.getloadavg()[0]:.1f}")
    rows = []
    for backend in args.backends:
        frames, cold, warm = extract(utterances, {"backend": backend}, args.n_jobs, args.batch_size)
        ua, wa = probe(np.stack([statistics(f) for f in frames]), labels, speakers)
        rows.append((backend, frames[0].shape[1], cold, warm, ua, wa))
        if backend == "resemblyzer":  # the baseline: the same probe on the encoder's own log-mel input
            extractor = build_deep_extractor({"backend": "resemblyzer"})
            logmel = [np.log(extractor.mel_frames(load_audio(u.path)) + 1e-6) for u in utterances]
            ua, wa = probe(np.stack([statistics(f) for f in logmel]), labels, speakers)
            rows.append(("log-mel 40 (probe only)", 40, float("nan"), float("nan"), ua, wa))

    print(f"audio: {audio_seconds / 60:.1f} min in total")
    print(f"{'backend':<26}{'dim':>5}{'cold s':>9}{'x real':>8}{'cached s':>10}{'UA %':>7}{'WA %':>7}")
    for backend, dim, cold, warm, ua, wa in rows:
        speed = audio_seconds / cold
        print(f"{backend:<26}{dim:>5}{cold:>9.1f}{speed:>8.0f}{warm:>10.2f}{ua:>7.1f}{wa:>7.1f}")
    print(f"load average at end {os.getloadavg()[0]:.1f} (other processes share the 2 cores)")


if __name__ == "__main__":
    main()
