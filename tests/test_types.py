"""mypy (configured in pyproject.toml) passes on the spaces and the search code, and its check of the space
protocol catches a space module that lacks a name or gives one the wrong signature."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mypy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True)


def test_mypy_passes_on_spaces_and_search() -> None:
    result = mypy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_a_space_module_breaking_the_protocol_is_a_type_error(tmp_path: Path) -> None:
    (tmp_path / "broken_space.py").write_text(  # the spectrogram space without `draw`, one signature wrong
        "from nni_emotionnas.spaces.spectrogram import (CONFIG_CLASS, DEFAULT_CONFIG_FILE, build_oneshot_space,\n"
        "    build_space, derive_architecture, readable_genotype, upgrade_architecture, upgrade_config)\n"
        "def input_names(label: str) -> None: ...\n"
    )
    (tmp_path / "uses_it.py").write_text(
        "import broken_space\nfrom nni_emotionnas.spaces import SearchSpace\nchecked: SearchSpace = broken_space\n"
    )
    result = mypy("--follow-imports=silent", str(tmp_path / "uses_it.py"))
    assert result.returncode == 1, result.stdout
    assert 'Incompatible types in assignment (expression has type Module, variable has type "SearchSpace")' in (
        result.stdout
    )
    assert "input_names" in result.stdout and "draw" in result.stdout
