"""A whole experiment in a run folder: claim (or resume) the folder, corpus -> features -> every fold -> report."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from nni_emotionnas.config.experiment import ExperimentConfig
from nni_emotionnas.errors import ConfigError


def experiment_snapshot(experiment: ExperimentConfig) -> dict[str, Any]:
    """The experiment as plain JSON, enough to rebuild it (`experiment_from_dict`) for prediction."""
    data = dataclasses.asdict(experiment)
    data["base_dir"] = str(experiment.base_dir)
    return json.loads(json.dumps(data, default=str))


def claim_run_dir(run_dir: Path, snapshot: dict[str, Any]) -> bool:
    """Creates the run folder, or resumes it when it holds the same experiment; never reuses another's."""
    from nni_emotionnas.evaluation.report import write_text

    marker = run_dir / "experiment.json"
    if marker.is_file():
        if json.loads(marker.read_text()) != snapshot:
            raise ConfigError(
                f"{run_dir}: holds a run of a different experiment; pass another --out (nothing was overwritten)"
            )
        return True
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: exists and is not an emotionnas run folder; pass another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(snapshot, indent=1))
    return False


def run_experiment(experiment: ExperimentConfig, run_dir: Path, progress: bool = True) -> dict[str, Path]:
    """corpus -> features -> per-fold search -> trained variants -> report; returns the report's paths."""
    from nni_emotionnas.evaluation.crossval import CrossValidation, describe_streams, streams_of
    from nni_emotionnas.evaluation.report import write_report, write_text
    from nni_emotionnas.features.prepared import prepare

    snapshot = experiment_snapshot(experiment)
    resumed = claim_run_dir(run_dir, snapshot)
    print(f"{'resuming' if resumed else 'run folder'}: {run_dir}")
    started = time.perf_counter()
    branches = sorted({s for v in experiment.run.variants for s in streams_of(v)})
    corpus = prepare(experiment, branches=branches, progress=progress)
    results = CrossValidation(experiment, corpus, run_dir, progress=progress).run()
    notes = describe_streams(corpus, experiment)
    skipped = [{"file": str(u.path), "reason": reason} for u, reason in corpus.skipped]
    paths = write_report(results, corpus.classes, run_dir, notes, extra={"skipped_audio": skipped})
    manifest = {
        "classes": list(corpus.classes),
        "max_frames": corpus.max_frames,
        "deep_dim": corpus.deep_dim,
        "main": experiment.run.main,
        "folds": [f.name for f in corpus.folds],
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_text(run_dir / "run.json", json.dumps(manifest, indent=1))
    return paths


def default_run_dir(experiment: ExperimentConfig) -> Path:
    return experiment.resolve(experiment.output_dir) / experiment.name
