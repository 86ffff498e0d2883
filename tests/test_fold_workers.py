"""`run.jobs`: folds in worker processes. Errors and dying workers reach the parent, which leaves no worker
behind; a stopped parallel run stops its workers; the numbers equal a sequential run's (test_pipeline)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest
from test_run_folder import EMOTIONNAS, alive, spawned_children, wait_for, write_corpus, write_experiment

from nni_emotionnas.errors import FoldError
from nni_emotionnas.evaluation.fold_workers import WorkerTraceback, run_in_workers


def square_with_pid(unit: str, x: int) -> tuple[str, int, int, int, int]:
    import numpy  # noqa: F401  (its BLAS is the one the baselines' logistic regressions use)
    import torch
    from threadpoolctl import threadpool_info

    blas = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
    return unit, x * x, os.getpid(), torch.get_num_threads(), max(blas)


def fail_on_b(unit: str, x: int) -> int:
    if unit == "b":
        raise FoldError(f"fold {unit}: no 'sad' utterance in its test speaker")
    time.sleep(0.05 if unit != "slow" else 600)
    return x


def die_on_b(unit: str, x: int) -> int:
    if unit == "b":
        time.sleep(0.5)  # the step's start has reached the parent (an OOM kill comes long after it)
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
    time.sleep(0.05 if unit != "slow" else 600)
    return x


def test_units_run_whole_in_workers_and_come_back_in_order():
    units = [(label, [(label, i) for i in range(3)]) for label in "abcd"]
    heard = []
    results = run_in_workers(square_with_pid, units, jobs=2, on_step=lambda *event: heard.append(event))
    assert list(results) != [] and sorted(results) == list("abcd")
    for label, steps in units:
        assert [r[:2] for r in results[label]] == [(label, i * i) for _, i in steps]
        assert len({r[2] for r in results[label]}) == 1  # a unit stays in one worker
    assert {r[2] for rs in results.values() for r in rs} - {os.getpid()}, "the steps ran in this process"
    assert len({r[2] for rs in results.values() for r in rs}) <= 2
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # two workers split the cores
    assert {r[3:] for rs in results.values() for r in rs} == {(share, share)}  # torch and BLAS threads per worker
    assert sorted(e for e in heard if e[0] == "finished") == sorted(("finished", u, s) for u, ss in units for s in ss)


def test_a_workers_error_keeps_its_type_and_message_and_no_worker_is_left(tmp_path):
    units = [("slow", [("slow", 1)]), ("b", [("b", 2)])]
    before = set(p.pid for p in psutil.Process().children(recursive=True))
    started = time.monotonic()
    with pytest.raises(FoldError, match="fold b: no 'sad' utterance in its test speaker") as caught:
        run_in_workers(fail_on_b, units, jobs=2)
    assert time.monotonic() - started < 60, "the parent waited for the slow worker"
    assert isinstance(caught.value.__cause__, WorkerTraceback)
    assert "in the worker of b" in str(caught.value.__cause__) and "fail_on_b" in str(caught.value.__cause__)
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and alive(p)]
    assert [p for p in new if "spawn_main" in " ".join(p.cmdline())] == []


def test_a_killed_worker_is_an_error_naming_its_step():
    units = [("slow", [("slow", 1)]), ("b", [("b", 2)])]
    with pytest.raises(RuntimeError, match=r"a fold worker stopped without finishing its work \(pid \d+, exit code -9, "
                                           r"at b 2\); finished results are kept: rerun the command to resume"):
        run_in_workers(die_on_b, units, jobs=2)


@pytest.mark.slow
def test_sigterm_stops_a_parallel_run_and_its_workers(tmp_path):
    write_corpus(tmp_path, speakers=4, seconds=1.0)
    exp = write_experiment(tmp_path, train={"epochs": 500}, run={"variants": ["spectrogram"], "main": "spectrogram",
                                                                  "probes": False, "classic": None})
    run = subprocess.Popen([EMOTIONNAS, "run", str(exp), "--out", str(tmp_path / "run"), "--quiet", "--jobs", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[psutil.Process] = []

    def training() -> bool:
        workers[:] = [c for c in spawned_children(run.pid) if "resource_tracker" not in " ".join(c.cmdline())]
        return len(workers) >= 2 and len(list((tmp_path / "run").glob("folds/*/spectrogram"))) >= 2

    try:
        wait_for(training, 180, "two fold workers training")
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 143, stderr
    assert "interrupted by SIGTERM" in stderr
    wait_for(lambda: not any(alive(w) for w in workers), 10, "the fold workers to exit")
    assert not list((tmp_path / "run").glob("folds/*/spectrogram/result.json"))


def test_the_parent_fills_librosas_numba_cache_before_any_worker_starts(tmp_path):
    """Several processes compiling librosa's numba functions into a cold cache at once can leave an index that
    points at another signature's binary (a later `librosa.yin` then crashed the test suite after a demo); the
    parent compiles them into the cache alone before it starts extraction or fold workers."""
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    code = "from nni_emotionnas.workers import compile_before_workers; compile_before_workers()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    indexed = {path.name.rsplit("-", 1)[0] for path in tmp_path.rglob("*.nbi")}
    assert {"utils._localmin", "guf-utils._localmin", "audio._zc_wrapper", "pitch._pi_wrapper"} <= indexed
    written = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.nb?")}
    use = "import numpy as np, librosa; librosa.yin(np.ones(4000, dtype=np.float32), fmin=80, fmax=400, sr=16000)"
    subprocess.run([sys.executable, "-c", use], env=env, check=True, timeout=300)
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.nb?")} == written  # read, not rewritten
