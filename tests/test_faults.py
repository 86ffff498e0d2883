"""Faults found from outside (issue 34's matrix): each ends in one line naming the file or key, never in a
traceback, a hang or an overwritten file of the user's."""

from __future__ import annotations

import errno
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_tone

from nni_emotionnas.cli.app import main
from nni_emotionnas.config.experiment import load_experiment
from nni_emotionnas.config.training import TrainConfig
from nni_emotionnas.errors import ConfigError, CorpusError, RunFolderError

EMODB = "corpus: {reader: emodb, path: nowhere}\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_manifest(folder: Path, speakers: int = 3, rows: str = "") -> Path:
    """A manifest of distinct tones: `speakers` speakers x (ang, sad) x 2 utterances, plus `rows`."""
    lines = ["path,label,speaker"]
    for s in range(speakers):
        for j, label in enumerate(["ang", "ang", "sad", "sad"]):
            wav = write_tone(folder / f"s{s}_{j}.wav", seconds=0.5, freq=120 + 30 * j + 7 * s, seed=10 * s + j)
            lines.append(f"{wav.name},{label},s{s}")
    return write(folder / "m.csv", "\n".join(lines) + "\n" + rows)


def write_run_experiment(folder: Path, **changes) -> Path:
    """A run that trains one small network per fold (1 epoch) and nothing else."""
    data = {
        "name": "faults",
        "corpus": {"reader": "manifest", "path": "m.csv"},
        "features": {"n_jobs": 1, "cache_dir": "cache", "spectrogram": {"duration": 0.5, "size": [8, 8]}},
        "model": {"spectrogram": "resnet_small"},
        "train": {"epochs": 1},
        "run": {"variants": ["spectrogram"], "main": "spectrogram", "probes": False, "classic": None},
        **changes,
    }
    return write(folder / "exp.yml", yaml.safe_dump(data))


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# --- 1. tracebacks where a one-line error belongs -------------------------------------------------------------

def test_non_utf8_experiment_file_is_named(tmp_path, capsys):
    exp = tmp_path / "exp.yml"
    exp.write_bytes("name: caf\u00e9\n".encode("latin-1") + EMODB.encode())
    assert main(["corpus", str(exp)]) == 2
    assert f"{exp}: not UTF-8 text (byte 9 is 0xe9); save the config file as UTF-8" in one_line_error(capsys)


def test_non_utf8_manifest_is_named(tmp_path, capsys):
    manifest = write_manifest(tmp_path)
    manifest.write_bytes(manifest.read_bytes() + "s0_0.wav,ang,J\u00fcrgen\n".encode("latin-1"))
    exp = write(tmp_path / "exp.yml", "corpus: {reader: manifest, path: m.csv}\n")
    assert main(["corpus", str(exp)]) == 2
    assert f"{manifest}: not UTF-8 text" in one_line_error(capsys)


def test_invalid_speaker_pattern_names_the_option(tmp_path, capsys):
    write_tone(tmp_path / "corpus" / "ang" / "s1_a.wav", seconds=0.2)
    exp = write(tmp_path / "exp.yml", "corpus: {reader: folders, path: corpus, options: {speaker_pattern: '(['}}\n")
    assert main(["corpus", str(exp)]) == 2
    assert "corpus.options.speaker_pattern: '([' is not a regular expression" in one_line_error(capsys)


def test_negative_seed_in_the_file_and_on_the_command_line(tmp_path, capsys):
    exp = write(tmp_path / "exp.yml", EMODB + "seed: -1\n")
    with pytest.raises(ConfigError, match=r"exp.yml: seed: a seed must be between 0 and 2\*\*32 - 1, got -1"):
        load_experiment(exp)
    with pytest.raises(ConfigError, match=r"exp.yml.run: seeds: a seed must be .* got -3"):
        load_experiment(write(exp, EMODB + "run: {seeds: [1, -3]}\n"))
    exp = write(exp, EMODB)
    for command in (["run", str(exp), "--out", str(tmp_path / "run")], ["train", str(exp), "--stream", "deep"]):
        assert main([*command, "--seed", "-1"]) == 2
        assert "--seed: a seed must be between 0 and 2**32 - 1, got -1" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_unknown_accelerator_names_the_key(tmp_path):
    exp = write(tmp_path / "exp.yml", EMODB + "train: {accelerator: tpuu}\n")
    with pytest.raises(ConfigError, match=r"exp.yml.train.accelerator: 'tpuu' is not one of 'auto', 'cpu'"):
        load_experiment(exp)


@pytest.mark.parametrize("entry", ["trial", "oneshot_trial"])
def test_trial_entries_refuse_malformed_parameters_json(tmp_path, capsys, entry):
    import importlib

    module = importlib.import_module(f"nni_emotionnas.nni_support.{entry}")
    exp = write(tmp_path / "exp.yml", EMODB)
    args = ["--experiment", str(exp), "--stream", "deep", "--out", str(tmp_path / "out")]
    assert module.main([*args, "--parameters", "{'n1/op': tanh"]) == 2
    assert one_line_error(capsys).startswith(f"{entry}: error: --parameters: not valid JSON (")
    assert module.main([*args, "--parameters", "[1, 2]"]) == 2
    assert "--parameters: expected a JSON object of choices, got list" in one_line_error(capsys)


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_space_json_never_overwrites_a_file_that_is_not_a_space(tmp_path, capsys, force):
    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    notes = write(tmp_path / "notes.txt", "my notes, not JSON\n")
    for mine in (picture, notes):
        before = mine.read_bytes()
        assert main(["space-json", "--stream", "deep", "--out", str(mine), *force]) == 2
        assert f"{mine}: exists and is not a search-space JSON; it is left as it is" in one_line_error(capsys)
        assert mine.read_bytes() == before


# --- 3. sizes nobody can run, refused up front ------------------------------------------------------------------

@pytest.mark.parametrize(
    "stream, config, message",
    [
        ("spectrogram", {"channels": 10**9}, r"channels: 1000000000 makes a network of at least \d.\de\+\d+ param"),
        ("deep", {"hidden_size": 10**7}, r"hidden_size: 10000000 makes a network of at least \d.\de\+\d+ param"),
        ("deep", {"input_dim": 10**9}, r"input_dim: 1000000000 makes a network of at least"),
    ],
)
def test_genotype_of_an_impossible_size_is_refused_before_allocating(stream, config, message):
    from nni_emotionnas.spaces.genotype import build_fixed

    record = {"stream": stream, "space_config": config, "num_classes": 4, "architecture": {}}
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"genotype: space_config: {message}.*GB as float32"):
        build_fixed(record)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("stream, key", [("spectrogram", "nodes"), ("deep", "nodes"), ("spectrogram", "layers")])
def test_space_with_absurd_counts_is_refused_by_space_json(tmp_path, capsys, stream, key):
    space = write(tmp_path / "space.yml", f"{key}: 1000000\n")
    started = time.perf_counter()
    assert main(["space-json", "--stream", stream, "--space", str(space), "--out", str(tmp_path / "s.json")]) == 2
    assert f"space.yml: {key}: 1000000 " in one_line_error(capsys)
    assert time.perf_counter() - started < 10 and not (tmp_path / "s.json").exists()


def test_yaml_alias_bomb_is_refused_quickly_and_never_printed(tmp_path, capsys):
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    exp = write(tmp_path / "exp.yml", EMODB + "bombs:\n" + "".join(f"  {line}\n" for line in levels)
                + "run: {variants: *a8}\n")
    started = time.perf_counter()
    assert main(["corpus", str(exp)]) == 2
    line = one_line_error(capsys)
    assert f"{exp}: its YAML aliases (*name) expand to more than 100000 values" in line
    assert time.perf_counter() - started < 10 and len(line) < 400


def test_harmless_aliases_load_and_huge_values_are_shortened_in_errors(tmp_path):
    exp = write(tmp_path / "exp.yml", EMODB + "search: &fast {epochs: 1, lr: 0.01}\ntrain: *fast\n")
    assert load_experiment(exp).train.epochs == 1
    write(exp, EMODB + f"run: {{main: [{', '.join(['spectrogram'] * 20000)}]}}\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(exp)
    assert str(caught.value).startswith("exp.yml.run.main: expected str, got list ['spectrogram',")
    assert len(str(caught.value)) < 300


# --- 4. values that cannot train ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "train, key",
    [("lr: .inf", "lr"), ("lr: .nan", "lr"), ("weight_decay: .inf", "weight_decay"),
     ("fusion_head_lr: .nan", "fusion_head_lr"), ("fusion_finetune_lr: .inf", "fusion_finetune_lr"),
     ("stream_lr: {deep: .nan}", "stream_lr.deep"), ("lr_min: -.inf", "lr_min"), ("momentum: .nan", "momentum")],
)
def test_non_finite_rates_are_refused_naming_the_key(tmp_path, train, key):
    exp = write(tmp_path / "exp.yml", EMODB + f"train: {{{train}}}\n")
    with pytest.raises(ConfigError, match=rf"exp.yml.train.{key}: must be a finite number, got -?(inf|nan)"):
        load_experiment(exp)


def test_non_finite_rate_from_a_tuner_is_refused_naming_the_key():
    from nni_emotionnas.training.trial_run import with_hyperparameters

    with pytest.raises(ConfigError, match=r"^trial parameters.lr: must be a finite number, got nan$"):
        with_hyperparameters(TrainConfig(), {"lr": float("nan")})
    with pytest.raises(ValueError, match=r"^stream_lr.deep must be a finite number, got inf$"):
        TrainConfig(stream_lr={"deep": float("inf")})


# --- 7. a scipy window that needs a parameter ---------------------------------------------------------------------

def test_window_with_a_parameter_is_accepted_and_without_says_it_needs_one(tmp_path):
    from nni_emotionnas.features.spectrogram import SpectrogramExtractor

    exp = write(tmp_path / "exp.yml", EMODB + "features: {spectrogram: {window: [kaiser, 8.0], size: [8, 8]}}\n")
    spectrogram = load_experiment(exp).features.spectrogram
    features = SpectrogramExtractor(spectrogram).extract(np.random.default_rng(0).standard_normal(16000) * 0.1)
    assert features.shape == (8, 8) and np.isfinite(features).all()
    write(exp, EMODB + "features: {spectrogram: {window: kaiser}}\n")
    with pytest.raises(ConfigError, match=r"window: 'kaiser' needs a parameter: give it as a list, e.g. \[kaiser, "):
        load_experiment(exp)
    write(exp, EMODB + "features: {spectrogram: {window: foo}}\n")
    with pytest.raises(ConfigError, match=r"window: 'foo' is not a scipy window"):
        load_experiment(exp)


# --- 2. damaged files in a run folder or the feature cache ----------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(experiment file, run folder) of a finished run: one small network per fold, three folds."""
    folder = tmp_path_factory.mktemp("faults_run")
    write_manifest(folder)
    exp = write_run_experiment(folder)
    assert main(["run", str(exp), "--out", str(folder / "run"), "--quiet"]) == 0
    return exp, folder / "run"


def test_truncated_result_json_is_redone_on_resume_saying_so(finished_run, tmp_path, capsys, caplog):
    import shutil

    exp, original = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir)
    damaged = sorted(run_dir.glob("folds/*/spectrogram/result.json"))[0]
    kept = sorted(run_dir.glob("folds/*/spectrogram/result.json"))[1]
    damaged.write_bytes(damaged.read_bytes()[:40])
    kept_before = kept.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        assert main(["run", str(exp), "--out", str(run_dir), "--quiet"]) == 0
    assert f"{damaged}: damaged, not a saved result" in caplog.text and "training this variant again" in caplog.text
    assert json.loads(damaged.read_text())["variant"] == "spectrogram"  # trained and written again
    assert kept.stat().st_mtime_ns == kept_before  # the intact results were kept


@pytest.mark.parametrize("damage", ["truncated", "text", "nan"])
def test_damaged_standardization_at_predict_names_the_file_and_the_remedy(finished_run, tmp_path, capsys, damage):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[1], run_dir)
    statistics = sorted(run_dir.glob("folds/*/standardization.npz"))[0]
    if damage == "truncated":
        statistics.write_bytes(statistics.read_bytes()[:100])
    else:
        values = np.array(["a", "b"]) if damage == "text" else np.array([[np.nan]] * 8, dtype=np.float32)
        with open(statistics, "wb") as handle:
            np.savez(handle, spectrogram_mean=values, spectrogram_std=np.ones((8, 1), np.float32))
    wav = str(write_tone(tmp_path / "q.wav", seconds=0.5))
    assert main(["predict", str(run_dir), wav]) == 2
    line = one_line_error(capsys)
    assert f"{statistics}: damaged input statistics (" in line
    assert f"rerun `emotionnas run` with --out {run_dir}: it writes the statistics again" in line


def test_damaged_dominance_record_at_predict_names_the_file(tmp_path):
    """`predict` builds a fusion of each fold through `CrossValidation` over a corpus without utterances."""
    from nni_emotionnas.corpora.folds import Fold
    from nni_emotionnas.evaluation.crossval import CrossValidation
    from nni_emotionnas.features.prepared import PreparedCorpus

    exp = write_run_experiment(tmp_path, run={"variants": ["ism"], "dominant": "auto"})
    experiment = load_experiment(exp)
    fold = Fold("test01", (), (), ())
    corpus = PreparedCorpus(experiment, [], ["ang", "sad"], [fold], deep_dim=4)
    record = write(tmp_path / "run" / "folds" / "test01" / "dominance.json", '{"spectrogram": 0.61, "de')
    for text in ('{"spectrogram": 0.61, "de', '{"spectrogram": "high", "deep": 0.5}', "[]"):
        record.write_text(text)
        with pytest.raises(RunFolderError, match=rf"^{record}: damaged .* delete it and the fusion folders beside "
                                                 r"it \(ism/, concat/, .*\), then rerun `emotionnas run`"):
            CrossValidation(experiment, corpus, tmp_path / "run", progress=False).dominant(fold)
    record.write_text('{"spectrogram": 0.61, "deep": 0.5}')
    assert CrossValidation(experiment, corpus, tmp_path / "run", progress=False).dominant(fold) == "spectrogram"


def test_damaged_cached_features_are_extracted_again_with_a_warning(tmp_path, caplog):
    from nni_emotionnas.config.experiment import SpectrogramConfig
    from nni_emotionnas.corpora.records import Utterance
    from nni_emotionnas.features.spectrogram import SpectrogramExtractor
    from nni_emotionnas.features.store import FeatureStore

    utterances = [Utterance(path=write_tone(tmp_path / f"{i}.wav", seconds=0.3, freq=150 + 40 * i), label="ang",
                            speaker="s", session="s", uid=str(i), corpus="test") for i in range(3)]
    store = FeatureStore(tmp_path / "cache")
    extractor = SpectrogramExtractor(SpectrogramConfig(duration=0.3, size=[8, 8]))
    first = store.extract(utterances, extractor, progress=False)
    expected = [np.array(first.load(i)) for i in range(3)]
    truncated, emptied = first.files[0], first.files[2]
    truncated.write_bytes(truncated.read_bytes()[:-17])
    emptied.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        again = store.extract(utterances, extractor, progress=False)
    assert (again.hits, again.misses) == (1, 2)
    for path in (truncated, emptied):
        assert f"{path}: damaged cached features (" in caplog.text
    assert "extracting them again" in caplog.text
    assert all(np.array_equal(np.array(again.load(i)), expected[i]) for i in range(3))


# --- 5. corpus.on_bad_audio: skip ----------------------------------------------------------------------------

def skip_experiment(folder: Path, rows: list[str]) -> Path:
    write(folder / "m.csv", "\n".join(["path,label,speaker", *rows]) + "\n")
    return write_run_experiment(folder, corpus={"reader": "manifest", "path": "m.csv", "on_bad_audio": "skip"})


def test_every_file_skipped_says_so(tmp_path):
    from nni_emotionnas.features.prepared import prepare

    rows = [f"s{s}_{j}.wav,{label},s{s}" for s in range(3) for j, label in enumerate(["ang", "sad"])]
    for row in rows:
        write(tmp_path / row.split(",")[0], f"not audio: {row}")
    exp = skip_experiment(tmp_path, rows)
    with pytest.raises(CorpusError, match=r"^corpus: every one of its 6 audio files was skipped as unusable "
                                          r"\(corpus.on_bad_audio: skip\), e.g. .*s0_0.wav"):
        prepare(load_experiment(exp), streams=["spectrogram"], progress=False)


def test_two_empty_files_are_bad_audio_not_leaked_duplicates(tmp_path, capsys):
    from nni_emotionnas.features.prepared import prepare

    manifest = write_manifest(tmp_path)
    (tmp_path / "empty_a.wav").write_bytes(b"")
    (tmp_path / "empty_b.wav").write_bytes(b"")
    rows = manifest.read_text().splitlines()[1:] + ["empty_a.wav,ang,s0", "empty_b.wav,sad,s1"]
    exp = skip_experiment(tmp_path, rows)
    corpus = prepare(load_experiment(exp), streams=["spectrogram"], progress=False)
    assert sorted(Path(u.path).name for u, _ in corpus.skipped) == ["empty_a.wav", "empty_b.wav"]
    assert len(corpus.utterances) == 12
    write(exp, exp.read_text().replace("on_bad_audio: skip", "on_bad_audio: error"))
    assert main(["features", str(exp), "--streams", "spectrogram"]) == 2
    line = one_line_error(capsys)
    assert "empty_a.wav" in line and "same audio" not in line


def test_symlink_loop_is_skipped_like_other_unreadable_files(tmp_path, capsys):
    from nni_emotionnas.features.prepared import prepare

    manifest = write_manifest(tmp_path)
    (tmp_path / "loop_a.wav").symlink_to(tmp_path / "loop_b.wav")
    (tmp_path / "loop_b.wav").symlink_to(tmp_path / "loop_a.wav")
    exp = skip_experiment(tmp_path, manifest.read_text().splitlines()[1:] + ["loop_a.wav,ang,s2"])
    corpus = prepare(load_experiment(exp), streams=["spectrogram"], progress=False)
    assert [Path(u.path).name for u, _ in corpus.skipped] == ["loop_a.wav"] and len(corpus.utterances) == 12
    write(exp, exp.read_text().replace("on_bad_audio: skip", "on_bad_audio: error"))
    assert main(["corpus", str(exp)]) == 2
    assert "loop_a.wav is missing" in one_line_error(capsys)


# --- 6. misleading messages ----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["trial", "oneshot_trial"])
def test_trial_entry_outside_nnictl_says_it_belongs_to_nnictl(tmp_path, capsys, monkeypatch, entry):
    import importlib

    monkeypatch.delenv("NNI_PLATFORM", raising=False)  # NNI's standalone mode: its sample would be {}
    module = importlib.import_module(f"nni_emotionnas.nni_support.{entry}")
    write_manifest(tmp_path)
    exp = write_run_experiment(tmp_path)
    assert module.main(["--experiment", str(exp), "--stream", "spectrogram", "--out", str(tmp_path / "o")]) == 2
    line = one_line_error(capsys)
    assert "meant to be launched by nnictl" in line and "pass --parameters JSON" in line
    assert "architecture label" not in line and not (tmp_path / "cache").exists()


def test_trial_entry_checks_the_sample_before_extracting_features(tmp_path, capsys):
    from nni_emotionnas.nni_support import trial

    write_manifest(tmp_path)
    exp = write_run_experiment(tmp_path)
    assert trial.main(["--experiment", str(exp), "--stream", "deep", "--parameters", '{"lr": 0.01}',
                       "--out", str(tmp_path / "o")]) == 2
    assert "trial parameters: architecture label" in one_line_error(capsys)
    assert not (tmp_path / "cache").exists()  # nothing extracted for a sample that cannot run


def test_full_disk_while_saving_a_checkpoint_names_the_run_folders_file(tmp_path, capsys, monkeypatch):
    """A full disk cannot be made for one write in a test: the low-level write of Lightning's checkpoint file
    reports ENOSPC, as the file system would."""
    import os

    from fsspec.implementations.local import LocalFileOpener

    write_file = LocalFileOpener.write

    def full(self, *args, **kwargs):  # checkpoints only: they are written in a transaction (a staged file)
        if self.autocommit:
            return write_file(self, *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(LocalFileOpener, "write", full)
    write_manifest(tmp_path)
    exp = write_run_experiment(tmp_path)
    assert main(["run", str(exp), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    line = one_line_error(capsys)
    assert line.startswith(f"emotionnas run: error: {tmp_path / 'run' / 'folds'}") and ".ckpt: no space left" in line
    assert "saving a training checkpoint" in line
