"""The only door to NNI internals: every private attribute, override point or storage format of NNI 3.0 that
the product relies on is reached through this module, each with the NNI behaviour it works around.

An NNI upgrade that moves one of them breaks here, at import, with a message naming the supported version,
instead of as an AttributeError deep inside a search. `tests/test_nni_compat.py` touches every symbol.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import nni

from nni_emotionnas.errors import BackendError

SUPPORTED_NNI = "3.0"


def check_nni_version(version: str) -> None:
    """Refuses an NNI other than the one these workarounds were written (and tested) for."""
    if version.split("+")[0] not in (SUPPORTED_NNI, f"{SUPPORTED_NNI}.0"):
        raise BackendError(
            f"nni-emotionnas supports NNI {SUPPORTED_NNI} only (found NNI {version}): it reaches into NNI "
            f"internals listed in nni_emotionnas/nni_compat.py; install it with `pip install nni=={SUPPORTED_NNI}`"
        )


check_nni_version(getattr(nni, "__version__", "unknown"))

# Imported here, not where used, so a moved internal fails at import with the version check above.
from nni.common.serializer import SerializableObject  # noqa: E402
from nni.nas.experiment import NasExperiment  # noqa: E402
from nni.nas.nn.pytorch.cell import preprocess_cell_inputs  # noqa: E402
from nni.nas.nn.pytorch.choice import ChosenInputs  # noqa: E402
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule, GumbelDartsLightningModule  # noqa: E402
from nni.nas.oneshot.pytorch.strategy import OneShotStrategy  # noqa: E402
from nni.nas.oneshot.pytorch.supermodule.differentiable import (  # noqa: E402
    DifferentiableMixedCell,
    DifferentiableMixedInput,
    DifferentiableMixedLayer,
)
from nni.runtime.env_vars import trial_env_vars  # noqa: E402
from nni.runtime.trial_command_channel import get_default_trial_command_channel  # noqa: E402

__all__ = [
    "arch_alphas", "arch_softmax", "builtin_tuner", "builtin_tuner_names", "ChosenInputs", "claim_model_index",
    "current_trial_record",
    "DartsLightningModule", "DifferentiableMixedCell", "dispatcher_tuner_config", "final_metric_rows",
    "GumbelDartsLightningModule", "mixture_weights", "OneShotStrategy", "preprocess_cell_inputs", "raise_rest_timeout",
    "ReadableNasExperiment", "reclass_darts_module", "registered_log_dir", "RunOverride", "send_trial_metric",
    "SerializableObject", "skip_model_index", "strategy_lock", "trial_channel", "trial_log_paths",
    "view_stopped_experiment",
]
# `preprocess_cell_inputs` (nni.nas.nn.pytorch.cell, not exported): how NNI's `Cell.forward` turns its arguments
# (a list of predecessors or separate tensors) into the predecessor list; our DARTS cell forwards take the same.
# `ChosenInputs` (nni.nas.nn.pytorch.choice, not exported): what a frozen `Cell` holds in place of each input
# choice (the chosen predecessors).
# `OneShotStrategy` (nni.nas.oneshot.pytorch.strategy, not exported): the base of NNI's one-shot strategies, whose
# `oneshot_module` holds the trained supernet a search reads its edge weights and UA from (`search.run`).


# --- one-shot supernets -------------------------------------------------------------------------------------
def arch_alphas(cell: DifferentiableMixedCell) -> dict[str, Any]:
    """A DARTS cell's architecture parameters by edge label. NNI keeps them in the private `_arch_alpha` and its
    `export_probs` drops the implicit `none` op, which we need to report how strongly an edge leaned to zero."""
    return cell._arch_alpha


def arch_softmax(cell: DifferentiableMixedCell, alpha: Any) -> Any:
    """The cell's own normalisation of alphas (softmax for DARTS, Gumbel-softmax for GumbelDARTS: NNI swaps the
    private `_softmax`), so a faster cell forward keeps each strategy's semantics."""
    return cell._softmax(alpha)


def reclass_darts_module(module: Any, darts: type, gumbel: type) -> Any:
    """NNI's DARTS (or GumbelDARTS) Lightning module as NNI built it, its class swapped for `darts` (`gumbel`), a
    subclass adding methods only: NNI builds it inside `configure_oneshot_module` with no hook for its class.
    What those subclasses' architecture optimiser relies on: `DartsLightningModule.training_step` calls its
    `zero_grad()` right before the architecture step's forward and its `step()` right after that step's
    backward, and neither elsewhere (`search.darts_strategies`)."""
    module.__class__ = gumbel if isinstance(module, GumbelDartsLightningModule) else darts
    return module


def mixture_weights(choice: Any) -> Any:
    """softmax(alpha) of a LayerChoice / InputChoice that NNI's DARTS made a weighted mixture (private
    `_arch_alpha`, `_softmax`), so a supernet can compute its weights once per sequence instead of at every
    call; None for anything else (a fixed or sampled choice, or GumbelDARTS, which draws noise per call)."""
    import torch

    if isinstance(choice, (DifferentiableMixedLayer, DifferentiableMixedInput)) and type(choice._softmax) is (
        torch.nn.Softmax
    ):
        return choice._softmax(choice._arch_alpha)
    return None


# --- trials -------------------------------------------------------------------------------------------------
def current_trial_record() -> Optional[dict[str, Any]]:
    """The running trial's parameter record (None outside a trial). NNI 3.0's sequential engine, used for a
    one-shot search inside a trial, replaces `nni.get_current_parameter()` while it trains; the original record
    stays in the private `nni.trial._params`."""
    import nni.trial

    return nni.trial._params


def trial_channel() -> Any:
    """The trial's own command channel. Take it before a one-shot search starts: NNI's sequential engine swaps
    the process' channel while it trains, so `nni.report_*` during the search would never reach the manager."""
    return get_default_trial_command_channel()


def send_trial_metric(channel: Any, parameter_id: Any, kind: str, sequence: int, value: Any) -> None:
    """Sends a metric on a channel taken with `trial_channel` (NNI's private channel API)."""
    channel.send_metric(
        parameter_id=parameter_id, trial_job_id=trial_env_vars.NNI_TRIAL_JOB_ID, type=kind, sequence=sequence,
        value=value,
    )


# --- tuners -------------------------------------------------------------------------------------------------
def dispatcher_tuner_config(argv: Optional[list[str]] = None) -> Optional[dict[str, Any]]:
    """The `tuner` section of the experiment config the NNI manager started this tuner process with (None outside
    one). NNI 3.0 runs tuners as `python -m nni --exp_params <base64 JSON of the whole config>` in the
    experiment's log folder and gives a custom tuner nothing else: its `codeDirectory` (absolute, resolved
    against the config file's folder by nnictl) is only found here."""
    import argparse
    import base64
    import json
    import sys

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--exp_params")
    known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not known.exp_params:
        return None
    try:
        params = json.loads(base64.b64decode(known.exp_params).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    tuner = params.get("tuner") if isinstance(params, dict) else None
    return tuner if isinstance(tuner, dict) else None


# --- strategies ---------------------------------------------------------------------------------------------
class RunOverride:
    """Mixin for NNI strategies whose search loop we write: NNI 3.0's `Strategy.run` calls the private `_run`
    as its only extension point; subclasses implement `search_loop` instead."""

    def _run(self) -> None:
        self.search_loop()

    def search_loop(self) -> None:
        raise NotImplementedError


@contextmanager
def strategy_lock(strategy: Any) -> Iterator[None]:
    """NNI's HPO-backed strategies (TPE) guard their model bookkeeping with the private `_thread_lock`."""
    with strategy._thread_lock:
        yield


def claim_model_index(strategy: Any, model: Any) -> int:
    """Records a submitted model the way NNI's HPO strategies do (private `_model_count`, `_model_to_id`), so
    the tuner gets the trial's result back under its parameter id."""
    index = strategy._model_count
    strategy._model_to_id[model] = index
    strategy._model_count += 1
    return index


def skip_model_index(strategy: Any) -> None:
    """Spends a parameter id on a sample that was never submitted (NNI's private `_model_count`), so the tuner
    gets a fresh id for its next sample after it was told the refused one ended (`trial_end(id, False)`)."""
    strategy._model_count += 1


def next_model_index(strategy: Any) -> int:
    """The parameter id the next submitted model will get (NNI's private `_model_count`)."""
    return strategy._model_count


# --- multi-trial experiments in the web UI ------------------------------------------------------------------
# `SerializableObject` (nni.common.serializer, not exported by NNI) is how `SimplifiedModelSpace._load` rebuilds
# the traced model space from its symbol and arguments; `search.trial_parameters` rebuilds it the same way.
class ReadableNasExperiment(NasExperiment):
    """A `NasExperiment` whose web UI shows readable choices. NNI 3.0 sends the manager the space's mutables in
    legacy form from the private `_send_space_to_nni_manager`, warning "Cannot convert CategoricalMultiple ... It
    will not show on WebUI" for every input choice; this sends `web_space` (the `emotionnas space-json` form)
    instead. `wrap_model_space` (public override point `executable_model_factory`) chooses what trials get."""

    web_space: Optional[dict[str, Any]] = None
    wrap_model_space: Optional[Any] = None

    def executable_model_factory(self, config: Any) -> Any:
        base = super().executable_model_factory(config)
        return self.wrap_model_space(base) if self.wrap_model_space is not None else base

    def _send_space_to_nni_manager(self) -> None:
        if self.web_space is None:
            super()._send_space_to_nni_manager()
        else:
            self.update_search_space(self.web_space)


def view_stopped_experiment(experiment_id: str, working_directory: Path, port: int) -> None:
    """Starts the NNI manager read-only on a stopped experiment's records and returns (the manager stays up until
    `nnictl stop`). `nnictl view` cannot reopen NAS experiments: it rebuilds their `NasExperimentConfig`, which
    refuses the search space the web UI was given and any working directory but the one the search ran in
    ("search_space field can not be customized in NAS experiment"). The stored config (read with NNI's
    `launcher.get_stopped_experiment_config_json`) is loaded as the HPO config it is on disk instead."""
    from nni.experiment import Experiment, ExperimentConfig
    from nni.experiment.launcher import get_stopped_experiment_config_json

    stored = get_stopped_experiment_config_json(experiment_id, str(working_directory))
    if not stored:
        raise BackendError(f"{working_directory / experiment_id}: no NNI experiment record to view")
    known = {field.replace("_", "") for field in ExperimentConfig.__dataclass_fields__}
    fields = {key: value for key, value in stored.items() if key.lower() in known and key != "experimentType"}
    fields.setdefault("searchSpace", {})
    fields.setdefault("tuner", {"name": "Random"})  # required by the HPO config, never started by a viewer
    config = ExperimentConfig(**{**fields, "trialCodeDirectory": str(working_directory),
                                 "experimentWorkingDirectory": str(working_directory)})

    class StoredExperiment(Experiment):
        def load_checkpoint(self) -> None:  # the config is the stored one, already loaded above
            pass

    StoredExperiment(config, id=experiment_id).view(port, non_blocking=True)


# --- the NNI manager and its records ------------------------------------------------------------------------
def raise_rest_timeout(seconds: float) -> None:
    """NNI's REST client gives up on its own manager after 20 s (module attribute `timeout`) and the strategy
    dies on the first timeout; a machine busy training trials on every core can exceed it."""
    import nni.experiment.rest as rest

    rest.timeout = max(rest.timeout, seconds)


def registered_log_dir(experiment_id: str) -> Optional[Path]:
    """Where nnictl's registry (`~/nni-experiments/.experiment`, via the private `nnictl.config_utils`) says an
    experiment keeps its folder."""
    from nni.tools.nnictl.config_utils import Experiments

    entry = Experiments().get_all_experiments().get(experiment_id)
    return Path(entry["logDir"]) / experiment_id if entry and entry.get("logDir") else None


def _database(folder: Path) -> sqlite3.Connection:
    """NNI's manager records trials in `<experiment>/db/nni.sqlite` (tables MetricData, TrialJobEvent); reading
    it works after `nnictl stop`, when the REST API is gone. Opened read-only."""
    return sqlite3.connect(f"file:{Path(folder) / 'db' / 'nni.sqlite'}?mode=ro", uri=True)


def final_metric_rows(folder: Path) -> list[tuple[str, str]]:
    """(trial id, final metric as NNI stored it) for every trial that reported one."""
    with _database(folder) as db:
        return db.execute("select trialJobId, data from MetricData where type = 'FINAL'").fetchall()


def trial_log_paths(folder: Path, trial_id: str) -> list[str]:
    """The log paths NNI recorded for a trial (a `file://` folder locally, `host:path` on remote machines)."""
    with _database(folder) as db:
        rows = db.execute(
            "select logPath from TrialJobEvent where trialJobId = ? and logPath is not null", (trial_id,)
        ).fetchall()
    return [path for (path,) in rows]


# --- builtin tuners (ValidSampleTuner) --------------------------------------------------------------------------
# NNI's registry of builtin algorithms (`nni.tools.package_utils`, not exported) is what nnictl resolves a
# `tuner: {name: ...}` through: the names, the class each names, its preset classArgs and its classArgs validator.


def builtin_tuner_names() -> list[str]:
    """Names and aliases of NNI's builtin tuners, as nnictl accepts them."""
    from nni.tools.package_utils import config_manager

    metas = [meta for meta in config_manager.get_all_algo_meta() if meta.algo_type == "tuner"]
    return sorted([meta.name for meta in metas] + [meta.alias for meta in metas if meta.alias])


def builtin_tuner(name: str) -> tuple[str, str, dict[str, Any], Any]:
    """(module, class name, preset classArgs, classArgs validator or None) of the builtin tuner `name`."""
    from nni.tools.package_utils import config_manager
    from nni.tools.package_utils.tuner_factory import create_validator_instance, get_builtin_module_class_name

    module, cls_name = get_builtin_module_class_name("tuners", name)
    meta = config_manager.get_algo_meta(name)  # e.g. Anneal = the hyperopt tuner with algorithm_name: anneal
    return module, cls_name, dict(meta.class_args or {}), create_validator_instance("tuners", name)
