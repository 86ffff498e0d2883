"""How fast the embedded synthetic corpus renders, and how much the cache saves, measured in one run.

Usage: python benchmarks/synthetic_corpus.py [--sessions 5] [--utterances-per-emotion 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import soundfile as sf

from nni_emotionnas.corpora.synthetic import SyntheticCorpusConfig, cached_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--utterances-per-emotion", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = SyntheticCorpusConfig(
        sessions=args.sessions, utterances_per_emotion=args.utterances_per_emotion, seed=args.seed
    )
    with tempfile.TemporaryDirectory() as cache:
        wall, cpu = time.perf_counter(), time.process_time()
        release = cached_corpus(config, Path(cache))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        reuse = time.perf_counter()
        cached_corpus(config, Path(cache))
        reuse = time.perf_counter() - reuse
        wavs = sorted(release.rglob("*.wav"))
        audio = sum(sf.info(str(p)).duration for p in wavs)
        size = sum(p.stat().st_size for p in release.rglob("*") if p.is_file())
    print(f"config: {config}")
    print(f"utterances: {len(wavs)}, audio: {audio:.1f} s ({audio / 60:.1f} min), on disk: {size / 2**20:.1f} MiB")
    print(f"generation: {wall:.2f} s wall, {cpu:.2f} s CPU ({1000 * cpu / len(wavs):.1f} ms CPU per utterance)")
    print(f"real-time factor (audio seconds per CPU second): {audio / cpu:.0f}x")
    print(f"cache reuse: {reuse * 1000:.2f} ms, {wall / reuse:.0f}x faster than generating")


if __name__ == "__main__":
    main()
