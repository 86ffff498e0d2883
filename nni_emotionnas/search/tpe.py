"""NNI's TPE as a NAS strategy over spaces with `Cell` input choices (NNI 3.0's TPE strategy cannot convert them)."""

from __future__ import annotations

import logging
import time
from typing import Optional

import nni
from nni.nas.strategy import TPE

from nni_emotionnas.nni_compat import RunOverride, claim_model_index, next_model_index, skip_model_index, strategy_lock
from nni_emotionnas.search.space_json import InvalidSample, legacy_space, split_parameters

_logger = logging.getLogger(__name__)


class ArchitectureTPE(RunOverride, TPE):
    """NNI's TPE strategy, given the space through `space_json.legacy_space` (NNI 3.0 converts mutables with
    `as_legacy_dict`, which `Cell`'s input choices lack) and mapping samples back before freezing; a sample the
    space's constraints refuse ends as a failed parameter for the tuner, without a trial."""

    def __init__(
        self, optimize_mode: str = "maximize", seed: Optional[int] = None, tpe_args: Optional[dict] = None
    ) -> None:
        super().__init__(optimize_mode=optimize_mode, seed=seed, tpe_args=tpe_args)

    def search_loop(self) -> None:
        self.tuner.update_search_space(legacy_space(self.model_space))
        while self.engine.budget_available():
            if self.engine.idle_worker_available():
                with strategy_lock(self):
                    try:
                        parameters = self.tuner.generate_parameters(next_model_index(self))
                    except nni.NoMoreTrialError:
                        break
                    try:
                        architecture, _ = split_parameters(self.model_space, parameters)
                    except InvalidSample as refused:  # the space's constraints: TPE forgets it, no trial runs
                        _logger.info("TPE sample refused: %s", refused)
                        self.tuner.trial_end(next_model_index(self), False)
                        skip_model_index(self)
                        continue
                    model = self.model_space.freeze(architecture)
                    claim_model_index(self, model)
                self.engine.submit_models(model)
            time.sleep(1.0)
