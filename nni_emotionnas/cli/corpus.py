"""`emotionnas corpus` (counts per label, speaker, fold) and `emotionnas features` (fill the cache)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from nni_emotionnas.config.experiment import ExperimentConfig, experiment_from_dict, load_experiment
from nni_emotionnas.errors import CorpusError

if TYPE_CHECKING:
    from nni_emotionnas.corpora.load import LoadedCorpora


def detect_reader(path: Path) -> str:
    """Guesses the corpus layout of a path given on the command line."""
    if path.is_file() and path.suffix.lower() == ".csv":
        return "manifest"
    if not path.is_dir():
        raise CorpusError(f"{path}: neither an experiment file, a manifest CSV nor a corpus folder")
    if (path / "IEMOCAP_full_release").is_dir() or any(path.glob("Session[0-9]*")):
        return "iemocap"
    if any(path.rglob("Actor_*")):
        return "ravdess"
    names = [p.stem for p in path.rglob("*.wav")][:50]
    if names and all(len(n.split("_")) == 4 and n.split("_")[0].isdigit() for n in names):
        return "cremad"
    if names and all(len(n) == 7 and n[:2].isdigit() and n[5] in "WLEAFTN" for n in names):
        return "emodb"
    return "folders"


def experiment_for(target: str, reader: str | None) -> ExperimentConfig:
    """An experiment file as is, or a minimal experiment around a corpus path."""
    path = Path(target)
    if path.suffix.lower() in (".yml", ".yaml"):
        return load_experiment(path)
    return experiment_from_dict(
        {"corpus": {"reader": reader or detect_reader(path), "path": str(path.resolve())}}, Path.cwd()
    )


def format_table(title: str, rows: dict[str, dict[str, int]], columns: list[str]) -> str:
    width = max([len(title)] + [len(r) for r in rows]) + 2
    lines = [title.ljust(width) + "".join(c.rjust(8) for c in columns) + "total".rjust(8)]
    for name, counts in rows.items():
        values = [counts.get(c, 0) for c in columns]
        lines.append(name.ljust(width) + "".join(str(v).rjust(8) for v in values) + str(sum(values)).rjust(8))
    return "\n".join(lines)


def describe_corpus(experiment: ExperimentConfig) -> str:
    """Counts per label, per speaker x label and per fold x split."""
    from collections import Counter

    from nni_emotionnas.corpora.folds import make_folds
    from nni_emotionnas.corpora.load import read_corpora

    loaded = read_corpora(experiment)
    utterances, classes = loaded.utterances, loaded.classes
    by_speaker: dict[str, Counter] = {}
    for u in utterances:
        by_speaker.setdefault(u.speaker, Counter())[u.label] += 1
    names = " + ".join(c.name or c.reader for c in experiment.corpus_blocks)
    parts = [
        f"corpus: {names} ({len(utterances)} utterances, {len(by_speaker)} speakers, {len(classes)} classes)",
    ]
    if experiment.multi_corpus:
        parts.append(describe_corpora(loaded))
    parts += [
        format_table("label", {"all": Counter(u.label for u in utterances)}, classes),
        format_table("speaker", dict(sorted(by_speaker.items())), classes),
    ]
    folds = make_folds(utterances, classes, experiment.protocol)
    rows = {}
    for fold in folds:
        for split in ("train", "val", "test"):
            speakers = sorted({utterances[i].speaker for i in fold.split(split)})
            rows[f"{fold.name} {split} [{','.join(speakers) if split != 'train' else f'{len(speakers)} spk'}]"] = (
                Counter(utterances[i].label for i in fold.split(split))
            )
    parts.append(format_table("fold split", rows, classes))
    return "\n\n".join(parts)


def describe_corpora(loaded: LoadedCorpora) -> str:
    """Per corpus: utterances read and kept, dropped outside the shared classes, and the shared-class counts."""
    from collections import Counter

    lines = [f"shared classes: {', '.join(loaded.classes)}"]
    for c in loaded.counts:
        dropped = ", ".join(f"{label} {n}" for label, n in c.dropped.items()) or "none"
        lines.append(f"{c.name}: {c.read} read, {c.kept} kept, dropped outside the shared classes: {dropped}"
                     + (f"; no utterance of {', '.join(c.missing)}" if c.missing else ""))
    rows = {c.name: Counter(u.label for u in loaded.utterances if u.corpus == c.name) for c in loaded.counts}
    return "\n".join(lines) + "\n\n" + format_table("corpus", rows, loaded.classes)


def run_corpus(args: argparse.Namespace) -> int:
    print(describe_corpus(experiment_for(args.target, args.reader)))
    return 0


def run_features(args: argparse.Namespace) -> int:
    from nni_emotionnas.features.prepared import prepare

    experiment = load_experiment(Path(args.experiment))
    corpus = prepare(experiment, streams=args.streams)
    for name in args.streams:
        report = corpus.spectrogram if name == "spectrogram" else corpus.deep
        print(f"{name}: {report.hits} cached, {report.misses} extracted")
    for _, message in corpus.skipped:
        print(f"skipped: {message}")
    print(f"cache: {experiment.cache_dir / 'features'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    corpus = subparsers.add_parser("corpus", help="print counts per label, speaker and fold")
    corpus.add_argument("target", help="experiment YAML, corpus folder or manifest CSV")
    corpus.add_argument("--reader", help="corpus layout when TARGET is a path (default: detected)")
    corpus.set_defaults(handler=run_corpus)
    features = subparsers.add_parser("features", help="extract and cache the features of an experiment")
    features.add_argument("experiment", help="experiment YAML")
    features.add_argument(
        "--streams", "--branches", nargs="+", default=["spectrogram", "deep"], choices=["spectrogram", "deep"]
    )
    features.set_defaults(handler=run_features)
