"""The pt.darts reference rows of benchmarks/bench_spectrogram_search.py: khanrc/pt.darts is the user's own clone,
never shipped; without one the rows are skipped with a note saying how to add them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_spectrogram_search.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_spectrogram_search", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_are_skipped_without_a_clone(bench: ModuleType, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert bench.available_variants(["fast", "ptdarts", "ptdarts-1st"], None) == ["fast"]
    assert "ptdarts, ptdarts-1st: skipped, pt.darts not found: no clone given (--ptdarts DIR or PTDARTS_PATH)" in (
        capsys.readouterr().out
    )
    (tmp_path / "models").mkdir()
    (tmp_path / "architect.py").write_text("")
    assert bench.available_variants(["ptdarts", "nni"], str(tmp_path)) == ["nni"]
    assert f"{tmp_path} has no models/search_cnn.py (a clone of khanrc/pt.darts expected)" in capsys.readouterr().out
    assert bench.available_variants(["fast"], None) == ["fast"] and capsys.readouterr().out == ""


def test_a_clone_with_its_modules_is_taken(bench: ModuleType, tmp_path: Path) -> None:
    for name in bench.PTDARTS_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert bench.ptdarts_missing(str(tmp_path)) is None
    assert bench.available_variants(["ptdarts", "fast"], str(tmp_path)) == ["ptdarts", "fast"]


def test_the_script_runs_without_pt_darts_and_says_so(tmp_path: Path) -> None:
    """The default variants include the pt.darts row; PTDARTS_PATH pointing nowhere useful skips it, exit 0."""
    env = {**os.environ, "PTDARTS_PATH": str(tmp_path / "nowhere"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(BENCH), "--variants", "ptdarts", "--threads", "1"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert f"ptdarts: skipped, pt.darts not found: {tmp_path / 'nowhere'} has no models/search_cnn.py" in out.stdout
    assert "s/step" not in out.stdout  # no row ran
