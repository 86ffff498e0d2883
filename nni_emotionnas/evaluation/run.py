"""A whole experiment in a run folder: claim (lock, check, resume) it, corpus -> features -> every fold -> report."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nni_emotionnas.config.experiment import ExperimentConfig
from nni_emotionnas.errors import RunFolderError, storage_error, storage_errors
from nni_emotionnas.evaluation.run_folder import LOCK_FILE, REPORT_FILES, RunFolder
from nni_emotionnas.locks import FolderLock, describe_holder


def experiment_snapshot(experiment: ExperimentConfig) -> dict[str, Any]:
    """The experiment as plain JSON, enough to rebuild it (`experiment_from_dict`) for prediction; without
    `run.jobs`, which changes no result (a run resumes under another value)."""
    data = dataclasses.asdict(experiment)
    data["base_dir"] = str(experiment.base_dir)
    del data["run"]["jobs"]
    return json.loads(json.dumps(data, default=str))


def snapshot_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two experiment snapshots (for the refusal message)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in snapshot_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def discard_results(run_dir: Path) -> None:
    """Removes what a run wrote into its folder (and nothing else the user put there)."""
    folder = RunFolder(run_dir)
    shutil.rmtree(folder.folds, ignore_errors=True)
    for path in (*map(folder.report, REPORT_FILES), folder.manifest, folder.corpus):
        path.unlink(missing_ok=True)
    for png in run_dir.glob("confusion_*.png"):
        png.unlink()


def is_finished(run_dir: Path, snapshot: dict[str, Any]) -> bool:
    """The folder holds this experiment's completed run (its report and run.json are written last)."""
    folder = RunFolder(run_dir)
    try:
        same = folder.experiment.is_file() and json.loads(folder.experiment.read_text()) == snapshot
    except (OSError, ValueError):
        return False
    return same and folder.manifest.is_file() and all(folder.report(n).is_file() for n in REPORT_FILES)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise RunFolderError(f"{path}: damaged ({exc}); pass --restart to redo the run, or another --out") from exc


def _check_experiment(run_dir: Path, snapshot: dict[str, Any], restart: bool) -> bool:
    """Records the experiment in a new or reusable folder; True when resuming the same experiment."""
    from nni_emotionnas.evaluation.report import write_text

    marker = RunFolder(run_dir).experiment
    for tmp in run_dir.rglob(".*.tmp"):  # half-written files of a killed run (we hold the lock)
        tmp.unlink(missing_ok=True)
    if marker.is_file():
        if restart:
            discard_results(run_dir)
            print(f"{run_dir}: --restart: previous results discarded")
        else:
            previous = _read_json(marker)
            if previous == snapshot:
                return True
            if RunFolder(run_dir).finished_work():
                differing = ", ".join(snapshot_differences(previous, snapshot)[:5])
                raise RunFolderError(
                    f"{run_dir}: holds a run of a different experiment ({differing} differ); pass another --out, "
                    "or --restart to discard its results (nothing was overwritten)"
                )
            discard_results(run_dir)  # a run that stopped before finishing anything: the folder is reusable
    elif any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        raise RunFolderError(f"{run_dir}: exists and is not an emotionnas run folder; pass another --out")
    write_text(marker, json.dumps(snapshot, indent=1))
    return False


@contextmanager
def claim_run_dir(run_dir: Path, snapshot: dict[str, Any], restart: bool = False) -> Iterator[str]:
    """Holds the run folder for one run; yields "new", "resumed" or "finished".

    The folder is locked (a second run on it is refused, naming the first); a lock left by a killed run is
    taken over. A folder of another experiment is refused unless nothing in it is finished or `restart`.
    "finished" means a read-only folder that already holds this experiment's finished run: it is only
    reported, never written.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: is a file, not a folder; pass --out a folder path (created if missing)")
    with storage_errors("creating the run folder, --out", run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(RunFolder(run_dir).lock)
    try:
        stale = lock.acquire()
    except OSError as exc:
        converted = storage_error(exc, "locking the run folder, --out", run_dir)
        if converted is None:
            raise
        if restart or not is_finished(run_dir, snapshot):
            raise converted from exc
        stale, lock = None, None
    if lock is None:
        yield "finished"
        return
    try:
        if stale:
            print(f"{run_dir}: taking over the lock of {describe_holder(stale)}, which is no longer running")
        with storage_errors("writing the run folder, --out", run_dir):
            resumed = _check_experiment(run_dir, snapshot, restart)
        yield "resumed" if resumed else "new"
    finally:
        lock.release()


def check_corpus(run_dir: Path, fingerprint: dict[str, Any], read_only: bool = False) -> None:
    """Refuses to resume on a corpus other than the one the folder's finished results were computed on,
    then records the corpus (unless the folder is `read_only`)."""
    from nni_emotionnas.corpora.fingerprint import describe_changes
    from nni_emotionnas.evaluation.report import write_text

    folder = RunFolder(run_dir)
    record = folder.corpus
    if record.is_file():
        changes = describe_changes(_read_json(record), fingerprint)
        if changes and (read_only or folder.finished_work()):
            todo = "pass another --out (this one is read-only)" if read_only else (
                "pass --restart to redo the run here, or another --out")
            raise RunFolderError(
                f"{run_dir}: the corpus changed since its results were computed: {'; '.join(changes)}. "
                f"{todo[0].upper()}{todo[1:]} (nothing was overwritten)"
            )
        if changes:
            shutil.rmtree(folder.folds, ignore_errors=True)
    elif folder.finished_work():
        print(f"{run_dir}: no corpus record (an older version made this folder); its results are kept unchecked")
    if not read_only:
        write_text(record, json.dumps(fingerprint))


def run_experiment(
    experiment: ExperimentConfig, run_dir: Path, progress: bool = True, restart: bool = False
) -> dict[str, Path]:
    """corpus -> features -> per-fold search -> trained variants -> report; returns the report's paths."""
    run_dir = Path(run_dir)
    with claim_run_dir(run_dir, experiment_snapshot(experiment), restart) as state:
        if state != "finished":
            print(f"{'resuming' if state == 'resumed' else 'run folder'}: {run_dir}")
        with storage_errors("writing the run folder, --out", run_dir):
            return _run(experiment, run_dir, progress, read_only=state == "finished")


def _run(experiment: ExperimentConfig, run_dir: Path, progress: bool, read_only: bool) -> dict[str, Path]:
    from nni_emotionnas.corpora.fingerprint import corpus_fingerprint
    from nni_emotionnas.evaluation.crossval import CrossValidation, streams_of
    from nni_emotionnas.evaluation.report import describe_streams, write_report, write_text
    from nni_emotionnas.features.prepared import prepare

    started = time.perf_counter()
    streams = sorted({s for v in experiment.run.variants for s in streams_of(v)})
    corpus = prepare(experiment, streams=streams, progress=progress)
    check_corpus(run_dir, corpus_fingerprint(corpus.utterances, corpus.folds), read_only)
    if read_only:
        print(f"{run_dir}: read-only, holds this experiment's finished run; nothing to do, nothing written")
        # the report files of the finished run, keyed like `write_report`'s result
        return {**RunFolder(run_dir).report_paths(), **{p.stem: p for p in sorted(run_dir.glob("confusion_*.png"))}}
    results = CrossValidation(experiment, corpus, run_dir, progress=progress).run()
    notes = describe_streams(corpus, experiment)
    skipped = [{"file": str(u.path), "reason": reason} for u, reason in corpus.skipped]
    extra = {"seed": experiment.seed, "skipped_audio": skipped}
    sections = ""
    if experiment.multi_corpus:
        from nni_emotionnas.evaluation.corpus_report import corpus_sections, describe_corpora

        notes += describe_corpora(corpus, experiment)
        sections, extra["corpora"] = corpus_sections(results, corpus, experiment)
    paths = write_report(results, corpus.classes, run_dir, notes, extra=extra, sections=sections)
    manifest = {
        "classes": list(corpus.classes),
        "max_frames": corpus.max_frames,
        "deep_dim": corpus.deep_dim,
        "main": experiment.run.main,
        "seed": experiment.seed,
        "folds": [f.name for f in corpus.folds],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_text(RunFolder(run_dir).manifest, json.dumps(manifest, indent=1))
    return paths


def default_run_dir(experiment: ExperimentConfig) -> Path:
    return experiment.resolve(experiment.output_dir) / experiment.name
