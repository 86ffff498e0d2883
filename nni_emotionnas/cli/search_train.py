"""`emotionnas search` (NNI architecture search of one stream) and `emotionnas train` (fixed network)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional

from nni_emotionnas.config.experiment import ExperimentConfig, load_experiment, with_seed
from nni_emotionnas.errors import ConfigError

STREAMS = ("spectrogram", "deep")
SEED_HELP = "override the experiment's seed (weight initialisation, data order, search split)"


def _fold_name(corpus: Any, requested: Optional[str]) -> str:
    if requested is not None:
        return corpus.fold(requested).name
    return corpus.folds[0].name


def _run_dir(experiment: ExperimentConfig, out: Optional[str], stage: str, stream: str, fold: str) -> Path:
    """A fresh run folder; an existing one holding results is never reused (nothing is overwritten)."""
    if out is not None:
        run_dir = Path(out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = experiment.resolve(experiment.output_dir) / experiment.name / stage / f"{stream}-{fold}-{stamp}"
    for name in ("genotype.json", "results.json"):
        if (run_dir / name).exists():
            raise ConfigError(f"{run_dir / name}: already exists; choose another --out")
    return run_dir


def search_summary(metrics: dict[str, Any]) -> str:
    """What the search has to show for itself: the best trial's metric (multi-trial), the best candidate's
    validation loss (catalog), or the supernet's final train loss (one-shot)."""
    if "nni_final" in metrics:
        final = metrics["nni_final"] if isinstance(metrics["nni_final"], dict) else {"default": metrics["nni_final"]}
        wa = f", WA {100 * final['wa']:.1f} %" if "wa" in final else ""
        return (f"best of {metrics['nni_trials_ranked']} trials is {metrics['nni_trial']}: "
                f"val UA {100 * final['default']:.1f} %{wa}")
    losses = [v for v in metrics.get("candidate_val_loss", {}).values() if v is not None]
    if losses:
        return f"best of {len(metrics['candidate_val_loss'])} candidates: val loss {min(losses):.4f}"
    if "train_loss" in metrics:
        supernet = metrics.get("supernet_arch_half_ua")
        held = f", supernet UA {100 * supernet:.1f} % on the architecture half" if supernet is not None else ""
        return f"final train loss {metrics['train_loss']:.4f}{held}"
    return "no metrics recorded"


def run_search_command(args: argparse.Namespace) -> int:
    from nni_emotionnas.evaluation.search_request import SearchRequest
    from nni_emotionnas.features.prepared import prepare
    from nni_emotionnas.search.strategies import load_strategy_spec

    experiment = with_seed(load_experiment(Path(args.experiment)), args.seed)
    request = SearchRequest(experiment, args.stream, "", Path(), args.strategy and Path(args.strategy), args.space)
    load_strategy_spec(request.strategy())  # a bad strategy file is refused before the corpus is read
    corpus = prepare(experiment, streams=[args.stream])
    fold = _fold_name(corpus, args.fold)
    run_dir = _run_dir(experiment, args.out, "search", args.stream, fold)
    result = dataclasses.replace(request, fold=fold, run_dir=run_dir).run(corpus)
    print(json.dumps(result.record["genotype"], indent=1))
    print(f"search: {search_summary(result.record['search_metrics'])}")
    print(f"genotype: {result.genotype_path}")
    if result.drawing_path is not None:
        print(f"cells: {result.drawing_path}")
    return 0


def run_train_command(args: argparse.Namespace) -> int:
    from nni_emotionnas.evaluation.plots import plot_confusion
    from nni_emotionnas.evaluation.probe_start import start_stream
    from nni_emotionnas.features.prepared import prepare
    from nni_emotionnas.models.networks import build_model
    from nni_emotionnas.spaces.genotype import parameter_count
    from nni_emotionnas.training.fit import fit_fixed
    from nni_emotionnas.training.seeding import seed_everything

    experiment = with_seed(load_experiment(Path(args.experiment)), args.seed)
    corpus = prepare(experiment, streams=[args.stream])
    fold = _fold_name(corpus, args.fold)
    input_dim = corpus.deep_dim if args.stream == "deep" else 0
    seed_everything(experiment.seed)
    model = build_model(experiment, args.stream, args.genotype, list(corpus.classes), input_dim)
    print(f"parameters: {parameter_count(model)}")
    run_dir = _run_dir(experiment, args.out, "train", args.stream, fold)
    train = corpus.dataset(fold, "train", args.stream)
    train_config = experiment.train.for_stream(args.stream)
    from_probe = start_stream(model, args.stream, train, train_config)
    result = fit_fixed(
        model,
        train,
        corpus.dataset(fold, "val", args.stream),
        corpus.dataset(fold, "test", args.stream),
        train_config,
        run_dir,
        num_classes=len(corpus.classes),
        keep_initial=from_probe,
    )
    summary = {
        "stream": args.stream,
        "fold": fold,
        "classes": list(corpus.classes),
        "genotype": args.genotype,
        "parameters": parameter_count(model),
        "seed": experiment.seed,
        **result.summary(),
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    if result.test is not None:
        plot_confusion(result.test.confusion, corpus.classes, run_dir / "confusion_test.png", f"{fold} test")
    print(f"val  UA {100 * result.val.ua:.1f}  WA {100 * result.val.wa:.1f}")
    if result.test is not None:
        print(f"test UA {100 * result.test.ua:.1f}  WA {100 * result.test.wa:.1f}")
    print(f"results: {run_dir / 'results.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser("search", help="search one stream's architecture with NNI; writes genotype.json")
    search.add_argument("experiment", help="experiment YAML")
    search.add_argument("--stream", "--branch", dest="stream", choices=STREAMS, required=True)
    search.add_argument("--fold", help="fold whose training speakers are searched on (default: the first)")
    search.add_argument("--strategy", help="strategy YAML (default: the experiment's, else strategies/darts.yml)")
    search.add_argument("--space", help="search-space YAML (default: the experiment's, else the packaged one)")
    search.add_argument("--out", help="run folder (default: <output_dir>/<name>/search/<stream>-<fold>-<time>)")
    search.add_argument("--seed", type=int, help=SEED_HELP)
    search.set_defaults(handler=run_search_command)
    train = subparsers.add_parser("train", help="train a fixed network from scratch; reports val/test UA and WA")
    train.add_argument("experiment", help="experiment YAML")
    train.add_argument("--stream", "--branch", dest="stream", choices=STREAMS, required=True)
    train.add_argument("--genotype", help="genotype.json from `emotionnas search` (not needed for baselines)")
    train.add_argument("--fold", help="fold to train and evaluate (default: the first)")
    train.add_argument("--out", help="run folder (default: <output_dir>/<name>/train/<stream>-<fold>-<time>)")
    train.add_argument("--seed", type=int, help=SEED_HELP)
    train.set_defaults(handler=run_train_command)
