"""Malformed experiment files name the key at fault; the console script lists and runs its commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from nni_emotionnas.config.experiment import load_experiment
from nni_emotionnas.errors import ConfigError

SPECTROGRAM = "corpus: {{reader: emodb}}\nfeatures: {{spectrogram: {{{}}}}}\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("corpus: {reader: emodb, path: x}\nprotcol: {}\n", r"exp.yml.protcol: unknown key"),
        ("corpus: {reader: timit}\n", r"exp.yml.corpus.reader: 'timit' is not one of"),
        ("name: x\n", r"exp.yml: give either corpus \(one corpus\) or corpora \(a list of named corpora\)"),
        ("corpus: {reader: emodb}\nprotocol: {k: five}\n", r"exp.yml.protocol.k: expected int"),
        ("corpus: {reader: emodb}\nfeatures: {spectrogram: {size: 140}}\n",
         r"exp.yml.features.spectrogram.size: expected a list"),
        ("corpus: [emodb\n", r"exp.yml: not valid YAML"),
        ("- a\n- b\n", r"exp.yml: expected a mapping at the top level"),
        # values that used to run to a meaningless end (duration 0) or to a traceback
        (SPECTROGRAM.format("duration: 0"), r"exp.yml.features.spectrogram: duration must be positive, got 0"),
        (SPECTROGRAM.format("window_ms: 25, overlap_ms: 25"), r"spectrogram: overlap_ms must be .*smaller than"),
        (SPECTROGRAM.format("overlap_ms: 30"), r"spectrogram: overlap_ms must be .*smaller than window_ms"),
        (SPECTROGRAM.format("size: [16, 16, 16]"), r"spectrogram: size must be two positive integers"),
        (SPECTROGRAM.format("size: [0, 16]"), r"spectrogram: size must be two positive integers"),
        (SPECTROGRAM.format("window: foo"), r"spectrogram: window: 'foo' is not a scipy window name"),
        (SPECTROGRAM.format("sample_rate: 22050"), r"spectrogram: sample_rate must be 16000"),
        ("corpus: {reader: emodb}\nprotocol: {kind: group_kfold, k: 1}\n", r"exp.yml.protocol: k must be at least 2"),
        ("corpus: {reader: emodb}\nprotocol: {validation_speakers: 0}\n",
         r"exp.yml.protocol: validation_speakers must be at least 1, got 0"),
        ("corpus: {reader: emodb}\nfeatures: {n_jobs: 0}\n", r"exp.yml.features: n_jobs must be at least 1"),
        ("corpus: {reader: emodb, on_duplicate: keep}\n", r"exp.yml.corpus.on_duplicate: 'keep' is not one of"),
        ("corpus: {reader: emodb}\ntrain: {lr: 0.001, lr_min: 0.01}\n", r"exp.yml.train: lr_min must be .*below lr"),
        ("corpus: {reader: emodb}\ntrain: {weight_decay: -1}\n", r"exp.yml.train: weight_decay must not be negative"),
        ("corpus: {reader: emodb}\nsearch: {momentum: 1.5}\n", r"exp.yml.search: momentum must be in \[0, 1\)"),
        ("corpus: {reader: emodb}\nrun: {fusion_dropout: 1.0}\n", r"exp.yml.run: fusion_dropout must be in \[0, 1\)"),
        ("corpus: {reader: emodb}\nrun: {jobs: 0}\n", r"exp.yml.run: jobs must be at least 1, got 0"),
        ("corpus: {reader: emodb}\ntrain: {stream_lr: {wav2vec: 0.001}}\n",
         r"exp.yml.train.stream_lr.wav2vec: 'wav2vec' is not one of 'spectrogram', 'deep'"),
        ("corpus: {reader: emodb}\ntrain: {stream_lr: {deep: fast}}\n",
         r"exp.yml.train.stream_lr.deep: expected float"),
        ("corpus: {reader: emodb}\ntrain: {lr_min: 0.0001, stream_lr: {deep: 0.0001}}\n",
         r"exp.yml.train: stream_lr.deep must be positive and above lr_min \(0.0001\), got 0.0001"),
    ],
)
def test_malformed_experiment_names_key(tmp_path, text, message):
    path = tmp_path / "exp.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


def test_numbers_in_any_yaml_spelling_and_a_bom(tmp_path):
    path = tmp_path / "exp.yml"
    text = "corpus: {reader: emodb}\ntrain: {lr: 1e-3, weight_decay: 3E-4}\nfeatures: {spectrogram: {eps: 1.0e-6}}\n"
    path.write_bytes(("\ufeff" + text).encode())  # PyYAML alone reads 1e-3 as the string "1e-3"
    experiment = load_experiment(path)
    assert (experiment.train.lr, experiment.train.weight_decay) == (0.001, 0.0003)
    assert experiment.features.spectrogram.eps == 1e-6


def test_paths_resolve_relative_to_experiment(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "exp.yml"
    path.write_text("corpus: {reader: emodb, path: ../data}\nfeatures: {cache_dir: cache}\n")
    experiment = load_experiment(path)
    assert experiment.resolve(experiment.corpus.path) == tmp_path / "sub" / ".." / "data"
    assert experiment.cache_dir == tmp_path / "sub" / "cache"


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "emotionnas"
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("corpus", "features"):
        assert command in result.stdout


def test_corpus_command_on_emodb(emodb):
    result = run_cli("corpus", str(emodb))
    assert result.returncode == 0, result.stderr
    assert "corpus: emodb (535 utterances, 10 speakers, 7 classes)" in result.stdout
    assert "test08 test [08]" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("all "))
    assert row.split()[1:] == ["127", "81", "46", "69", "71", "79", "62", "535"]


def test_cli_error_names_file(tmp_path):
    (tmp_path / "exp.yml").write_text("corpus: {reader: emodb, path: nowhere}\n")
    result = run_cli("corpus", str(tmp_path / "exp.yml"))
    assert result.returncode == 2
    assert "emotionnas corpus: error:" in result.stderr and "nowhere: corpus folder not found" in result.stderr


@pytest.mark.parametrize("example", sorted(p.parent.name for p in (REPO / "examples").glob("*/experiment.yml")))
def test_shipped_example_experiments_and_their_spaces_load(example: str) -> None:
    """Every experiment file in examples/ parses, with the spaces it names (a typo there would only surface
    after feature extraction); the demo and EmoDB examples use the frequency-keeping spectrogram head and the
    input skips of both streams, sized to their spectrograms; EmoDB starts both streams as their probes (the deep
    one fine-tuned at its own rate), reads every resemblyzer layer and trains two folds at once."""
    from nni_emotionnas.models.networks import space_config_for

    experiment = load_experiment(REPO / "examples" / example / "experiment.yml")
    _, spectrogram = space_config_for(experiment, "spectrogram", None)
    _, deep = space_config_for(experiment, "deep", None)
    assert deep.hidden_size > 0
    if example in ("demo", "emodb"):
        assert spectrogram.pooling == "time_statistics"
        assert spectrogram.input_statistics and deep.input_statistics
        assert spectrogram.input_rows == experiment.features.spectrogram.size[0]
        assert experiment.train.probe_start == (["spectrogram", "deep"] if example == "emodb" else [])
        assert experiment.train.refit == (["deep"] if example == "emodb" else False)  # the demo: its time budget
    if example == "emodb":
        assert experiment.features.deep["layer"] == "weighted" and experiment.run.jobs == 2
        assert (experiment.train.for_stream("deep").lr, experiment.train.for_stream("spectrogram").lr) == (0.001, 0.003)
