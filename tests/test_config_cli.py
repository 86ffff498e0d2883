"""Malformed experiment files name the key at fault; the console script lists and runs its commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from nni_emotionnas.config.experiment import load_experiment
from nni_emotionnas.errors import ConfigError


@pytest.mark.parametrize(
    "text, message",
    [
        ("corpus: {reader: emodb, path: x}\nprotcol: {}\n", r"exp.yml.protcol: unknown key"),
        ("corpus: {reader: timit}\n", r"exp.yml.corpus.reader: 'timit' is not one of"),
        ("name: x\n", r"exp.yml.corpus: required key is missing"),
        ("corpus: {reader: emodb}\nprotocol: {k: five}\n", r"exp.yml.protocol.k: expected int"),
        ("corpus: {reader: emodb}\nfeatures: {spectrogram: {size: 140}}\n",
         r"exp.yml.features.spectrogram.size: expected a list"),
        ("corpus: [emodb\n", r"exp.yml: not valid YAML"),
        ("- a\n- b\n", r"exp.yml: expected a mapping at the top level"),
    ],
)
def test_malformed_experiment_names_key(tmp_path, text, message):
    path = tmp_path / "exp.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


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
