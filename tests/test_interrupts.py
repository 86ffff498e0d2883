"""Ctrl-C and SIGTERM stop `emotionnas run` within seconds, during the search and during training; finished
work is kept, nothing half-done is trusted, and the same command then completes the run.

Real signals to a real `emotionnas` process: SIGINT to its whole process group (what a terminal's Ctrl-C
does), SIGTERM to the process alone (what `kill` or a scheduler does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_pipeline import write_experiment

pytestmark = pytest.mark.slow

FOLD = "Ses01-testSes01M"
MESSAGE = "emotionnas run: interrupted by {}; finished searches and models in the run folder are kept: rerun the " \
          "same command to resume"
DEVELOPER_NOISE = ("Checkpoint callback is found to be None", "Validation dataloaders are missing",
                   "might not be supported", "fails to be executed", "Traceback")


class Run:
    """One `emotionnas run` process writing its output to files beside the run folder."""

    def __init__(self, folder: Path, attempt: int):
        self.run_dir = folder / "run"
        self.started = time.time()
        self.stdout, self.stderr = folder / f"out{attempt}.txt", folder / f"err{attempt}.txt"
        script = Path(sys.executable).parent / "emotionnas"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen([str(script), "run", str(folder / "exp.yml"), "--out", str(self.run_dir)],
                                            stdout=out, stderr=err, start_new_session=True)

    def wait_for(self, ready: Callable[[], bool], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, f"ended before the phase: {self.stderr.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "phase never reached"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the phase

    def stop(self, signum: int) -> tuple[int, float]:
        """Sends the signal; returns (exit status, seconds until the process was gone)."""
        sent = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            pytest.fail(f"still running 60 s after {signal.Signals(signum).name}")
        return status, time.monotonic() - sent

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def last_line(self) -> str:
        return self.stderr.read_text().strip().splitlines()[-1]


def search_started(run_dir: Path, earlier: set[str]) -> Callable[[], bool]:
    """A new NNI experiment (not one left by an earlier attempt) is running the deep stream's search."""
    def ready() -> bool:
        try:
            started = {p.parent.name for p in run_dir.glob("folds/*/search/.deep.partial/nni/*/checkpoint")}
        except FileNotFoundError:  # the rerun is deleting the interrupted attempt's folder under the glob
            return False
        return bool(started - earlier)
    return ready


def training_started(logs: Path, since: float) -> Callable[[], bool]:
    """This attempt's training has begun: Lightning's log folder, recreated since the attempt started."""
    def ready() -> bool:
        try:
            return logs.stat().st_ctime >= since
        except FileNotFoundError:  # not made yet, or the rerun is replacing the interrupted attempt's folder
            return False
    return ready


def nni_experiments(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.glob("folds/*/search/.deep.partial/nni/*")}


def check_stop(run: Run, name: str, signum: int, status: int) -> None:
    code, seconds = run.stop(signum)
    assert code == status, run.output()[-3000:]
    assert seconds < 10, f"took {seconds:.1f} s to stop"
    assert run.last_line() == MESSAGE.format(name)
    assert not any(noise in run.output() for noise in DEVELOPER_NOISE), run.output()[-3000:]


def test_signals_stop_search_and_training_and_the_rerun_completes(tmp_path: Path) -> None:
    write_experiment(tmp_path, protocol={"folds": [FOLD]}, run={"variants": ["deep"], "main": "deep"},
                     search={"epochs": 12, "batch_size": 16}, train={"epochs": 40, "batch_size": 16})
    run_dir = tmp_path / "run"
    genotype = run_dir / "folds" / FOLD / "search" / "deep" / "genotype.json"
    result = run_dir / "folds" / FOLD / "deep" / "result.json"

    # during the search: Ctrl-C, then SIGTERM on the rerun; the genotype is never published half-done
    for attempt, (name, signum, status) in enumerate([("Ctrl-C (SIGINT)", signal.SIGINT, 130),
                                                      ("SIGTERM", signal.SIGTERM, 143)]):
        run = Run(tmp_path, attempt)
        run.wait_for(search_started(run_dir, nni_experiments(run_dir)))
        check_stop(run, name, signum, status)
        assert not genotype.parent.exists() and (run_dir / "experiment.json").is_file()

    # during training (the search finishes first): both signals again; the genotype stays as it was
    stamp = None
    for attempt, (name, signum, status) in enumerate([("Ctrl-C (SIGINT)", signal.SIGINT, 130),
                                                      ("SIGTERM", signal.SIGTERM, 143)], start=2):
        run = Run(tmp_path, attempt)
        run.wait_for(training_started(result.parent / "logs", run.started))
        stamp = stamp or genotype.stat().st_mtime_ns
        check_stop(run, name, signum, status)
        assert genotype.stat().st_mtime_ns == stamp and not result.exists()
        assert not list(run_dir.glob("folds/*/search/.*.partial"))

    final = Run(tmp_path, 4)
    assert final.process.wait(timeout=300) == 0, final.output()[-3000:]
    assert genotype.stat().st_mtime_ns == stamp  # the finished search was kept, not redone
    assert result.is_file() and (result.parent / "model.pt").is_file() and (run_dir / "results.md").is_file()
    assert not any(noise in final.output() for noise in DEVELOPER_NOISE)
