"""A wheel carries the default search spaces, strategies and demo experiment, and the package finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_wheel_ships_and_finds_defaults(tmp_path):
    build = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("nni_emotionnas-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("search_spaces/spectrogram_darts.yml", "search_spaces/recurrent_cell.yml",
                     "strategies/darts.yml", "examples/demo/experiment.yml"):
        assert f"nni_emotionnas/{expected}" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = (
        "import nni_emotionnas, nni_emotionnas.config.resources as r;"
        "print(nni_emotionnas.__file__);"
        "print(r.default_file('strategies', 'darts.yml'));"
        "print(r.default_file('examples', 'demo/experiment.yml'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target)}, check=True).stdout.split()
    assert all(line.startswith(str(target)) for line in out), out
