"""The whole EmotionNAS protocol over every fold: search both streams, train each variant, test, report.

Run folder layout (everything a fold needs is redone only if its final file is missing, so an interrupted
run resumes where it stopped):

    <run>/folds/<fold>/search/<branch>/genotype.json   searched cells of a stream (per fold, or once)
    <run>/folds/<fold>/<variant>/result.json            test scores of a trained variant (written last)
    <run>/folds/<fold>/<variant>/model.pt               its best-validation-UA weights
    <run>/results.{md,csv,json}, confusion_<variant>.png
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from nni_emotionnas.config.experiment import SINGLE_STREAMS, ExperimentConfig, RunConfig
from nni_emotionnas.corpora.folds import Fold
from nni_emotionnas.evaluation.report import FoldResult
from nni_emotionnas.features.prepared import PreparedCorpus
from nni_emotionnas.models.fusion import FusionHead, TwoStreamModel


def branch_of(variant: str) -> str:
    return variant if variant in SINGLE_STREAMS else "both"


def streams_of(variant: str) -> tuple[str, ...]:
    return (variant,) if variant in SINGLE_STREAMS else SINGLE_STREAMS


class CrossValidation:
    """Runs (or resumes) every fold of an experiment in `run_dir`."""

    def __init__(self, experiment: ExperimentConfig, corpus: PreparedCorpus, run_dir: Path, progress: bool = True):
        self.experiment = experiment
        self.corpus = corpus
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.config: RunConfig = experiment.run

    def needs_search(self, stream: str) -> bool:
        model = self.experiment.model
        return (model.spectrogram == "darts") if stream == "spectrogram" else (model.deep == "searched")

    def genotype_path(self, fold: Fold, stream: str) -> Path:
        owner = fold if self.config.search == "per_fold" else self.corpus.folds[0]
        return self.run_dir / "folds" / owner.name / "search" / stream / "genotype.json"

    def search(self, fold: Fold, stream: str) -> Path:
        """Searches a stream's cells unless a finished genotype is there; a half-done search is redone."""
        from nni_emotionnas.config.resources import default_file
        from nni_emotionnas.models.networks import space_config_for
        from nni_emotionnas.search.run import run_search
        from nni_emotionnas.search.strategies import load_strategy_spec

        target = self.genotype_path(fold, stream)
        if target.is_file():
            return target
        owner = target.parent.parent.parent.name
        partial = target.parent.with_name(f".{stream}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        module, space_config = space_config_for(self.experiment, stream, None, self.corpus.deep_dim)
        strategy = self.experiment.resolve(self.experiment.strategy) or default_file("strategies", "darts.yml")
        name, args = load_strategy_spec(strategy)
        run_search(
            space_mod=module,
            space_config=space_config,
            train_dataset=self.corpus.dataset(owner, "train", stream),
            val_dataset=self.corpus.dataset(owner, "val", stream),
            num_classes=len(self.corpus.classes),
            search_config=self.experiment.search,
            strategy_name=name,
            strategy_args=args,
            run_dir=partial,
            branch=stream,
            classes=list(self.corpus.classes),
            fold=owner,
        )
        partial.rename(target.parent)
        return target

    def stream_model(self, fold: Fold, stream: str) -> torch.nn.Module:
        from nni_emotionnas.models.networks import build_model

        genotype = str(self.genotype_path(fold, stream)) if self.needs_search(stream) else None
        input_dim = self.corpus.deep_dim if stream == "deep" else 0
        return build_model(self.experiment, stream, genotype, list(self.corpus.classes), input_dim)

    def build(self, fold: Fold, variant: str) -> torch.nn.Module:
        """A freshly initialised network for a variant (seeded, so reruns build the same weights)."""
        from nni_emotionnas.training.seeding import seed_everything

        seed_everything(self.experiment.seed)
        if variant in SINGLE_STREAMS:
            return self.stream_model(fold, variant)
        spectrogram_net = self.stream_model(fold, "spectrogram")
        deep_net = self.stream_model(fold, "deep")
        head = FusionHead(
            variant,
            spectrogram_net.embedding_dim,
            deep_net.embedding_dim,
            len(self.corpus.classes),
            dominant=self.config.dominant,
            dropout=self.config.fusion_dropout,
        )
        return TwoStreamModel(spectrogram_net, deep_net, head)

    def train_variant(self, fold: Fold, variant: str) -> FoldResult:
        """Trains and tests one variant on one fold unless its `result.json` exists."""
        from nni_emotionnas.spaces.genotype import parameter_count
        from nni_emotionnas.training.evaluator import predict_logits
        from nni_emotionnas.training.fit import fit_fixed
        from nni_emotionnas.training.metrics import score

        out = self.run_dir / "folds" / fold.name / variant
        if (out / "result.json").is_file():
            return FoldResult.load(out / "result.json")
        shutil.rmtree(out, ignore_errors=True)
        branch = branch_of(variant)
        model = self.build(fold, variant)
        train_config = self.experiment.train
        fit = fit_fixed(
            model,
            self.corpus.dataset(fold.name, "train", branch),
            self.corpus.dataset(fold.name, "val", branch),
            None,
            train_config,
            out,
            num_classes=len(self.corpus.classes),
            resume=False,
        )
        test = self.corpus.dataset(fold.name, "test", branch)
        logits, labels = predict_logits(model, test, train_config.batch_size)
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        scores = score(labels, probs.argmax(axis=1), len(self.corpus.classes))
        torch.save(model.state_dict(), out / "model.pt")
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        epoch = re.search(r"epoch=(\d+)", Path(fit.best_checkpoint).name)
        result = FoldResult(
            fold=fold.name,
            variant=variant,
            val_ua=fit.val.ua,
            val_wa=fit.val.wa,
            test_ua=scores.ua,
            test_wa=scores.wa,
            best_epoch=int(epoch.group(1)) if epoch else -1,
            params=parameter_count(model),
            confusion=scores.confusion,
            test_uids=[self.corpus.utterances[i].uid for i in fold.test],
            test_true=labels.tolist(),
            test_pred=probs.argmax(axis=1).tolist(),
            test_probs=probs.round(5).tolist(),
        )
        result.save(out / "result.json")
        return result

    def run(self) -> list[FoldResult]:
        results = []
        steps = [(fold, variant) for fold in self.corpus.folds for variant in self.config.variants]
        bar = tqdm(steps, desc="folds x models", unit="model", disable=not self.progress)
        for fold, variant in bar:
            bar.set_postfix_str(f"{fold.name} {variant}")
            for stream in streams_of(variant):
                if self.needs_search(stream):
                    self.search(fold, stream)
            results.append(self.train_variant(fold, variant))
        return results


def describe_streams(corpus: PreparedCorpus, experiment: ExperimentConfig) -> list[str]:
    """Lines for the report saying which features and models each stream used."""
    deep: dict[str, Any] = dict(corpus.deep_backend or {})
    backend = deep.pop("backend", "?")
    options = ", ".join(f"{k}={v}" for k, v in deep.items()) or "defaults"
    spec = experiment.features.spectrogram
    return [
        f"- corpus: {experiment.corpus.reader}, {len(corpus.utterances)} utterances, classes {corpus.classes}, "
        f"{len(corpus.folds)} folds ({experiment.protocol.kind})",
        f"- spectrogram stream: {spec.duration:g} s, {spec.window_ms:g} ms {spec.window} window, "
        f"{spec.overlap_ms:g} ms overlap, {spec.scale} scale, pooled to {spec.size[0]}x{spec.size[1]}; "
        f"model {experiment.model.spectrogram}",
        f"- deep stream: backend `{backend}` ({options}), {experiment.features.sequence.target_frames} frames; "
        f"model {experiment.model.deep}",
        f"- search: {experiment.run.search}, {experiment.search.epochs} epochs; "
        f"training: {experiment.train.epochs} epochs, best validation UA checkpoint tested",
    ] + ([f"- skipped audio: {len(corpus.skipped)} files (see results.json)"] if corpus.skipped else [])
