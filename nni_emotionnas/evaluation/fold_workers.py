"""`run.jobs`: a run's folds trained side by side in worker processes, each fold whole in one worker.

Why whole folds: a fold's fusions read its own trained streams and dominance record, and only the worker
of that fold writes its folder; different folds share nothing but a search done once, which the parent
runs before any worker starts. Every network is seeded by its own step, so the results equal a sequential
run's. Workers are spawned (no forked torch or OpenMP state), ignore Ctrl-C (the parent stops them: it
kills them, and every file a rerun trusts is written atomically) and exit if the parent dies.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from threadpoolctl import threadpool_limits

from nni_emotionnas.threads import share_cores
from nni_emotionnas.workers import compile_before_workers, die_with_parent

Result = TypeVar("Result")
Step = tuple[Any, ...]
Unit = tuple[str, Sequence[Step]]  # (label, the steps one worker runs in order)


class WorkerTraceback(Exception):
    """The traceback of an error raised in a fold worker, attached as the cause of the re-raised error."""


def sendable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (domain errors keep their type and exit status), else a RuntimeError
    with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _work(parent_pid: int, run_step: Callable[..., Any], workers: int, tasks: Any, events: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent acts
    die_with_parent(parent_pid)
    threads = share_cores(workers)  # a search step's threads; stream fits keep the policy's (or config's)
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # BLAS of the baselines' logistic regressions
    pid = os.getpid()
    while (unit := tasks.get()) is not None:
        label, steps = unit
        results = []
        try:
            for step in steps:
                events.put(("started", label, step, pid))
                results.append(run_step(*step))
                events.put(("finished", label, step, pid))
        except Exception as exc:
            events.put(("error", label, (sendable(exc), traceback.format_exc()), pid))
            return
        events.put(("done", label, results, pid))


def run_in_workers(
    run_step: Callable[..., Result],
    units: Sequence[Unit],
    jobs: int,
    on_step: Callable[[str, str, Step], None] = lambda kind, label, step: None,
) -> dict[str, list[Result]]:
    """Runs every unit's steps (`run_step(*step)`, in order) in up to `jobs` spawned workers, which share the
    cores (`threads.share_cores`); returns each unit's results by label. `run_step` must pickle (a bound method
    of a picklable object); `on_step(kind, label, step)` hears each step `started` and `finished` (progress).
    The first error in a worker stops every worker and is raised here; so does a worker that dies (e.g.
    killed for memory)."""
    compile_before_workers()
    context = multiprocessing.get_context("spawn")
    tasks, events = context.Queue(), context.Queue()
    workers = [
        context.Process(target=_work, args=(os.getpid(), run_step, jobs, tasks, events), name=f"emotionnas-fold-{i}")
        for i in range(max(1, min(jobs, len(units))))
    ]
    for unit in units:
        tasks.put(unit)
    for _ in workers:
        tasks.put(None)
    results: dict[str, list[Result]] = {}
    running: dict[int, tuple[str, Step]] = {}  # worker pid -> its current step
    quiet_since_all_exited = 0
    try:
        for worker in workers:
            worker.start()
        while len(results) < len(units):
            try:
                kind, label, payload, pid = events.get(timeout=1.0)
            except queue.Empty:
                quiet_since_all_exited = check_alive(workers, running, quiet_since_all_exited)
                continue
            if kind in ("started", "finished"):
                running[pid] = (label, payload)
                on_step(kind, label, payload)
            elif kind == "done":
                results[label] = payload
            else:
                error, trace = payload
                raise error from WorkerTraceback(f"in the worker of {label}:\n{trace}")
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()  # nothing to clean up: finished files are atomic, half-done steps are redone
        for worker in workers:
            worker.join()
        tasks.close()
        events.close()
    return results


def check_alive(
    workers: Sequence[multiprocessing.process.BaseProcess], running: dict[int, tuple[str, Step]], quiet: int
) -> int:
    """Raises if a worker died without reporting (a crash, or the system killed it), or if every worker has
    exited and a second quiet wait (what they sent before exiting is read first) still left work missing;
    returns the count of quiet waits since every worker exited."""
    dead = [w for w in workers if w.exitcode not in (None, 0)]
    all_exited = all(w.exitcode is not None for w in workers)
    if dead or (all_exited and quiet >= 1):
        lost = [
            f"pid {w.pid}, exit code {w.exitcode}, at {' '.join(map(str, running[w.pid][1]))}"
            if w.pid in running else f"pid {w.pid}, exit code {w.exitcode}"
            for w in (dead or workers)
        ]
        raise RuntimeError(
            f"a fold worker stopped without finishing its work ({'; '.join(lost)}); finished results are "
            "kept: rerun the command to resume (lower run.jobs if memory ran out)"
        )
    return quiet + 1 if all_exited else 0
