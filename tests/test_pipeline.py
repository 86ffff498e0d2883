"""The whole EmotionNAS run at tiny scale: per-fold search, trained variants, report, resume, predict."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SMALL_CORPUS, SMALL_FEATURES

from nni_emotionnas.config.experiment import load_experiment
from nni_emotionnas.errors import RunFolderError
from nni_emotionnas.evaluation import run as pipeline

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny",
    "seed": 0,
    "corpus": SMALL_CORPUS,
    "protocol": {"folds": ["Ses01-testSes01M", "Ses02-testSes02M"]},
    "features": SMALL_FEATURES,
    "spectrogram_space": "spec.yml",
    "deep_space": "deep.yml",
    "search": {"epochs": 1, "batch_size": 16},
    "train": {
        "epochs": 2, "batch_size": 16, "fusion_init": "streams", "fusion_head_epochs": 1, "fusion_finetune_epochs": 1
    },
    "run": {"variants": ["spectrogram", "deep", "ism"], "search": "per_fold"},
}


def write_experiment(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yml").write_text("channels: 2\nlayers: 3\nnodes: 2\n")
    (folder / "deep.yml").write_text("hidden_size: 8\nnodes: 2\nattention_dim: 4\n")
    path = folder / "exp.yml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def mtimes(run_dir: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in sorted(run_dir.glob(pattern))}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path, dict, dict, dict]:
    """A run interrupted in the fine-tune phase of the first fold's ISM, then resumed to the end."""
    from nni_emotionnas.evaluation import fusion_fit

    folder = tmp_path_factory.mktemp("tiny")
    experiment = load_experiment(write_experiment(folder))
    run_dir = folder / "run"
    real_fit = fusion_fit.fit_fixed

    def interrupting(model, train, val, test, config, out_dir, *args, **kwargs):
        if out_dir.name == "finetune":
            (out_dir / "half-written.ckpt").parent.mkdir(parents=True, exist_ok=True)
            (out_dir / "half-written.ckpt").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real_fit(model, train, val, test, config, out_dir, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(fusion_fit, "fit_fixed", interrupting)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_experiment(experiment, run_dir, progress=False)
    mp.undo()
    patterns = ("folds/*/*/result.json", "folds/*/*/model.pt", "folds/*/search/*/genotype.json")
    before = {k: v for pattern in patterns for k, v in mtimes(run_dir, pattern).items()}
    paths = pipeline.run_experiment(experiment, run_dir, progress=False)
    after = {k: v for pattern in patterns for k, v in mtimes(run_dir, pattern).items()}
    return folder, run_dir, before, after, paths


def test_run_writes_report_genotypes_and_models(finished_run):
    _, run_dir, _, _, paths = finished_run
    results = json.loads(paths["json"].read_text())
    baselines = ["probe_spectrogram", "probe_deep", "classic", "probe_fusion"]
    assert list(results["models"]) == ["spectrogram", "deep", *baselines, "ism"]
    assert [v for v, m in results["models"].items() if m["baseline"]] == baselines
    assert results["models"]["ism"]["dominant"][0] in {"deep", "spectrogram"}
    assert len(results["models"]["ism"]["delta_ua"]) == 2
    for summary in results["models"].values():
        assert summary["folds"] == ["Ses01-testSes01M", "Ses02-testSes02M"]
        assert 0 <= summary["ua_mean"] <= 100 and len(summary["test_ua"]) == 2
        assert sum(map(sum, summary["confusion"])) == 16  # 2 test speakers x 4 emotions x 2 utterances
    markdown = paths["markdown"].read_text()
    assert "| ism |" in markdown and "cf. paper Table 4" in markdown and "backend `fbank`" in markdown
    assert "| probe_deep (baseline) |" in markdown and "ΔUA vs dominant stream" in markdown
    assert "| classic (baseline) |" in markdown and "| probe_fusion (baseline) |" in markdown
    assert paths["csv"].read_text().splitlines()[0].startswith("model,baseline,ua_mean,ua_std")
    for fold in ("Ses01-testSes01M", "Ses02-testSes02M"):
        for stream in ("spectrogram", "deep"):
            record = json.loads((run_dir / "folds" / fold / "search" / stream / "genotype.json").read_text())
            assert record["fold"] == fold and record["stream"] == stream
            assert (run_dir / "folds" / fold / "search" / stream / "cells.png").stat().st_size > 1000
        for variant in ("spectrogram", "deep", "ism"):
            result = json.loads((run_dir / "folds" / fold / variant / "result.json").read_text())
            assert len(result["test_pred"]) == 8 and abs(sum(result["test_probs"][0]) - 1) < 1e-3
            assert (run_dir / "folds" / fold / variant / "model.pt").is_file()
    assert (run_dir / "confusion_ism.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_redoes_nothing_complete(finished_run):
    _, run_dir, before, after, _ = finished_run
    # fold 1 before the interruption: 6 results (2 streams, 2 probes, classic, probe fusion), 2 stream models,
    # 2 searches
    assert len(before) == 6 + 2 + 2
    assert all(after[name] == stamp for name, stamp in before.items())  # the streams were not retrained
    assert len(after) == 14 + 6 + 4
    assert not list(run_dir.rglob("half-written.ckpt"))
    assert not list(run_dir.rglob("*.partial"))


def test_rerun_of_finished_run_trains_nothing_and_other_config_is_refused(finished_run):
    folder, run_dir, _, after, _ = finished_run
    pipeline.run_experiment(load_experiment(folder / "exp.yml"), run_dir, progress=False)
    assert mtimes(run_dir, "folds/*/*/result.json").items() <= after.items()
    other = load_experiment(write_experiment(folder / "other", seed=1))
    with pytest.raises(RunFolderError, match="holds a run of a different experiment"):
        pipeline.run_experiment(other, run_dir, progress=False)


def test_fusion_starts_from_the_folds_saved_streams(finished_run):
    import torch

    from nni_emotionnas.evaluation.crossval import CrossValidation, pick_dominant
    from nni_emotionnas.evaluation.dominance import probe_dominance
    from nni_emotionnas.features.prepared import prepare

    folder, run_dir, _, _, _ = finished_run
    experiment = load_experiment(folder / "exp.yml")
    corpus = prepare(experiment, progress=False)
    fold = corpus.folds[0]
    model = CrossValidation(experiment, corpus, run_dir, progress=False).from_streams(fold, "ism", 0).eval()
    fold_dir = run_dir / "folds" / fold.name
    for stream in ("spectrogram", "deep"):
        saved = torch.load(fold_dir / stream / "model.pt", weights_only=True)
        loaded = getattr(model, f"{stream}_net").state_dict()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    dominant = json.loads((fold_dir / "ism" / "result.json").read_text())["dominant"]
    assert dominant == pick_dominant(probe_dominance(corpus, fold, ("spectrogram", "deep"))) == model.head.dominant
    batch = torch.utils.data.default_collate([corpus.dataset(fold.name, "val", "both")[i][0] for i in range(4)])
    stream_inputs = batch["spectrogram"] if dominant == "spectrogram" else {k: batch[k] for k in ("frames", "mask")}
    torch.testing.assert_close(model(batch), getattr(model, f"{dominant}_net")(stream_inputs))


def test_auto_dominance_reads_every_non_test_speaker_and_no_test_label(finished_run):
    """`dominant: auto` scores each stream's probe leave-one-speaker-out over the fold's training and validation
    speakers: the test speaker's labels cannot move it, a training speaker's can."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from nni_emotionnas.evaluation.dominance import probe_dominance
    from nni_emotionnas.evaluation.probe import utterance_statistics
    from nni_emotionnas.features.prepared import prepare

    folder, run_dir, _, _, _ = finished_run
    corpus = prepare(load_experiment(folder / "exp.yml"), progress=False)
    fold = corpus.folds[0]
    scores = probe_dominance(corpus, fold, ("spectrogram", "deep"))
    # the run kept the scores it chose by, for `predict` (which has no corpus to score)
    assert json.loads((run_dir / "folds" / fold.name / "dominance.json").read_text()) == pytest.approx(scores)
    original_labels = np.asarray(corpus.labels)

    # the same number computed directly: one probe per held-out non-test speaker, UA averaged over speakers
    indices = list(fold.train + fold.val)
    speakers = np.array([corpus.utterances[i].speaker for i in indices])
    labels = np.asarray(corpus.labels)[indices]
    features = utterance_statistics(corpus, fold.name, indices, "deep")
    per_speaker = []
    for speaker in sorted(set(speakers)):
        held = speakers == speaker
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
        probe.fit(features[~held], labels[~held])
        per_speaker.append(balanced_accuracy_score(labels[held], probe.predict(features[held])))
    assert len(per_speaker) >= 2
    assert scores["deep"] == pytest.approx(float(np.mean(per_speaker)))

    def relabelled(indices: list[int]) -> list:
        """The corpus' utterances with the labels of `indices` rotated among themselves."""
        rotated = dict(zip(indices, [corpus.utterances[i].label for i in indices[1:] + indices[:1]]))
        return [dataclasses.replace(u, label=rotated.get(i, u.label)) for i, u in enumerate(corpus.utterances)]

    original = corpus.utterances
    try:
        corpus.utterances = relabelled(list(fold.test))
        assert (np.asarray(corpus.labels)[list(fold.test)] != original_labels[list(fold.test)]).any()
        assert probe_dominance(corpus, fold, ("spectrogram", "deep")) == scores
        corpus.utterances = relabelled(list(fold.train)[: len(fold.train) // 2])
        assert probe_dominance(corpus, fold, ("spectrogram", "deep")) != scores
    finally:
        corpus.utterances = original


def test_predict_command_on_a_wav(finished_run, tmp_path):
    from conftest import write_tone

    _, run_dir, _, _, _ = finished_run
    wav = write_tone(tmp_path / "question.wav", seconds=1.2, rate=22050, channels=2)
    script = Path(sys.executable).parent / "emotionnas"
    result = subprocess.run([str(script), "predict", str(run_dir), str(wav)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    path, label, ranked = result.stdout.strip().split("\t")
    assert path == str(wav) and label in {"ang", "hap", "neu", "sad"}
    probabilities = [float(item.split()[1]) for item in ranked.split(", ")]
    assert ranked.startswith(label) and abs(sum(probabilities) - 1) < 0.01


def test_same_config_and_seed_give_same_numbers(finished_run):
    folder, run_dir, _, _, _ = finished_run
    again = load_experiment(
        write_experiment(
            folder / "again", protocol={"folds": ["Ses01-testSes01M"]}, run={"variants": ["deep"], "main": "deep"}
        )
    )
    pipeline.run_experiment(again, folder / "again" / "run", progress=False)
    fold = "folds/Ses01-testSes01M"
    first = json.loads((run_dir / fold / "deep" / "result.json").read_text())
    second = json.loads((folder / "again" / "run" / fold / "deep" / "result.json").read_text())
    runs = (run_dir, folder / "again/run")
    searched = [json.loads((d / fold / "search/deep/genotype.json").read_text()) for d in runs]
    assert searched[0]["architecture"] == searched[1]["architecture"]
    assert second["test_probs"] == first["test_probs"] and second["val_ua"] == first["val_ua"]


def test_folds_in_two_workers_give_the_sequential_runs_numbers(finished_run):
    folder, run_dir, _, after, _ = finished_run
    parallel = load_experiment(write_experiment(folder / "jobs", run={**TINY["run"], "jobs": 2}))
    pipeline.run_experiment(parallel, folder / "jobs" / "run", progress=False)
    names = [name for name in after if name.endswith("result.json")]
    assert len(names) == 14
    for name in names:
        first, second = (json.loads((d / name).read_text()) for d in (run_dir, folder / "jobs" / "run"))
        assert (second["test_probs"], second["val_ua"]) == (first["test_probs"], first["val_ua"]), name
    # `jobs` changes no result: the sequential run's folder counts as this experiment's finished run
    same = load_experiment(folder / "exp.yml")
    pipeline.run_experiment(dataclasses.replace(same, run=dataclasses.replace(same.run, jobs=2)), run_dir,
                            progress=False)
    assert mtimes(run_dir, "folds/*/*/result.json").items() <= after.items()


def test_read_only_finished_run_is_reported_not_rewritten(finished_run, capsys):
    from filesystems import read_only

    from nni_emotionnas.cli.app import main

    folder, run_dir, _, _, _ = finished_run
    assert json.loads((run_dir / "corpus.json").read_text())["folds"].keys() == {"Ses01-testSes01M", "Ses02-testSes02M"}
    before = mtimes(run_dir, "*")
    with read_only(run_dir):
        assert main(["run", str(folder / "exp.yml"), "--out", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "read-only, holds this experiment's finished run; nothing to do, nothing written" in out
    assert "| ism |" in out and mtimes(run_dir, "*") == before


def test_predict_faults_are_one_line_errors(finished_run, tmp_path, capsys):
    import shutil

    from conftest import write_tone

    from nni_emotionnas.cli.app import main

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[1], run_dir)
    wav = str(write_tone(tmp_path / "q.wav", seconds=1.2))
    model = run_dir / "folds" / "Ses01-testSes01M" / "ism" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    assert main(["predict", str(run_dir), wav]) == 2
    assert f"{model}: damaged or not this run's model" in capsys.readouterr().err
    model.unlink()
    assert main(["predict", str(run_dir), wav]) == 2
    err = capsys.readouterr().err
    assert f"{model}: missing; delete that fold's ism/ folder and rerun `emotionnas run` with --out {run_dir}" in err
    # a run folder handed over by someone else names a fairseq checkpoint: unpickling it could run any code
    snapshot = json.loads((run_dir / "experiment.json").read_text())
    snapshot["features"]["deep"] = {"backend": "wav2vec", "checkpoint": str(tmp_path / "crafted.pt")}
    (run_dir / "experiment.json").write_text(json.dumps(snapshot))
    assert main(["predict", str(run_dir), wav]) == 2
    err = capsys.readouterr().err
    assert f"loads {tmp_path / 'crafted.pt'} by unpickling it" in err and "pass --trust-checkpoints" in err
    assert main(["predict", "--trust-checkpoints", str(run_dir), wav]) == 2
    assert "crafted.pt not found" in capsys.readouterr().err  # trusted: it goes on to load the checkpoint


def test_scratch_fusion_trains_both_streams_jointly_without_stream_variants(finished_run):
    """`fusion_init: scratch`: no stream variant is trained first; ISM's whole model starts from the seeded
    random weights `build` gives and every part of it moves in one joint fit (no head/fine-tune phases)."""
    import torch

    from nni_emotionnas.evaluation.crossval import CrossValidation
    from nni_emotionnas.features.prepared import prepare

    folder, _, _, _, _ = finished_run
    experiment = load_experiment(
        write_experiment(
            folder / "scratch",
            protocol={"folds": ["Ses01-testSes01M"]},
            train={**TINY["train"], "fusion_init": "scratch"},
            run={"variants": ["ism"], "main": "ism", "dominant": "deep", "probes": False, "classic": None},
        )
    )
    run_dir = folder / "scratch" / "run"
    pipeline.run_experiment(experiment, run_dir, progress=False)
    fold_dir = run_dir / "folds" / "Ses01-testSes01M"
    assert sorted(p.name for p in fold_dir.iterdir() if p.is_dir()) == ["ism", "search"]
    assert not (fold_dir / "ism" / "head").exists() and not (fold_dir / "ism" / "finetune").exists()
    result = json.loads((fold_dir / "ism" / "result.json").read_text())
    assert result["best_step"] is None and result["dominant"] == "deep"
    corpus = prepare(experiment, progress=False)
    start = CrossValidation(experiment, corpus, run_dir, progress=False).build(corpus.folds[0], "ism", 0).state_dict()
    trained = torch.load(fold_dir / "ism" / "model.pt", weights_only=True)
    for part in ("spectrogram_net.", "deep_net.", "head."):
        weights = [k for k in start if k.startswith(part) and start[k].is_floating_point() and "running" not in k]
        assert weights and any(not torch.equal(start[k], trained[k]) for k in weights), part
