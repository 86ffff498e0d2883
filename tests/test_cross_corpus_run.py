"""A cross-corpus run at tiny scale: nothing learned depends on the test corpus (a run whose test corpus is
other audio learns the same search, statistics, weights and validation scores; the baselines' predictions do
not move when the test corpus' labels do), the report per target corpus, and resume refusals."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_cross_corpus import two_corpora, write_folders_corpus

from nni_emotionnas.config.experiment import load_experiment
from nni_emotionnas.errors import RunFolderError
from nni_emotionnas.evaluation import run as pipeline
from nni_emotionnas.evaluation.heldout import HeldOutOutputs

pytestmark = pytest.mark.slow

FOLD = "alpha-to-beta"
SETTINGS = {
    "name": "xcorpus",
    "spectrogram_space": "spec.yml",
    "deep_space": "deep.yml",
    "search": {"epochs": 1, "batch_size": 16},
    "train": {"epochs": 2, "batch_size": 16, "fusion_head_epochs": 1, "fusion_finetune_epochs": 1},
    "run": {"variants": ["spectrogram", "deep", "ism"], "classic": {"feature_set": "eGeMAPSv02"}},
}
LEARNED = ("search/spectrogram/genotype.json", "search/deep/genotype.json", "standardization.npz",
           "spectrogram/model.pt", "deep/model.pt", "ism/model.pt")


def write_experiment(folder: Path, **changes) -> Path:
    (folder / "spec.yml").write_text("channels: 2\nlayers: 3\nnodes: 2\n")
    (folder / "deep.yml").write_text("hidden_size: 8\nnodes: 2\nattention_dim: 4\n")
    path = folder / "exp.yml"
    path.write_text(yaml.safe_dump({**two_corpora(folder), **SETTINGS, **changes}))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("xcorpus")
    pipeline.run_experiment(load_experiment(write_experiment(folder)), folder / "run", progress=False)
    return folder, folder / "run"


def replace_beta_audio(folder: Path) -> None:
    shutil.rmtree(folder / "beta")
    write_folders_corpus(folder / "beta", ["ang", "hap", "neu", "sad"], base=420.0, seed=99)


def same_content(a: Path, b: Path) -> bool:
    if a.suffix == ".pt":
        left, right = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)
    if a.suffix == ".npz":
        left, right = np.load(a), np.load(b)
        return sorted(left.files) == sorted(right.files) and all(np.array_equal(left[k], right[k]) for k in left)
    return untimed(json.loads(a.read_text())) == untimed(json.loads(b.read_text()))


def untimed(record):
    """A JSON record without its wall-clock `seconds` (a search's duration)."""
    if isinstance(record, dict):
        return {k: untimed(v) for k, v in record.items() if k != "seconds"}
    return [untimed(v) for v in record] if isinstance(record, list) else record


@pytest.fixture(scope="module")
def other_audio_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("other")
    write_experiment(folder)
    replace_beta_audio(folder)
    pipeline.run_experiment(load_experiment(folder / "exp.yml"), folder / "run", progress=False)
    return folder / "run"


def test_nothing_learned_reads_the_test_corpus(finished, other_audio_run):
    """Search, standardisation statistics, the dominant stream's probes, every network's weights and its
    validation scores, and the held-out outputs the fusion head learns from are the same when the test corpus
    is other audio; only the test predictions move."""
    _, run_dir = finished
    fold, other = run_dir / "folds" / FOLD, other_audio_run / "folds" / FOLD
    for name in LEARNED:
        assert same_content(fold / name, other / name), f"{name} depends on the test corpus"
    for stream in ("spectrogram", "deep"):  # what the fusion head learns from: held-out outputs of the streams
        a, b = (HeldOutOutputs.load(d / stream / "heldout.npz") for d in (fold, other))
        for field in ("learn", "groups", "outputs"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), f"{stream} held-out {field}"
        assert all(np.array_equal(x, y) for x, y in zip(a.trained_on, b.trained_on))
    for variant in ("spectrogram", "deep", "ism"):
        a, b = (json.loads((d / variant / "result.json").read_text()) for d in (fold, other))
        assert (a["val_ua"], a["best_epoch"]) == (b["val_ua"], b["best_epoch"])  # validation never saw beta
        assert a["test_probs"] != b["test_probs"]  # but testing did


def test_baselines_ignore_the_test_corpus_labels(finished):
    from nni_emotionnas.evaluation.crossval import CrossValidation
    from nni_emotionnas.evaluation.dominance import probe_dominance
    from nni_emotionnas.features.prepared import prepare

    folder, run_dir = finished
    experiment = load_experiment(folder / "exp.yml")
    corpus = prepare(experiment, progress=False)
    rotate = {c: corpus.classes[(i + 1) % len(corpus.classes)] for i, c in enumerate(corpus.classes)}
    relabelled = dataclasses.replace(corpus, utterances=[
        u.with_label(rotate[u.label]) if u.corpus == "beta" else u for u in corpus.utterances])
    fold = corpus.fold(FOLD)
    assert not np.array_equal(corpus.labels[list(fold.test)], relabelled.labels[list(fold.test)])
    baselines = ("probe_spectrogram", "probe_deep", "classic", "probe_fusion")
    fits = [{v: CrossValidation(experiment, c, run_dir, progress=False).baseline_fit(fold, v, 0).test_probs
             for v in baselines} for c in (corpus, relabelled)]
    for variant in baselines:
        assert np.array_equal(fits[0][variant], fits[1][variant]), variant
    assert probe_dominance(corpus, fold, ("spectrogram", "deep")) == probe_dominance(relabelled, fold,
                                                                                    ("spectrogram", "deep"))


def test_report_per_target_corpus(finished):
    folder, run_dir = finished
    results = json.loads((run_dir / "results.json").read_text())
    target = results["corpora"]["beta"]
    assert list(results["corpora"]) == ["beta"]
    assert target["counts"] == {"name": "beta", "read": 32, "kept": 32, "dropped": {}, "missing": []}
    assert target["models"]["ism"]["ua_mean"] == results["models"]["ism"]["ua_mean"]  # one fold, one target
    markdown = (run_dir / "results.md").read_text()
    assert "## Target corpus: beta" in markdown and "- corpus alpha: 40 utterances read, 32 kept" in markdown
    assert "dropped outside the shared classes: bor 8" in markdown


def test_in_domain_reference_row(finished, tmp_path):
    folder, run_dir = finished
    reference = tmp_path / "within"
    reference.mkdir()
    models = {"ism": {"ua_mean": 50.0, "wa_mean": 60.0}, "deep": {"ua_mean": 40.0, "wa_mean": 45.0}}
    (reference / "results.json").write_text(json.dumps({"classes": ["ang", "hap", "neu", "sad"], "models": models}))
    data = yaml.safe_load((folder / "exp.yml").read_text())
    data["run"]["in_domain"] = {"beta": str(reference)}
    (folder / "with_reference.yml").write_text(yaml.safe_dump(data))
    experiment = load_experiment(folder / "with_reference.yml")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "run.json").unlink()  # a resumed run: every result is there, only the report is written again
    (copy / "experiment.json").write_text(json.dumps(pipeline.experiment_snapshot(experiment), indent=1))
    pipeline.run_experiment(experiment, copy, progress=False)
    ism = json.loads((copy / "results.json").read_text())["corpora"]["beta"]["models"]["ism"]
    assert f"| ism | {ism['ua_mean']:.2f} / {ism['wa_mean']:.2f} | 50.00 / 60.00 | {ism['ua_mean'] - 50:+.2f} / " \
           f"{ism['wa_mean'] - 60:+.2f} |" in (copy / "results.md").read_text()


def test_resume_refuses_a_corpus_added_removed_or_changed(finished):
    folder, run_dir = finished
    data = yaml.safe_load((folder / "exp.yml").read_text())
    added = {**data, "corpora": [*data["corpora"], {"name": "gamma", "reader": "folders", "path": "alpha"}]}
    removed = {**data, "corpora": data["corpora"][:1], "protocol": {"kind": "leave_one_speaker_out"}}
    for changed, name in ((added, "added"), (removed, "removed")):
        path = folder / f"{name}.yml"
        path.write_text(yaml.safe_dump(changed))
        with pytest.raises(RunFolderError, match=r"holds a run of a different experiment \(corpora"):
            pipeline.run_experiment(load_experiment(path), run_dir, progress=False)
    victim = next((folder / "beta" / "sad").iterdir())
    aside = victim.rename(folder / victim.name)
    try:
        with pytest.raises(RunFolderError, match=r"corpus changed .*1 utterance\(s\) removed .*beta/sad"):
            pipeline.run_experiment(load_experiment(folder / "exp.yml"), run_dir, progress=False)
    finally:
        aside.rename(victim)
