"""The fusion head phase (`train.fusion_init: streams`) on cached frozen-stream embeddings against the live
path, measured in one run: one fold's five fusions (ism, concat, sum, max, min), each its head phase only.

    python benchmarks/bench_frozen_streams.py examples/emodb/experiment.yml --fold test03 --head-epochs 3
    python benchmarks/bench_frozen_streams.py examples/emodb/experiment.yml --genotypes RUN/folds/test03/search

The experiment's features (cached as `emotionnas run` leaves them), spaces, training settings and
augmentation are used as they are, except: `fusion_init: streams`, no refit, the deep stream dominant, the
streams trained for `--stream-epochs`. The stream networks are the space's default cells, or a finished run's
searched ones (`--genotypes`: a folder with `spectrogram/genotype.json` and `deep/genotype.json`). The cached
time includes computing the embeddings (once for the five fusions); the two paths' weights after the last
head epoch are compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from nni.mutable import MutableAnnotation

from nni_emotionnas.config.experiment import FUSION_VARIANTS, load_experiment
from nni_emotionnas.evaluation.crossval import CrossValidation
from nni_emotionnas.evaluation.frozen_streams import FrozenStreams
from nni_emotionnas.evaluation.fusion_fit import fit_fusion_from_streams
from nni_emotionnas.features.prepared import prepare
from nni_emotionnas.models.networks import space_config_for
from nni_emotionnas.spaces.genotype import make_record, write_genotype

STREAMS = ("spectrogram", "deep")


def default_genotype(cv: CrossValidation, stream: str) -> dict:
    """The genotype record of the stream space's default choice for every decision."""
    module, config = space_config_for(cv.experiment, stream, None, cv.corpus.deep_dim)
    space = module.build_space(config, len(cv.corpus.classes))
    choices = {label: m for label, m in space.simplify().items() if not isinstance(m, MutableAnnotation)}
    return make_record(stream=stream, architecture={label: m.default() for label, m in choices.items()},
                       space_config=config, num_classes=len(cv.corpus.classes), classes=list(cv.corpus.classes))


def last_epoch_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights after the head phase's last epoch, whichever epoch (or the start) the fit then keeps."""
    return torch.load(folder / "head" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def head_phases(cv: CrossValidation, fold, seed: int, out: Path) -> tuple[dict[str, float], float, FrozenStreams]:
    """Wall and CPU seconds the five fusions' head phases take, live and cached (each fusion's two runs back to
    back, so a change of machine load hits both alike; CPU time is the less sensitive to other processes), the
    largest difference of their weights after the last epoch, and the cache."""
    corpus, gap, frozen = cv.corpus, 0.0, FrozenStreams()
    seconds = {f"{path} {clock}": 0.0 for path in ("live", "cached") for clock in ("wall", "cpu")}
    train, val = corpus.dataset(fold.name, "train", "both"), corpus.dataset(fold.name, "val", "both")
    for variant in FUSION_VARIANTS:
        config = dataclasses.replace(cv.experiment.train.for_stream(variant), seed=seed)
        heads = []
        for path, cache in (("live", None), ("cached", frozen)):
            model = cv.from_streams(fold, variant, seed)
            wall, cpu = time.perf_counter(), time.process_time()
            fit_fusion_from_streams(model, train, val, config, out / path / variant, len(corpus.classes), cache)
            seconds[f"{path} wall"] += time.perf_counter() - wall
            seconds[f"{path} cpu"] += time.process_time() - cpu
            heads.append(last_epoch_weights(out / path / variant))
        gap = max(gap, *((heads[1][k] - w).abs().max().item() for k, w in heads[0].items()))
        print(f"  after {variant}: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()), flush=True)
    return seconds, gap, frozen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--fold", help="fold name (default: the first)")
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--stream-epochs", type=int, default=1)
    parser.add_argument("--genotypes", type=Path, help="a run's folds/<fold>/search folder")
    parser.add_argument("--no-augment", action="store_true", help="train.augment off: every stream cached")
    args = parser.parse_args()

    experiment = load_experiment(args.experiment)
    train = dataclasses.replace(
        experiment.train, fusion_init="streams", refit=False, epochs=args.stream_epochs,
        fusion_head_epochs=args.head_epochs, fusion_finetune_epochs=0,
    )
    if args.no_augment:
        train = dataclasses.replace(train, augment=dataclasses.replace(train.augment, enabled=False))
    run = dataclasses.replace(experiment.run, variants=list(STREAMS), dominant="deep", jobs=1)
    experiment = dataclasses.replace(experiment, train=train, run=run)
    corpus = prepare(experiment, progress=False)
    work = Path(tempfile.mkdtemp(prefix="bench_frozen_streams_"))
    try:
        cv = CrossValidation(experiment, corpus, work / "run", progress=False)
        fold = corpus.fold(args.fold) if args.fold else corpus.folds[0]
        seed = cv.seeds[0]
        for stream in STREAMS:
            if args.genotypes:
                target = cv.genotype_path(fold, stream)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(args.genotypes / stream / "genotype.json", target)
            else:
                write_genotype(default_genotype(cv, stream), cv.genotype_path(fold, stream))
            cv.train_variant(fold, stream, seed)
        augment = "off" if not train.augment.enabled else f"on ({', '.join(train.augment.streams)})"
        print(f"fold {fold.name}: {len(fold.train)} training, {len(fold.val)} validation utterances; "
              f"{args.head_epochs} head epochs x 5 fusions; augmentation {augment}; "
              f"{train.threads or torch.get_num_threads()} torch thread(s); load {os.getloadavg()[0]:.2f}", flush=True)
        seconds, gap, frozen = head_phases(cv, fold, seed, work)
        cached_streams = sorted({f"{split}: {'+'.join(streams)}" for split, streams in frozen.embeddings})
        print(f"cached {'; '.join(cached_streams)}; largest head-weight difference {gap:.2e}; "
              f"load {os.getloadavg()[0]:.2f}")
        for clock in ("wall", "cpu"):
            live_s, cached_s = seconds[f"live {clock}"], seconds[f"cached {clock}"]
            print(f"{clock:4s} time: live {live_s:7.1f} s, cached {cached_s:7.1f} s, ratio cached / live "
                  f"{cached_s / live_s:.3f} (speed-up {live_s / cached_s:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
