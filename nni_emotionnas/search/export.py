"""`emotionnas export <experiment id or folder>`: the best trial's genotype.json, ready for `emotionnas train`.

Reads NNI's own record of the experiment (`<experiment folder>/db/nni.sqlite`, written by the NNI manager,
so it also works after `nnictl stop`), ranks trials by their final metric (`default`, i.e. val UA) and copies
the genotype the trial wrote into its NNI output folder (`trials/<trial id>/genotype.json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.nni_compat import final_metric_rows, registered_log_dir, trial_log_paths
from nni_emotionnas.spaces.genotype import read_genotype, write_genotype
from nni_emotionnas.training.trial_run import GENOTYPE_FILE

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class TrialResult:
    trial_id: str
    metric: float
    final: Any


def experiment_dir(target: str) -> Path:
    """An experiment folder as given, or the folder of an experiment id (nnictl's registry, ~/nni-experiments)."""
    path = Path(target).expanduser()
    if path.is_dir():
        if (path / "db" / "nni.sqlite").is_file():
            return path
        raise ConfigError(f"{path}: not an NNI experiment folder (no db/nni.sqlite)")
    registered = registered_log_dir(target)
    candidates = [registered] if registered else []
    candidates.append(Path.home() / "nni-experiments" / target)
    for candidate in candidates:
        if (candidate / "db" / "nni.sqlite").is_file():
            return candidate
    raise ConfigError(f"{target}: neither an experiment folder nor a known NNI experiment id")


def final_results(folder: Path) -> list[TrialResult]:
    """Final metrics of the experiment's trials, best first (NNI's `default` key, larger is better)."""
    results = []
    for trial_id, data in final_metric_rows(folder):
        final = json.loads(data)
        final = json.loads(final) if isinstance(final, str) else final  # NNI stores the metric JSON as a JSON string
        value = final.get("default") if isinstance(final, dict) else final
        if isinstance(value, (int, float)):
            results.append(TrialResult(trial_id, float(value), final))
    return sorted(results, key=lambda r: -r.metric)


def trial_folder(folder: Path, trial_id: str) -> Path:
    """Where the trial wrote its outputs: the log path NNI recorded (local: `environments/*/trials/<id>`)."""
    for log_path in trial_log_paths(folder, trial_id):
        location = log_path.removeprefix("file://")
        if Path(location).is_dir():
            return Path(location)
        host, _, remote = location.partition(":")
        if remote and "/envs/" in remote:  # remote training service: <exp>/envs/<env> on `host`
            outputs = Path(remote.split("/envs/")[0]) / "trials" / trial_id / "nnioutput"
            if host in LOCAL_HOSTS and outputs.is_dir():
                return outputs
            raise ConfigError(
                f"trial {trial_id} ran on {host}: copy its {outputs}/{GENOTYPE_FILE} from there "
                f"(e.g. scp {host}:{outputs}/{GENOTYPE_FILE} .)"
            )
    matches = sorted(folder.glob(f"**/trials/{trial_id}"))
    if not matches:
        raise ConfigError(f"{folder}: no output folder of trial {trial_id} (a remote trial keeps it on its machine)")
    return matches[0]


def export_best(target: str, out: Optional[Path] = None) -> tuple[Path, TrialResult]:
    """Writes the best trial's genotype (to `out`, default `<experiment folder>/genotype.json`)."""
    folder = experiment_dir(target)
    results = final_results(folder)
    if not results:
        raise ConfigError(f"{folder}: no trial reported a final metric yet")
    best = results[0]
    source = trial_folder(folder, best.trial_id) / GENOTYPE_FILE
    if not source.is_file():
        raise ConfigError(f"{source}: the best trial left no genotype (was it run by an emotionnas trial entry?)")
    record = read_genotype(source)
    record["search_metrics"] = {
        **record.get("search_metrics", {}),
        "nni_experiment": folder.name,
        "nni_trial": best.trial_id,
        "nni_final": best.final,
        "nni_trials_ranked": len(results),
    }
    destination = Path(out) if out is not None else folder / "genotype.json"
    if destination.is_dir():
        destination = destination / "genotype.json"
    write_genotype(record, destination)
    return destination, best
