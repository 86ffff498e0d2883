"""`emotionnas run` (the whole protocol), `emotionnas demo` (it, on the embedded corpus), `emotionnas predict`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from nni_emotionnas.config import ExperimentConfig, experiment_from_dict, load_experiment
from nni_emotionnas.errors import ConfigError

DEMO_EXPERIMENT = "demo/experiment.yml"


def experiment_snapshot(experiment: ExperimentConfig) -> dict[str, Any]:
    """The experiment as plain JSON, enough to rebuild it (`experiment_from_dict`) for prediction."""
    data = dataclasses.asdict(experiment)
    data["base_dir"] = str(experiment.base_dir)
    return json.loads(json.dumps(data, default=str))


def claim_run_dir(run_dir: Path, snapshot: dict[str, Any]) -> bool:
    """Creates the run folder, or resumes it when it holds the same experiment; never reuses another's."""
    from nni_emotionnas.report import write_text

    marker = run_dir / "experiment.json"
    if marker.is_file():
        if json.loads(marker.read_text()) != snapshot:
            raise ConfigError(
                f"{run_dir}: holds a run of a different experiment; pass another --out (nothing was overwritten)"
            )
        return True
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: exists and is not an emotionnas run folder; pass another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(snapshot, indent=1))
    return False


def run_experiment(experiment: ExperimentConfig, run_dir: Path, progress: bool = True) -> dict[str, Path]:
    """corpus -> features -> per-fold search -> trained variants -> report; returns the report's paths."""
    from nni_emotionnas.crossval import CrossValidation, describe_streams, streams_of
    from nni_emotionnas.data import prepare
    from nni_emotionnas.report import write_report, write_text

    snapshot = experiment_snapshot(experiment)
    resumed = claim_run_dir(run_dir, snapshot)
    print(f"{'resuming' if resumed else 'run folder'}: {run_dir}")
    started = time.perf_counter()
    branches = sorted({s for v in experiment.run.variants for s in streams_of(v)})
    corpus = prepare(experiment, branches=branches, progress=progress)
    results = CrossValidation(experiment, corpus, run_dir, progress=progress).run()
    notes = describe_streams(corpus, experiment)
    skipped = [{"file": str(u.path), "reason": reason} for u, reason in corpus.skipped]
    paths = write_report(results, corpus.classes, run_dir, notes, extra={"skipped_audio": skipped})
    manifest = {
        "classes": list(corpus.classes),
        "max_frames": corpus.max_frames,
        "deep_dim": corpus.deep_dim,
        "main": experiment.run.main,
        "folds": [f.name for f in corpus.folds],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_text(run_dir / "run.json", json.dumps(manifest, indent=1))
    return paths


def print_summary(run_dir: Path, paths: dict[str, Path]) -> None:
    print()
    print(paths["markdown"].read_text())
    main = json.loads((run_dir / "run.json").read_text())["main"]
    print("written:")
    print(f"  results      {paths['markdown']}  {paths['csv'].name}  {paths['json'].name}")
    print(f"  confusion    {paths.get(f'confusion_{main}', next(p for k, p in paths.items() if k.startswith('conf')))}")
    for genotype in sorted(run_dir.glob("folds/*/search/*/genotype.json"))[:2]:
        print(f"  genotype     {genotype}  (cells: {genotype.with_name('cells.png').name})")
    models = sorted(run_dir.glob(f"folds/*/{main}/model.pt"))
    if models:
        print(f"  model ({main}) {models[0]}  (+{len(models) - 1} more folds)")
    print(f"  predict with: emotionnas predict {run_dir} FILE.wav ...")


def default_run_dir(experiment: ExperimentConfig) -> Path:
    return experiment.resolve(experiment.output_dir) / experiment.name


def run_command(args: argparse.Namespace) -> int:
    experiment = load_experiment(Path(args.experiment))
    run_dir = Path(args.out) if args.out else default_run_dir(experiment)
    print_summary(run_dir, run_experiment(experiment, run_dir, progress=not args.quiet))
    return 0


def demo_command(args: argparse.Namespace) -> int:
    from nni_emotionnas.resources import default_file

    path = default_file("examples", DEMO_EXPERIMENT)
    experiment = load_experiment(path)
    run_dir = Path(args.out)
    started = time.perf_counter()
    print(f"demo: {path} on the embedded synthetic corpus")
    paths = run_experiment(experiment, run_dir, progress=not args.quiet)
    print_summary(run_dir, paths)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


def load_run(run_dir: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    run_dir = Path(run_dir)
    for name in ("experiment.json", "run.json"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{run_dir / name}: missing; is {run_dir} a finished `emotionnas run` folder?")
    snapshot = json.loads((run_dir / "experiment.json").read_text())
    base_dir = Path(snapshot.pop("base_dir"))
    return experiment_from_dict(snapshot, base_dir), json.loads((run_dir / "run.json").read_text())


def predict_files(run_dir: Path, files: list[Path]) -> tuple[list[str], Any]:
    """Class probabilities of each file: the mean over the main variant's fold models (an ensemble)."""
    import numpy as np
    import torch

    from nni_emotionnas.audio import load_audio
    from nni_emotionnas.crossval import CrossValidation, branch_of
    from nni_emotionnas.data import PreparedCorpus
    from nni_emotionnas.features.registry import build_deep_extractor
    from nni_emotionnas.features.sequence import unify_length
    from nni_emotionnas.features.spectrogram import SpectrogramExtractor
    from nni_emotionnas.folds import Fold

    experiment, manifest = load_run(run_dir)
    main, classes = manifest["main"], manifest["classes"]
    branch = branch_of(main)
    audios = [load_audio(f) for f in files]
    inputs: dict[str, torch.Tensor] = {}
    if branch in ("spectrogram", "both"):
        spectrogram = SpectrogramExtractor(experiment.features.spectrogram)
        inputs["spectrogram"] = torch.from_numpy(np.stack([spectrogram.extract(a) for a in audios]))[:, None]
    if branch in ("deep", "both"):
        frames = build_deep_extractor(experiment.features.deep).extract_batch(audios)
        unified = [unify_length(f, manifest["max_frames"], experiment.features.sequence) for f in frames]
        inputs["frames"] = torch.from_numpy(np.stack([u[0] for u in unified]))
        inputs["mask"] = torch.from_numpy(np.stack([u[1] for u in unified]))
    batch = inputs["spectrogram"] if branch == "spectrogram" else inputs
    folds = [Fold(name, (), (), ()) for name in manifest["folds"]]
    corpus = PreparedCorpus(experiment, [], classes, folds, deep_dim=manifest["deep_dim"])
    builder = CrossValidation(experiment, corpus, Path(run_dir), progress=False)
    probabilities = []
    for fold in corpus.folds:
        model = builder.build(fold, main)
        model.load_state_dict(torch.load(Path(run_dir) / "folds" / fold.name / main / "model.pt", weights_only=True))
        with torch.no_grad():
            probabilities.append(torch.softmax(model.eval()(batch), dim=1).numpy())
    return classes, np.mean(probabilities, axis=0)


def predict_command(args: argparse.Namespace) -> int:
    classes, probabilities = predict_files(Path(args.run_dir), [Path(f) for f in args.files])
    for path, probs in zip(args.files, probabilities):
        ranked = ", ".join(f"{c} {p:.3f}" for c, p in sorted(zip(classes, probs), key=lambda x: -x[1]))
        print(f"{path}\t{classes[int(probs.argmax())]}\t{ranked}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="features -> search both streams -> train fused model -> report")
    run.add_argument("experiment", help="experiment YAML")
    run.add_argument("--out", help="run folder (default: <output_dir>/<name>); an interrupted run resumes there")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=run_command)
    demo = subparsers.add_parser("demo", help="the whole EmotionNAS run on the embedded synthetic corpus")
    demo.add_argument("--out", default="emotionnas_demo", help="run folder (default: ./emotionnas_demo)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=demo_command)
    predict = subparsers.add_parser("predict", help="label and class probabilities of audio files")
    predict.add_argument("run_dir", help="folder of a finished `emotionnas run` or `emotionnas demo`")
    predict.add_argument("files", nargs="+", help="audio files")
    predict.set_defaults(handler=predict_command)


