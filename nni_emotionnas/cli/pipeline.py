"""`emotionnas run` (the whole protocol), `emotionnas demo` (it, on the embedded corpus), `emotionnas predict`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nni_emotionnas.config.experiment import load_experiment, with_jobs, with_seed
from nni_emotionnas.evaluation.run import default_run_dir, run_experiment
from nni_emotionnas.evaluation.run_folder import RunFolder

DEMO_EXPERIMENT = "demo/experiment.yml"
RESTART_HELP = "discard the results already in the run folder (other experiment or changed corpus) and redo the run"


def print_summary(run_dir: Path, paths: dict[str, Path]) -> None:
    print()
    print(paths["markdown"].read_text())
    folder = RunFolder(run_dir)
    main = json.loads(folder.manifest.read_text())["main"]
    print("written:")
    print(f"  results      {paths['markdown']}  {paths['csv'].name}  {paths['json'].name}")
    print(f"  confusion    {paths.get(f'confusion_{main}', next(p for k, p in paths.items() if k.startswith('conf')))}")
    for genotype in sorted(folder.folds.glob("*/search/*/genotype.json"))[:2]:
        print(f"  genotype     {genotype}  (cells: {genotype.with_name('cells.png').name})")
    models = sorted(folder.folds.glob(f"*/{main}/model.pt"))
    if models:
        print(f"  model ({main}) {models[0]}  (+{len(models) - 1} more folds)")
    print(f"  predict with: emotionnas predict {run_dir} FILE.wav ...")


def run_command(args: argparse.Namespace) -> int:
    experiment = with_jobs(with_seed(load_experiment(Path(args.experiment)), args.seed), args.jobs)
    run_dir = Path(args.out) if args.out else default_run_dir(experiment)
    print_summary(run_dir, run_experiment(experiment, run_dir, progress=not args.quiet, restart=args.restart))
    return 0


def demo_command(args: argparse.Namespace) -> int:
    from nni_emotionnas.config.resources import default_file

    path = default_file("examples", DEMO_EXPERIMENT)
    experiment = with_jobs(load_experiment(path), args.jobs)
    run_dir = Path(args.out)
    started = time.perf_counter()
    print(f"demo: {path} on the embedded synthetic corpus")
    paths = run_experiment(experiment, run_dir, progress=not args.quiet, restart=args.restart)
    print_summary(run_dir, paths)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from nni_emotionnas.evaluation.predict import predict_files

    files = [Path(f) for f in args.files]
    classes, probabilities = predict_files(Path(args.run_dir), files, trust_checkpoints=args.trust_checkpoints)
    for path, probs in zip(args.files, probabilities):
        ranked = ", ".join(f"{c} {p:.3f}" for c, p in sorted(zip(classes, probs), key=lambda x: -x[1]))
        print(f"{path}\t{classes[int(probs.argmax())]}\t{ranked}")
    return 0


def worker_count(text: str) -> int:
    """`--jobs`: a whole number of at least 1, else argparse's usage error."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


JOBS_HELP = "folds trained at once, each in its own worker process (overrides run.jobs; changes no result)"


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="features -> search both streams -> train fused model -> report")
    run.add_argument("experiment", help="experiment YAML")
    run.add_argument("--out", help="run folder (default: <output_dir>/<name>); an interrupted run resumes there")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--restart", action="store_true", help=RESTART_HELP)
    run.add_argument("--seed", type=int, help="override the experiment's seed (weights, data order, search splits)")
    run.add_argument("--jobs", type=worker_count, help=JOBS_HELP)
    run.set_defaults(handler=run_command)
    demo = subparsers.add_parser("demo", help="the whole EmotionNAS run on the embedded synthetic corpus")
    demo.add_argument("--out", default="emotionnas_demo", help="run folder (default: ./emotionnas_demo)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--restart", action="store_true", help=RESTART_HELP)
    demo.add_argument("--jobs", type=worker_count, help=JOBS_HELP)
    demo.set_defaults(handler=demo_command)
    predict = subparsers.add_parser("predict", help="label and class probabilities of audio files")
    predict.add_argument("run_dir", help="folder of a finished `emotionnas run` or `emotionnas demo`")
    predict.add_argument("files", nargs="+", help="audio files")
    predict.add_argument(
        "--trust-checkpoints", action="store_true",
        help="allow loading checkpoints the run folder names that unpickle Python objects (fairseq wav2vec); "
        "unpickling runs code, so only for run folders you trust",
    )
    predict.set_defaults(handler=predict_command)


