"""The baseline rows of an EmoDB leave-one-speaker-out run (probes, classic, probe fusion), without training
any network: the figures the searched models must beat, per `features.standardize` mode.

    python benchmarks/emodb_baselines.py [--standardize train_speakers speaker] [--classic-set ComParE_2016]

Features come from the feature store (`--cache`, default the user cache): the first call extracts the
spectrograms, resemblyzer frames and openSMILE functionals of the 535 files (several minutes on one core).
Prints, per mode and row, UA/WA as the mean over the 10 folds and pooled over all test predictions (the
figure SER papers usually quote), plus the fusion of only the resemblyzer probe and the classic row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nni_emotionnas.config.experiment import experiment_from_dict
from nni_emotionnas.evaluation.baseline_fit import mean_probabilities
from nni_emotionnas.evaluation.crossval import CrossValidation
from nni_emotionnas.evaluation.report import summarize
from nni_emotionnas.features.prepared import prepare
from nni_emotionnas.training.metrics import score

EMODB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emodb" / "wav"


def experiment(standardize: str, classic_set: str, cache: str | None, emodb: Path):
    """The features of examples/emodb/experiment.yml, baselines only."""
    return experiment_from_dict(
        {
            "corpus": {"reader": "emodb", "path": str(emodb)},
            "protocol": {"kind": "leave_one_speaker_out"},
            "features": {
                "cache_dir": cache,
                "n_jobs": 1,
                "standardize": standardize,
                "spectrogram": {"duration": 3.0, "size": [64, 64]},
                "deep": {"backend": "resemblyzer", "layer": -1},
                "sequence": {"target_frames": 200},
            },
            "run": {"classic": {"feature_set": classic_set}},
        },
        Path.cwd(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standardize", nargs="+", default=["train_speakers", "speaker"])
    parser.add_argument("--classic-set", default="ComParE_2016")
    parser.add_argument("--cache", default=None, help="feature cache folder (default: the user cache)")
    parser.add_argument("--emodb", type=Path, default=EMODB)
    args = parser.parse_args()
    print("| standardize | row | UA % (mean over folds) | WA % | pooled UA % | pooled WA % | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode in args.standardize:
        exp = experiment(mode, args.classic_set, args.cache, args.emodb)
        corpus = prepare(exp, progress=False)
        with tempfile.TemporaryDirectory() as run_dir:
            cv = CrossValidation(exp, corpus, Path(run_dir), progress=False)
            results, seconds, pair = [], {}, []
            for variant in ("probe_spectrogram", "probe_deep", "classic", "probe_fusion"):
                started = time.perf_counter()
                results += [cv.train_variant(fold, variant) for fold in corpus.folds]
                seconds[variant] = time.perf_counter() - started
            for fold in corpus.folds:  # the reference fusion: resemblyzer probe + classic only
                probs = mean_probabilities([cv.baseline_fit(fold, v, exp.seed) for v in ("probe_deep", "classic")])
                pair += [(int(corpus.labels[i]), int(p)) for i, p in zip(fold.test, probs.test_probs.argmax(axis=1))]
        for variant, s in summarize(results, corpus.classes).items():
            print(f"| {mode} | {variant} | {s['ua_mean']:.1f} ± {s['ua_std']:.1f} | {s['wa_mean']:.1f} | "
                  f"{s['ua_pooled']:.1f} | {s['wa_pooled']:.1f} | {seconds[variant]:.0f} |")
        pooled = score([t for t, _ in pair], [p for _, p in pair], len(corpus.classes))
        print(f"| {mode} | probe_deep + classic | | | {pooled.ua * 100:.1f} | {pooled.wa * 100:.1f} | |")


if __name__ == "__main__":
    main()
