"""`emotionnas space-json`, `trial`, `oneshot-trial`, `export` and `view`: the commands nnictl experiments use."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional


def run_space_json(args: argparse.Namespace) -> int:
    from nni_emotionnas.search.space_json import write_space_json

    out = Path(args.out or f"search_spaces/{args.stream}.json")
    space = write_space_json(args.stream, out, Path(args.space) if args.space else None, args.hyperparameters,
                             force=args.force)
    print(f"{out}: {len(space)} choices")
    note = trial_python_note()
    if note:
        print(note, file=sys.stderr)
    return 0


def trial_python_note() -> Optional[str]:
    """A warning when the `python` nnictl trials will run (the first on PATH) lacks this package.

    The example trial commands say `python -m nni_emotionnas...`; nnictl runs them with its own PATH, so
    from a virtualenv that is not activated every trial fails with "No module named 'nni_emotionnas'".
    `space-json` is the step before `nnictl create`, so it is where the user can still fix that.
    """
    found = shutil.which("python")
    if found and Path(found).parent.absolute() == Path(sys.executable).parent.absolute():
        return None
    installed = "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; import nni_emotionnas"
    if found and subprocess.run([found, "-c", installed], capture_output=True).returncode == 0:
        return None  # installed there, not just found in the current folder
    env = os.environ.get("VIRTUAL_ENV") or str(Path(sys.executable).parent.parent)
    return (f"note: `python` on PATH ({found or 'none'}) cannot import nni_emotionnas, so nnictl trials would fail: "
            f"activate this environment first (`source {env}/bin/activate`), or write `{sys.executable}` "
            "in the experiment's trialCommand")


def printing_result(run: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """A trial entry (`trial`, `oneshot-trial`) as a command: its final result printed as JSON."""

    def handler(args: argparse.Namespace) -> int:
        print(json.dumps(run(args)))
        return 0

    return handler


def run_export(args: argparse.Namespace) -> int:
    from nni_emotionnas.search.export import export_best

    path, best = export_best(args.experiment, Path(args.out) if args.out else None)
    print(f"{path}: trial {best.trial_id} (val UA {best.metric:.4f})")
    return 0


def run_view(args: argparse.Namespace) -> int:
    from nni_emotionnas.nni_compat import view_stopped_experiment
    from nni_emotionnas.search.export import experiment_dir

    folder = experiment_dir(args.experiment)
    view_stopped_experiment(folder.name, folder.parent, args.port)
    print(f"web UI of {folder.name}: http://127.0.0.1:{args.port} (read-only; `nnictl stop {folder.name}` ends it)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from nni_emotionnas.nni_support import oneshot_trial as oneshot_entry
    from nni_emotionnas.nni_support import trial as trial_entry

    space = subparsers.add_parser("space-json", help="write an NNI search-space JSON derived from a model space")
    space.add_argument("--stream", "--branch", dest="stream", required=True, choices=["spectrogram", "deep"])
    space.add_argument("--space", help="space config YAML (default: the packaged one of the stream)")
    space.add_argument("--out", help="output file (default: search_spaces/<stream>.json)")
    space.add_argument("--hyperparameters", action="store_true", help="add lr and batch_size to the space")
    space.add_argument("--force", action="store_true", help="replace an existing --out that holds another space")
    space.set_defaults(handler=run_space_json)
    trial = subparsers.add_parser("trial", help="nnictl trial: train the sampled architecture, report val UA")
    trial_entry.add_arguments(trial)
    trial.set_defaults(handler=printing_result(trial_entry.run))
    oneshot = subparsers.add_parser("oneshot-trial", help="nnictl trial: a one-shot search with per-epoch metrics")
    oneshot_entry.add_arguments(oneshot)
    oneshot.set_defaults(handler=printing_result(oneshot_entry.run))
    export = subparsers.add_parser("export", help="best trial of an NNI experiment -> genotype.json")
    export.add_argument("experiment", help="NNI experiment id or experiment folder")
    export.add_argument("--out", help="output file or folder (default: <experiment folder>/genotype.json)")
    export.set_defaults(handler=run_export)
    view = subparsers.add_parser("view", help="reopen the web UI of a stopped experiment (`emotionnas search`'s too)")
    view.add_argument("experiment", help="NNI experiment id or experiment folder")
    view.add_argument("--port", type=int, default=8080, help="web UI port (default: 8080)")
    view.set_defaults(handler=run_view)
