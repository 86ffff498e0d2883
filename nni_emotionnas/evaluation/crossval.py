"""The whole EmotionNAS protocol over every fold: search both streams, train each variant, test.

Everything a fold needs is redone only if its final file is missing (`evaluation.run_folder` has the layout),
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

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
from nni_emotionnas.evaluation.run_folder import RunFolder
from nni_emotionnas.features.prepared import PreparedCorpus
from nni_emotionnas.models.fusion import FusionHead, TwoStreamModel
from nni_emotionnas.training.metrics import SERScores

if TYPE_CHECKING:
    from nni_emotionnas.evaluation.frozen_streams import FrozenStreams

SELECTED_WEIGHTS = "selected.pt"  # under `train.refit`: a network's weights before its refit (in a variant folder)


def stream_of(variant: str) -> str:
    """The stream whose data a variant reads (`PreparedCorpus.dataset`): its own, or `both` for a fusion."""
    return variant if variant in SINGLE_STREAMS else PROBE_VARIANTS.get(variant, "both")


def streams_of(variant: str) -> tuple[str, ...]:
    """The streams whose features a variant reads (probes read one stream's, but train no network; `classic`
    and `probe_fusion` read none of their own)."""
    if variant in (CLASSIC, PROBE_FUSION):
        return ()
    return (stream_of(variant),) if stream_of(variant) != "both" else SINGLE_STREAMS


class CrossValidation:
    """Runs (or resumes) every fold of an experiment in `run_dir`."""

    def __init__(self, experiment: ExperimentConfig, corpus: PreparedCorpus, run_dir: Path, progress: bool = True):
        self.experiment = experiment
        self.corpus = corpus
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.config: RunConfig = experiment.run
        self.folder = RunFolder(self.run_dir, self.seeds[0])
        self._baselines: dict[tuple[str, str, int], BaselineFit] = {}  # (fold, variant, seed) -> probabilities
        self._classic_features: Optional[np.ndarray] = None
        self._dominance: dict[str, dict[str, float]] = {}  # fold -> each stream's probe UA over its speakers
        self._supplementary: dict[tuple[str, str], tuple[Any, Any]] = {}  # (fold, baseline) -> held-out outputs
        self._probe_features: dict[tuple[str, str], np.ndarray] = {}  # (fold, stream): this fold's only
        self._frozen: dict[tuple[str, int, bool], FrozenStreams] = {}  # (fold, seed, refitted)

    @property
    def crossfit(self) -> bool:
        """Fusions learn from held-out stream outputs, which the stream steps then leave behind."""
        fusions = any(v in FUSION_VARIANTS for v in self.config.variants)
        return fusions and self.experiment.train.fusion_init == "crossfit"

    def needs_search(self, stream: str) -> bool:
        model = self.experiment.model
        return (model.spectrogram == "darts") if stream == "spectrogram" else (model.deep == "searched")

    def search_owner(self, fold: Fold) -> Fold:
        """The fold whose training speakers a stream's cells are searched on (`run.search`)."""
        return fold if self.config.search == "per_fold" else self.corpus.folds[0]

    def genotype_path(self, fold: Fold, stream: str) -> Path:
        return self.folder.search(self.search_owner(fold).name, stream) / "genotype.json"

    def search(self, fold: Fold, stream: str) -> Path:
        """Searches a stream's cells unless a finished genotype is there; a half-done search is redone."""
        from nni_emotionnas.evaluation.search_request import SearchRequest

        target = self.genotype_path(fold, stream)
        if target.is_file():
            return target
        partial = target.parent.with_name(f".{stream}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        SearchRequest(self.experiment, stream, self.search_owner(fold).name, partial).run(self.corpus)
        partial.rename(target.parent)
        return target

    @property
    def seeds(self) -> list[int]:
        return list(self.config.seeds or [self.experiment.seed])

    def variant_dir(self, fold: Fold, variant: str, seed: int) -> Path:
        return self.folder.variant(fold.name, variant, seed)

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
            record = self.folder.dominance(fold.name)
            if record.is_file():
                from nni_emotionnas.evaluation.dominance import load_dominance

                self._dominance[fold.name] = load_dominance(record, SINGLE_STREAMS)
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
        if self.experiment.train.fusion_init == "crossfit":
            return self.stacked_model(fold, variant, seed)
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

    def stacked_model(self, fold: Fold, variant: str, seed: int) -> torch.nn.Module:
        """A `crossfit` fusion's shape as its finished `result.json` records it (dominant stream first), for
        its `model.pt` to load into (`predict`)."""
        from nni_emotionnas.evaluation.stacking import stream_order
        from nni_emotionnas.models.output_fusion import LinearStream, OutputFusionHead, StackedFusion

        dominant = FoldResult.load(self.folder.result(fold.name, variant, seed)).dominant
        classes = len(self.corpus.classes)
        head = OutputFusionHead(variant, stream_order(dominant, [*SINGLE_STREAMS, *self.config.supplementary]), classes)
        networks = {stream: self.stream_model(fold, stream) for stream in SINGLE_STREAMS}
        return StackedFusion(networks, {name: LinearStream(0, classes) for name in self.config.supplementary}, head)

    def from_streams(self, fold: Fold, variant: str, seed: int, refitted: bool = False) -> TwoStreamModel:
        """A fusion model whose stream networks are the fold's trained ones and whose head starts as the
        dominant stream (`FusionHead.start_from`). Refitted streams (`train.refit`) are the ones chosen on the
        validation speakers (`SELECTED_WEIGHTS`), or with `refitted` the ones refitted on them too."""
        model = self.build(fold, variant, seed)
        for stream in SINGLE_STREAMS:
            name = SELECTED_WEIGHTS if self.experiment.train.refits(stream) and not refitted else "model.pt"
            load_weights(getattr(model, f"{stream}_net"), self.variant_dir(fold, stream, seed) / name)
        model.head.start_from(getattr(model, f"{model.head.dominant}_net").classifier)
        return model

    def frozen_streams(self, fold: Fold, seed: int, refitted: bool = False) -> FrozenStreams:
        """The cached embeddings of the streams `from_streams` loads, shared by the fold's fusions
        (`evaluation.frozen_streams`); other folds' and seeds' caches are let go."""
        from nni_emotionnas.evaluation.frozen_streams import FrozenStreams

        self._frozen = {key: cache for key, cache in self._frozen.items() if key[:2] == (fold.name, seed)}
        return self._frozen.setdefault((fold.name, seed, refitted), FrozenStreams())

    def supplementary_held_out(self, fold: Fold, name: str) -> tuple[Any, Any]:
        """(held-out outputs, fitted classifier) of a `run.supplementary` baseline on this fold, once per run."""
        from nni_emotionnas.evaluation.classic import classic_classifier
        from nni_emotionnas.evaluation.probe import probe_classifier
        from nni_emotionnas.evaluation.stacked_fit import baseline_held_out

        if (fold.name, name) not in self._supplementary:
            make = (lambda: classic_classifier(self.config.classic)) if name == CLASSIC else probe_classifier
            speakers = [u.speaker for u in self.corpus.utterances]
            self._supplementary[fold.name, name] = baseline_held_out(
                fold, speakers, self.corpus.labels, len(self.corpus.classes), self.config.crossfit_folds, make,
                self.baseline_features(fold, name),
            )
        return self._supplementary[fold.name, name]

    def train_stacked(self, fold: Fold, variant: str, seed: int, config: Any) -> tuple[torch.nn.Module, FoldResult]:
        """A `crossfit` fusion: its head chosen and trained on the fold's held-out stream outputs, tested on the
        fold's streams; the model (streams, linear streams, head) and its result."""
        from nni_emotionnas.evaluation.heldout import HeldOutOutputs
        from nni_emotionnas.evaluation.stacked_fit import HELD_OUT, fit_stacked, stacked_model
        from nni_emotionnas.spaces.genotype import parameter_count

        held = {s: HeldOutOutputs.load(self.variant_dir(fold, s, seed) / HELD_OUT) for s in SINGLE_STREAMS}
        linear = {name: self.supplementary_held_out(fold, name) for name in self.config.supplementary}
        held.update({name: outputs for name, (outputs, _) in linear.items()})
        dominant = None if self.config.dominant == "auto" else self.config.dominant
        classes = len(self.corpus.classes)
        head, choice, probs = fit_stacked(variant, held, dominant, self.corpus.labels, classes,
                                          config.class_weights == "balanced", self.config.fusion_margin)
        networks = {stream: load_weights(self.stream_model(fold, stream), self.folder.model(fold.name, stream, seed))
                    for stream in SINGLE_STREAMS}
        model = stacked_model(networks, {name: fitted for name, (_, fitted) in linear.items()}, head, classes)
        result = self.fold_result(
            fold, variant, seed, None, probs, self.corpus.labels[list(fold.test)], -1, parameter_count(head),
            dominant=choice.dominant, best_step=choice.step, left_start=choice.left_start,
            head_cv_ua=max(choice.cv_ua.values(), default=None),
        )
        return model, result

    def stream_held_out(self, fold: Fold, stream: str, seed: int, config: Any, epochs: int, test_logits: np.ndarray,
                        out: Path) -> None:
        """Trains the stream once per speaker group of the fold's non-test speakers, as the fold's own (same
        start, `epochs` epochs), without that group, and keeps its outputs for the group (`HELD_OUT`)."""
        from nni_emotionnas.evaluation.heldout import held_out_outputs
        from nni_emotionnas.evaluation.probe_start import start_stream
        from nni_emotionnas.evaluation.stacked_fit import HELD_OUT
        from nni_emotionnas.features.prepared import StreamDataset
        from nni_emotionnas.training.evaluator import predict_logits
        from nni_emotionnas.training.fit import fit_epochs

        def fit_and_predict(train: np.ndarray, held: np.ndarray) -> np.ndarray:
            model = self.build(fold, stream, seed)
            data = StreamDataset(self.corpus, train, stream, fold.name)
            start_stream(model, stream, data, config)
            fit_epochs(model, data, config, epochs, out / "heldout", len(self.corpus.classes))
            return predict_logits(model, StreamDataset(self.corpus, held, stream, fold.name), config.batch_size)[0]

        speakers = [u.speaker for u in self.corpus.utterances]
        outputs = held_out_outputs(fold, speakers, self.corpus.labels, self.config.crossfit_folds, fit_and_predict,
                                   test_logits)
        shutil.rmtree(out / "heldout", ignore_errors=True)
        outputs.save(out / HELD_OUT)

    def baseline_features(self, fold: Fold, baseline: str) -> np.ndarray:
        """What a linear baseline reads for every utterance: openSMILE functionals (`classic`, once per run) or
        the statistics of its stream's fold inputs (`probe_<stream>`)."""
        return self.classic_features() if baseline == CLASSIC else self.probe_features(fold, PROBE_VARIANTS[baseline])

    def probe_features(self, fold: Fold, stream: str) -> np.ndarray:
        """What a probe of `stream` reads for every utterance in this fold (`utterance_statistics`): shared by
        the probe rows of every seed and the probe streams of the fusions, computed once per fold."""
        from nni_emotionnas.evaluation.probe import utterance_statistics

        key = (fold.name, stream)
        if key not in self._probe_features:
            kept = {k: v for k, v in self._probe_features.items() if k[0] == fold.name}  # other folds are done
            kept[key] = utterance_statistics(self.corpus, fold.name, range(len(self.corpus.utterances)), stream)
            self._probe_features = kept
        return self._probe_features[key]

    def classic_features(self) -> np.ndarray:
        """The corpus' openSMILE functionals for `classic` (extracted once into the feature store)."""
        from nni_emotionnas.evaluation.classic import classic_features

        if self._classic_features is None:
            self._classic_features = classic_features(self.corpus, self.config.classic, self.progress)
        return self._classic_features

    def needs_classic(self, variants: set[str]) -> bool:
        """Whether `variants` read the openSMILE functionals: the baseline, its fusion, or the supplementary stream
        of the fusions (read under `fusion_init: crossfit` only)."""
        in_fusions = CLASSIC in self.config.supplementary and self.crossfit
        return self.config.classic is not None and (bool(variants & {CLASSIC, PROBE_FUSION}) or in_fusions)

    def baseline_fit(self, fold: Fold, variant: str, seed: int) -> BaselineFit:
        """A baseline's test probabilities on this fold (`evaluation.baseline_fit`), computed once per run."""
        from nni_emotionnas.evaluation.baseline_fit import fit_on_fold, mean_probabilities
        from nni_emotionnas.evaluation.classic import classic_classifier
        from nni_emotionnas.evaluation.probe import probe_classifier

        key = (fold.name, variant, seed)
        if key not in self._baselines:
            if variant == PROBE_FUSION:
                members = [self.baseline_fit(fold, member, seed) for member in self.config.fused_baselines]
                self._baselines[key] = mean_probabilities(members)
            else:
                features = self.baseline_features(fold, variant)
                classifier = (classic_classifier(self.config.classic, seed) if variant == CLASSIC
                              else probe_classifier(seed))
                self._baselines[key] = fit_on_fold(classifier, features, self.corpus.labels, fold)
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
        from nni_emotionnas.evaluation.heldout import validation_outputs
        from nni_emotionnas.evaluation.probe_start import start_stream
        from nni_emotionnas.evaluation.stacked_fit import HELD_OUT
        from nni_emotionnas.spaces.genotype import parameter_count
        from nni_emotionnas.training.evaluator import predict_logits
        from nni_emotionnas.training.fit import fit_epochs, fit_fixed

        seed = self.seeds[0] if seed is None else seed
        out = self.variant_dir(fold, variant, seed)
        if (finished := FoldResult.load_finished(out / "result.json")) is not None:
            return finished
        shutil.rmtree(out, ignore_errors=True)
        if variant in BASELINES:
            fit = self.baseline_fit(fold, variant, seed)
            test_labels = self.corpus.labels[list(fold.test)]
            result = self.fold_result(fold, variant, seed, None, fit.test_probs, test_labels, -1, fit.params)
            result.save(out / "result.json")
            return result
        stream = stream_of(variant)
        train_config = dataclasses.replace(self.experiment.train.for_stream(variant), seed=seed)
        train, val = self.corpus.dataset(fold.name, "train", stream), self.corpus.dataset(fold.name, "val", stream)
        everyone = self.corpus.dataset(fold.name, "train+val", stream) if train_config.refits(variant) else None
        classes = len(self.corpus.classes)
        extra: dict[str, Any] = {}
        val_logits = None
        if variant in SINGLE_STREAMS or train_config.fusion_init == "scratch":
            model = self.build(fold, variant, seed)
            from_probe = variant in SINGLE_STREAMS and start_stream(model, variant, train, train_config)
            fit = fit_fixed(model, train, val, None, train_config, out, classes, resume=False, keep_initial=from_probe)
            best_epoch = fit.best_epoch
            if variant in SINGLE_STREAMS and self.crossfit and self.config.stream_held_out == "validation":
                val_logits = predict_logits(model, val, train_config.batch_size)[0]
            if everyone is not None:
                torch.save(model.state_dict(), out / SELECTED_WEIGHTS)
                model = self.build(fold, variant, seed)
                if variant in SINGLE_STREAMS:
                    start_stream(model, variant, everyone, train_config)
                extra["refit_epochs"] = best_epoch + 1
                fit_epochs(model, everyone, train_config, best_epoch + 1, out / "refit", classes)
        elif train_config.fusion_init == "crossfit":
            model, result = self.train_stacked(fold, variant, seed, train_config)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), out / "model.pt")
            result.save(out / "result.json")
            return result
        else:
            model = self.from_streams(fold, variant, seed)
            fit, extra["best_step"], phase_epochs = fit_fusion_from_streams(
                model, train, val, train_config, out, classes, self.frozen_streams(fold, seed)
            )
            best_epoch = fit.best_epoch
            if everyone is not None:
                model = self.from_streams(fold, variant, seed, refitted=True)
                refit_fusion(model, everyone, train_config, phase_epochs, out, classes,
                             self.frozen_streams(fold, seed, refitted=True))
                extra["refit_epochs"] = sum(phase_epochs.values())
        if variant not in SINGLE_STREAMS:
            extra["dominant"] = model.head.dominant
        logits, labels = predict_logits(model, self.corpus.dataset(fold.name, "test", stream), train_config.batch_size)
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        if val_logits is not None:
            validation_outputs(fold, val_logits, logits).save(out / HELD_OUT)
        elif variant in SINGLE_STREAMS and self.crossfit:
            self.stream_held_out(fold, variant, seed, train_config, best_epoch + 1, logits, out)
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
        needs_streams = self.experiment.train.fusion_init != "scratch" or self.config.dominant == "auto"
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
            standardization.save(self.folder.standardization(fold.name))
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
        (`search: once`) and the corpus' openSMILE functionals are done here first, so no two workers attempt
        them."""
        from nni_emotionnas.evaluation.fold_workers import run_in_workers

        if self.config.search == "once":
            for stream in sorted({s for _, variant, _ in steps for s in self.searched_streams(variant)}):
                bar.set_postfix_str(f"search {stream}")
                self.search(self.corpus.folds[0], stream)
        if self.needs_classic({variant for _, variant, _ in steps}):
            bar.set_postfix_str("openSMILE functionals")
            self.classic_features()  # here with every extraction worker, not inside each fold worker
        units = [(fold.name, [s for s in steps if s[0] == fold.name]) for fold in self.corpus.folds]
        working: dict[str, str] = {}

        def progress(kind: str, label: str, step: tuple) -> None:
            if kind == "started":
                working[label] = step_text(step)
            else:
                working.pop(label, None)
                bar.update(1)
            bar.set_postfix_str(", ".join(working.values()))

        done = run_in_workers(self.run_step, units, self.config.jobs, progress)
        return [result for label, _ in units for result in done[label]]


def load_weights(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return module


def step_text(step: tuple[str, str, int]) -> str:
    """A (fold, variant, seed) step as the progress bar shows it."""
    return f"{step[0]} {step[1]} seed {step[2]}"


def pick_dominant(ua: dict[str, float]) -> str:
    """The stream with the higher UA; deep on a tie (the paper's dominant stream)."""
    return "spectrogram" if ua["spectrogram"] > ua["deep"] else "deep"
