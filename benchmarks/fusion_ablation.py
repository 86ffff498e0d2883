"""Fusion mechanisms side by side on a finished `emotionnas run` folder, without training any stream again.

    python benchmarks/fusion_ablation.py examples/emodb/experiment.yml RUN_FOLDER [RUN_FOLDER2 ...]

The run must have used `train.fusion_init: crossfit`, so each stream left its held-out outputs
(`heldout.npz`) beside its model. For every fold and seed this script rebuilds the held-out outputs of the
linear streams (`classic`, `probe_spectrogram`, `probe_deep`), refits fusion heads and prints the test UA (mean
over folds and seeds) of each mechanism beside the streams and the baselines:

- `deep stream alone`: where a fusion that keeps a deep-dominant start ends;
- `ISM as run`: the run's own ISM row;
- `mean, N streams`: the plain mean of the streams' log-probabilities (no calibration, nothing learnt);
- `calibrated mean, N streams`: the shipped start (one temperature per stream), kept;
- `ISM, margin M`: the same start, left when the cross-validation over the speaker groups gains M;
- `ISM, in-sample head`: the shipped head trained on the fold's own streams' outputs for the speakers they
  learnt from instead of held-out outputs (the stacking problem);
- `mean of probabilities (5 streams)`: the arithmetic mean, as `probe_fusion` averages its three members;
- `joint stream weights (shrinkage by grouped CV)`: one weight per stream fitted jointly on the fused log-loss,
  pulled toward the calibrated mean by a penalty chosen by cross-validation over the speaker groups;
- `weights by held-out UA above chance`: the calibrated streams weighted by how far each beats chance.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize
from sklearn.metrics import balanced_accuracy_score

from nni_emotionnas.config.experiment import load_experiment
from nni_emotionnas.evaluation.crossval import CrossValidation
from nni_emotionnas.evaluation.heldout import HeldOutOutputs, log_probabilities
from nni_emotionnas.evaluation.stacking import (
    choose_head,
    class_weights,
    fit_head,
    fit_temperature,
    head_logits,
    stream_order,
)
from nni_emotionnas.features.prepared import prepare
from nni_emotionnas.training.evaluator import predict_logits

STREAMS = ("spectrogram", "deep")
LINEAR = ("classic", "probe_spectrogram", "probe_deep")


def ua(labels: np.ndarray, logits: np.ndarray) -> float:
    return float(balanced_accuracy_score(labels, logits.argmax(axis=1))) * 100


def in_sample_outputs(cv: CrossValidation, fold, stream: str, seed: int, learn: np.ndarray) -> np.ndarray:
    """The fold's own (refitted) stream's log-probabilities for the utterances it learnt from."""
    from nni_emotionnas.features.prepared import StreamDataset

    net = cv.stream_model(fold, stream)
    net.load_state_dict(torch.load(cv.variant_dir(fold, stream, seed) / "model.pt", weights_only=True))
    data = StreamDataset(cv.corpus, learn, stream, fold.name)
    return log_probabilities(predict_logits(net, data, 64)[0])


SHRINKAGE = (0.0, 0.01, 0.1, 1.0, 10.0)


def weighted_log_loss(weights: np.ndarray, rows: np.ndarray, labels: np.ndarray, class_weight: np.ndarray) -> float:
    """Class-weighted log-loss of softmax(sum_s weights[s] * rows[s]) (rows: streams x utterances x classes)."""
    fused = log_probabilities(np.tensordot(weights, rows, 1))
    return float(-(class_weight[labels] * fused[np.arange(len(labels)), labels]).sum() / class_weight[labels].sum())


def joint_weights(rows: np.ndarray, labels: np.ndarray, class_weight: np.ndarray, shrinkage: float) -> np.ndarray:
    """Non-negative stream weights minimising the fused log-loss plus `shrinkage` x the squared distance from the
    calibrated mean's weights (1 / (streams x temperature))."""
    start = np.array([1 / fit_temperature(r, labels, class_weight) / len(rows) for r in rows])
    result = minimize(lambda w: weighted_log_loss(w, rows, labels, class_weight) + shrinkage * ((w - start) ** 2).sum(),
                      start, bounds=[(0, None)] * len(rows), method="L-BFGS-B")
    return result.x


def cv_joint_weights(rows: np.ndarray, labels: np.ndarray, groups: np.ndarray, classes: int) -> np.ndarray:
    """`joint_weights` with the shrinkage whose weights gave the lowest log-loss on held-out speaker groups."""
    class_weight = class_weights(labels, classes, True)
    losses = {}
    for shrinkage in SHRINKAGE:
        losses[shrinkage] = sum(
            weighted_log_loss(joint_weights(rows[:, groups != g], labels[groups != g], class_weight, shrinkage),
                              rows[:, groups == g], labels[groups == g], class_weight) * (groups == g).sum()
            for g in np.unique(groups))
    return joint_weights(rows, labels, class_weight, min(losses, key=losses.get))


def mechanisms(cv: CrossValidation, fold, seed: int, classes: int) -> dict[str, float]:
    held = {s: HeldOutOutputs.load(cv.variant_dir(fold, s, seed) / "heldout.npz") for s in STREAMS}
    held.update({name: cv.supplementary_held_out(fold, name)[0] for name in LINEAR})
    learn, groups = held["deep"].learn, held["deep"].groups
    labels, test_labels = cv.corpus.labels[learn], cv.corpus.labels[list(fold.test)]
    rows = {s: h.outputs for s, h in held.items()}
    tests = {s: h.test for s, h in held.items()}
    ism = json.loads((cv.variant_dir(fold, "ism", seed) / "result.json").read_text())["test_ua"] * 100
    out: dict[str, float] = {"deep stream alone": ua(test_labels, tests["deep"]), "ISM as run": ism}

    def stacked(name: str, streams: list[str], train_rows: dict, margin: float | None = None) -> None:
        choice = choose_head("ism", streams, train_rows, labels, groups, classes, margin=margin)
        head = fit_head("ism", stream_order(choice.dominant, streams), train_rows, labels, classes, choice.penalty,
                        pooled=True)
        out[name] = ua(test_labels, head_logits(head, tests))

    for count in (2, 3, 5):
        streams = [*STREAMS, *LINEAR][:count]
        out[f"mean, {count} streams"] = ua(test_labels, sum(tests[s] for s in streams))
        stacked(f"calibrated mean, {count} streams", streams, rows)
    everything = [*STREAMS, *LINEAR]
    for margin in (0.0, 0.05):
        stacked(f"ISM, margin {margin:g} (5 streams)", everything, rows, margin)
    own = {s: in_sample_outputs(cv, fold, s, seed, learn) for s in STREAMS}
    stacked("ISM, in-sample head (2 streams, margin 0)", list(STREAMS), own, 0.0)
    out["mean of probabilities (5 streams)"] = ua(test_labels, np.mean([np.exp(t) for t in tests.values()], axis=0))
    stacked_rows, stacked_tests = np.stack([rows[s] for s in everything]), np.stack([tests[s] for s in everything])
    weights = cv_joint_weights(stacked_rows, labels, groups, classes)
    out["joint stream weights (shrinkage by grouped CV)"] = ua(test_labels, np.tensordot(weights, stacked_tests, 1))
    class_weight = class_weights(labels, classes, True)
    above = np.array([max(ua(labels, rows[s]) - 100 / classes, 0.0) / fit_temperature(rows[s], labels, class_weight)
                      for s in everything])
    out["weights by held-out UA above chance"] = ua(test_labels, np.tensordot(above, stacked_tests, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    experiment = load_experiment(args.experiment)
    corpus = prepare(experiment, progress=False)
    table: dict[str, list[float]] = defaultdict(list)
    for run_dir in args.run_dirs:
        cv = CrossValidation(experiment, corpus, run_dir, progress=False)
        results = json.loads((run_dir / "results.json").read_text())["models"]
        for fold in corpus.folds:
            for seed in cv.seeds:
                for name, value in mechanisms(cv, fold, seed, len(corpus.classes)).items():
                    table[name].append(value)
        for name in ("probe_deep", "probe_fusion"):
            table[name] += results[name]["test_ua"]
    print("| mechanism | test UA % (mean ± std over folds and seeds) |")
    print("| --- | --- |")
    for name, values in table.items():
        print(f"| {name} | {np.mean(values):.2f} ± {np.std(values):.2f} |")


if __name__ == "__main__":
    main()
