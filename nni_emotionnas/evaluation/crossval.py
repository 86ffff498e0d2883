"""The whole EmotionNAS protocol over every fold: search both streams, train each variant, test, report.

Run folder layout (everything a fold needs is redone only if its final file is missing, so an interrupted
run resumes where it stopped):

    <run>/folds/<fold>/search/<branch>/genotype.json   searched cells of a stream (per fold, or once)
    <run>/folds/<fold>/<variant>/result.json            test scores of a trained variant (written last)
    <run>/folds/<fold>/<variant>/model.pt               its best-validation-UA weights (with `train.refit`:
                                                        refitted on training + validation speakers)
    <run>/folds/<fold>/<variant>/selected.pt            with `train.refit`: the weights chosen on validation
    <run>/folds/<fold>/seed<s>/<variant>/...            the same for the second and later `run.seeds`
    <run>/folds/<fold>/standardization.npz              input statistics of the fold's training speakers
    <run>/results.{md,csv,json}, confusion_<variant>.png
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from nni_emotionnas.config.experiment import (
    BASELINES,
    CLASSIC,
    FUSION_VARIANTS,
    PROBE_FUSION,
    PROBE_VARIANTS,
    SINGLE_STREAMS,
    ExperimentConfig,
    RunConfig,
)
from nni_emotionnas.corpora.folds import Fold
from nni_emotionnas.evaluation.baseline_fit import BaselineFit
from nni_emotionnas.evaluation.report import FoldResult, write_text
from nni_emotionnas.features.prepared import PreparedCorpus
from nni_emotionnas.models.fusion import FusionHead, TwoStreamModel
from nni_emotionnas.training.metrics import SERScores

SELECTED_WEIGHTS = "selected.pt"  # under `train.refit`: a network's weights before its refit


def branch_of(variant: str) -> str:
    return variant if variant in SINGLE_STREAMS else PROBE_VARIANTS.get(variant, "both")


def streams_of(variant: str) -> tuple[str, ...]:
    """The streams whose features a variant reads (probes read one stream's, but train no network; `classic`
    and `probe_fusion` read none of their own)."""
    if variant in (CLASSIC, PROBE_FUSION):
        return ()
    return (branch_of(variant),) if branch_of(variant) != "both" else SINGLE_STREAMS


DOMINANCE_RECORD = "dominance.json"  # per fold: each stream's probe UA over the non-test speakers


class CrossValidation:
    """Runs (or resumes) every fold of an experiment in `run_dir`."""

    def __init__(self, experiment: ExperimentConfig, corpus: PreparedCorpus, run_dir: Path, progress: bool = True):
        self.experiment = experiment
        self.corpus = corpus
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.config: RunConfig = experiment.run
        self._baselines: dict[tuple[str, str, int], BaselineFit] = {}  # (fold, variant, seed) -> probabilities
        self._classic_features: Optional[np.ndarray] = None
        self._dominance: dict[str, dict[str, float]] = {}  # fold -> each stream's probe UA over its speakers

    def needs_search(self, stream: str) -> bool:
        model = self.experiment.model
        return (model.spectrogram == "darts") if stream == "spectrogram" else (model.deep == "searched")

    def genotype_path(self, fold: Fold, stream: str) -> Path:
        owner = fold if self.config.search == "per_fold" else self.corpus.folds[0]
        return self.fold_dir(owner) / "search" / stream / "genotype.json"

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

    @property
    def seeds(self) -> list[int]:
        return list(self.config.seeds or [self.experiment.seed])

    def fold_dir(self, fold: Fold) -> Path:
        return self.run_dir / "folds" / fold.name

    def variant_dir(self, fold: Fold, variant: str, seed: int) -> Path:
        """`folds/<fold>/<variant>` for the first seed (what `predict` reads), `folds/<fold>/seed<s>/<variant>`
        for the others."""
        base = self.fold_dir(fold)
        return base / variant if seed == self.seeds[0] else base / f"seed{seed}" / variant

    def stream_model(self, fold: Fold, stream: str) -> torch.nn.Module:
        from nni_emotionnas.models.networks import build_model

        genotype = str(self.genotype_path(fold, stream)) if self.needs_search(stream) else None
        input_dim = self.corpus.deep_dim if stream == "deep" else 0
        return build_model(self.experiment, stream, genotype, list(self.corpus.classes), input_dim)

    def dominant(self, fold: Fold) -> str:
        """`run.dominant`, or with `auto` the stream whose probe scores the better UA leave-one-speaker-out
        over the fold's non-test speakers (deep on a tie; `evaluation.dominance`), the same for every seed.
        The scores are kept in the fold's `dominance.json`, which `predict` reads (it has no corpus)."""
        if self.config.dominant != "auto":
            return self.config.dominant
        if fold.name not in self._dominance:
            record = self.fold_dir(fold) / DOMINANCE_RECORD
            if record.is_file():
                self._dominance[fold.name] = json.loads(record.read_text())
            else:
                from nni_emotionnas.evaluation.dominance import probe_dominance

                self._dominance[fold.name] = probe_dominance(self.corpus, fold, SINGLE_STREAMS)
                write_text(record, json.dumps(self._dominance[fold.name], indent=1))
        return pick_dominant(self._dominance[fold.name])

    def build(self, fold: Fold, variant: str, seed: Optional[int] = None) -> torch.nn.Module:
        """A freshly initialised network for a variant (seeded, so reruns build the same weights)."""
        from nni_emotionnas.training.seeding import seed_everything

        seed = self.seeds[0] if seed is None else seed
        seed_everything(seed)
        if variant in SINGLE_STREAMS:
            return self.stream_model(fold, variant)
        spectrogram_net = self.stream_model(fold, "spectrogram")
        deep_net = self.stream_model(fold, "deep")
        head = FusionHead(
            variant,
            spectrogram_net.embedding_dim,
            deep_net.embedding_dim,
            len(self.corpus.classes),
            dominant=self.dominant(fold),
            dropout=self.config.fusion_dropout,
            gate=self.config.ism_gate,
        )
        return TwoStreamModel(spectrogram_net, deep_net, head)

    def from_streams(self, fold: Fold, variant: str, seed: int, refitted: bool = False) -> TwoStreamModel:
        """A fusion model whose stream networks are the fold's trained ones and whose head starts as the
        dominant stream (`FusionHead.start_from`). Under `train.refit` the streams are the ones chosen on the
        validation speakers (`SELECTED_WEIGHTS`), or with `refitted` the ones refitted on them too."""
        model = self.build(fold, variant, seed)
        name = SELECTED_WEIGHTS if self.experiment.train.refit and not refitted else "model.pt"
        for stream in SINGLE_STREAMS:
            weights = self.variant_dir(fold, stream, seed) / name
            getattr(model, f"{stream}_net").load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.head.start_from(getattr(model, f"{model.head.dominant}_net").classifier)
        return model

    def baseline_fit(self, fold: Fold, variant: str, seed: int) -> BaselineFit:
        """A baseline's test probabilities on this fold (`evaluation.baseline_fit`), computed once per run."""
        from nni_emotionnas.evaluation.baseline_fit import fit_on_fold, mean_probabilities
        from nni_emotionnas.evaluation.classic import classic_classifier, classic_features
        from nni_emotionnas.evaluation.probe import probe_classifier, probe_stream, utterance_statistics

        key = (fold.name, variant, seed)
        if key not in self._baselines:
            if variant == PROBE_FUSION:
                members = [self.baseline_fit(fold, member, seed) for member in self.config.fused_baselines]
                self._baselines[key] = mean_probabilities(members)
            elif variant == CLASSIC:
                if self._classic_features is None:
                    self._classic_features = classic_features(self.corpus, self.config.classic, self.progress)
                classifier = classic_classifier(self.config.classic, seed)
                self._baselines[key] = fit_on_fold(classifier, self._classic_features, self.corpus.labels, fold)
            else:
                everyone = range(len(self.corpus.utterances))
                features = utterance_statistics(self.corpus, fold.name, everyone, probe_stream(variant))
                self._baselines[key] = fit_on_fold(probe_classifier(seed), features, self.corpus.labels, fold)
        return self._baselines[key]

    def fold_result(
        self, fold: Fold, variant: str, seed: int, val: Optional[SERScores], probs: np.ndarray, labels: np.ndarray,
        best_epoch: int, params: int, **extra: Any,
    ) -> FoldResult:
        """`val` is None for baselines, which learn from the validation speakers too."""
        from nni_emotionnas.training.metrics import score

        scores = score(labels, probs.argmax(axis=1), len(self.corpus.classes))
        return FoldResult(
            fold=fold.name,
            variant=variant,
            val_ua=None if val is None else val.ua,
            val_wa=None if val is None else val.wa,
            test_ua=scores.ua,
            test_wa=scores.wa,
            best_epoch=best_epoch,
            params=params,
            confusion=scores.confusion,
            test_uids=[self.corpus.utterances[i].uid for i in fold.test],
            test_true=labels.tolist(),
            test_pred=probs.argmax(axis=1).tolist(),
            test_probs=probs.round(5).tolist(),
            seed=seed,
            baseline=variant in BASELINES,
            **extra,
        )

    def train_variant(self, fold: Fold, variant: str, seed: Optional[int] = None) -> FoldResult:
        """Trains and tests one variant on one fold and seed unless its `result.json` exists."""
        from nni_emotionnas.evaluation.fusion_fit import fit_fusion_from_streams, refit_fusion
        from nni_emotionnas.evaluation.probe_start import start_stream
        from nni_emotionnas.spaces.genotype import parameter_count
        from nni_emotionnas.training.evaluator import predict_logits
        from nni_emotionnas.training.fit import fit_epochs, fit_fixed

        seed = self.seeds[0] if seed is None else seed
        out = self.variant_dir(fold, variant, seed)
        if (out / "result.json").is_file():
            return FoldResult.load(out / "result.json")
        shutil.rmtree(out, ignore_errors=True)
        if variant in BASELINES:
            fit = self.baseline_fit(fold, variant, seed)
            test_labels = self.corpus.labels[list(fold.test)]
            result = self.fold_result(fold, variant, seed, None, fit.test_probs, test_labels, -1, fit.params)
            result.save(out / "result.json")
            return result
        branch = branch_of(variant)
        train_config = dataclasses.replace(self.experiment.train.for_stream(variant), seed=seed)
        train, val = self.corpus.dataset(fold.name, "train", branch), self.corpus.dataset(fold.name, "val", branch)
        everyone = self.corpus.dataset(fold.name, "train+val", branch) if train_config.refit else None
        classes = len(self.corpus.classes)
        extra: dict[str, Any] = {}
        if variant in SINGLE_STREAMS or train_config.fusion_init == "scratch":
            model = self.build(fold, variant, seed)
            from_probe = variant in SINGLE_STREAMS and start_stream(model, variant, train, train_config)
            fit = fit_fixed(model, train, val, None, train_config, out, classes, resume=False, keep_initial=from_probe)
            best_epoch = fit.best_epoch
            if everyone is not None:
                torch.save(model.state_dict(), out / SELECTED_WEIGHTS)
                model = self.build(fold, variant, seed)
                if variant in SINGLE_STREAMS:
                    start_stream(model, variant, everyone, train_config)
                extra["refit_epochs"] = best_epoch + 1
                fit_epochs(model, everyone, train_config, best_epoch + 1, out / "refit", classes)
        else:
            model = self.from_streams(fold, variant, seed)
            fit, extra["best_step"], phase_epochs = fit_fusion_from_streams(
                model, train, val, train_config, out, classes
            )
            best_epoch = fit.best_epoch
            if everyone is not None:
                model = self.from_streams(fold, variant, seed, refitted=True)
                refit_fusion(model, everyone, train_config, phase_epochs, out, classes)
                extra["refit_epochs"] = sum(phase_epochs.values())
        if variant not in SINGLE_STREAMS:
            extra["dominant"] = model.head.dominant
        logits, labels = predict_logits(model, self.corpus.dataset(fold.name, "test", branch), train_config.batch_size)
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        torch.save(model.state_dict(), out / "model.pt")
        for leftover in ("checkpoints", "head/checkpoints", "finetune/checkpoints"):
            shutil.rmtree(out / leftover, ignore_errors=True)
        params = parameter_count(model)
        result = self.fold_result(fold, variant, seed, fit.val, probs, labels, best_epoch, params, **extra)
        result.save(out / "result.json")
        return result

    def steps(self) -> list[tuple[Fold, str, int]]:
        """(fold, variant, seed) in training order: a fold's streams before its fusions, which need them
        (trained weights for `fusion_init: streams`, validation UA for `dominant: auto`)."""
        needs_streams = self.experiment.train.fusion_init == "streams" or self.config.dominant == "auto"
        steps = []
        for fold in self.corpus.folds:
            for seed in self.seeds:
                variants = list(self.config.variants)
                if needs_streams and any(v in FUSION_VARIANTS for v in variants):
                    variants = list(dict.fromkeys([*SINGLE_STREAMS, *variants]))
                ordered = sorted(variants, key=lambda v: v in FUSION_VARIANTS)
                steps += [(fold, variant, seed) for variant in ordered]
        return steps

    def searched_streams(self, variant: str) -> list[str]:
        """The streams whose cells `variant` needs searched (baselines train no network)."""
        return [s for s in (streams_of(variant) if variant not in BASELINES else ()) if self.needs_search(s)]

    def run_step(self, fold_name: str, variant: str, seed: int) -> FoldResult:
        """One step of `steps()`: the fold's statistics for `predict`, the searches it needs, then the variant."""
        fold = self.corpus.fold(fold_name)
        standardization = self.corpus.standardization(fold.name)
        if standardization is not None:
            standardization.save(self.fold_dir(fold) / "standardization.npz")
        for stream in self.searched_streams(variant):
            self.search(fold, stream)
        return self.train_variant(fold, variant, seed)

    def run(self) -> list[FoldResult]:
        steps = [(fold.name, variant, seed) for fold, variant, seed in self.steps()]
        bar = tqdm(total=len(steps), desc="folds x models", unit="model", disable=not self.progress)
        with bar:
            if self.config.jobs > 1 and len(self.corpus.folds) > 1:
                return self._run_in_workers(steps, bar)
            results = []
            for step in steps:
                bar.set_postfix_str(step_text(step))
                results.append(self.run_step(*step))
                bar.update(1)
            return results

    def _run_in_workers(self, steps: list[tuple[str, str, int]], bar: tqdm) -> list[FoldResult]:
        """`run.jobs` > 1: each fold's steps in one worker, folds side by side; a search shared by every fold
        (`search: once`) runs here first, so no two workers attempt it."""
        from nni_emotionnas.evaluation.fold_workers import run_in_workers

        if self.config.search == "once":
            for stream in sorted({s for _, variant, _ in steps for s in self.searched_streams(variant)}):
                bar.set_postfix_str(f"search {stream}")
                self.search(self.corpus.folds[0], stream)
        units = [(fold.name, [s for s in steps if s[0] == fold.name]) for fold in self.corpus.folds]
        working: dict[str, str] = {}

        def progress(kind: str, label: str, step: tuple) -> None:
            if kind == "started":
                working[label] = step_text(step)
            else:
                working.pop(label, None)
                bar.update(1)
            bar.set_postfix_str(", ".join(working.values()))

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = self.experiment.train.threads or max(1, cores // self.config.jobs)
        done = run_in_workers(self.run_step, units, self.config.jobs, progress, threads)
        return [result for label, _ in units for result in done[label]]


def step_text(step: tuple[str, str, int]) -> str:
    """A (fold, variant, seed) step as the progress bar shows it."""
    return f"{step[0]} {step[1]} seed {step[2]}"


def pick_dominant(ua: dict[str, float]) -> str:
    """The stream with the higher UA; deep on a tie (the paper's dominant stream)."""
    return "spectrogram" if ua["spectrogram"] > ua["deep"] else "deep"


def describe_streams(corpus: PreparedCorpus, experiment: ExperimentConfig) -> list[str]:
    """Lines for the report saying which features and models each stream used."""
    deep: dict[str, Any] = dict(corpus.deep_backend or {})
    backend = deep.pop("backend", "?")
    options = ", ".join(f"{k}={v}" for k, v in deep.items()) or "defaults"
    spec = experiment.features.spectrogram
    return [
        f"- corpus: {corpus_names(experiment)}, {len(corpus.utterances)} utterances, classes {corpus.classes}, "
        f"{len(corpus.folds)} folds ({experiment.protocol.kind})",
        f"- spectrogram stream: {spec.duration:g} s, {spec.window_ms:g} ms {spec.window} window, "
        f"{spec.overlap_ms:g} ms overlap, {spec.scale} scale, pooled to {spec.size[0]}x{spec.size[1]}; "
        f"model {experiment.model.spectrogram}",
        f"- deep stream: backend `{backend}` ({options}), {experiment.features.sequence.target_frames} frames; "
        f"model {experiment.model.deep}",
        f"- search: {experiment.run.search}, {experiment.search.epochs} epochs; "
        f"training: {experiment.train.epochs} epochs, best validation UA checkpoint tested",
        f"- standardisation: {STANDARDIZATION[experiment.features.standardize]}",
        *describe_baselines(experiment.run),
    ] + ([f"- skipped audio: {len(corpus.skipped)} files (see results.json)"] if corpus.skipped else [])


def corpus_names(experiment: ExperimentConfig) -> str:
    """`emodb`, or `emodb + urdu` with several corpora."""
    return " + ".join(c.name or c.reader for c in experiment.corpus_blocks)


STANDARDIZATION = {
    "train_speakers": "`train_speakers` (statistics of each fold's training speakers)",
    "speaker": "`speaker` (each speaker's own statistics, test speakers' from their unlabelled test utterances: "
    "transductive)",
    "none": "`none` (raw features; the linear baselines still standardise on the speakers they learn from)",
}


def describe_baselines(run: RunConfig) -> list[str]:
    """Report lines saying what the baseline rows are."""
    lines = []
    if run.classic is not None:
        c = run.classic
        lines.append(
            f"- classic (baseline): openSMILE {c.feature_set} functionals, logistic regression C={c.C:g}"
            + (", balanced class weights" if c.class_weight == "balanced" else "")
        )
    if PROBE_FUSION in run.variants:
        lines.append(f"- probe_fusion (baseline): mean of the class probabilities of {', '.join(run.fused_baselines)}")
    if any(v in BASELINES for v in run.variants):
        lines.append("- baselines learn from every speaker a fold does not test (training and validation speakers)")
    return lines
