"""A tuner for nnictl experiments whose every trial counts: it wraps any NNI tuner and never hands out a sample the
model space refuses (a deep cell whose h1 never reads x_t), so no trial is spent, and shown FAILED, on one.

NNI's tuners see the search-space JSON, not the space's rules (NNI `Constraint`s), so they sample cells a trial
must refuse: with Evolution's random first generation, about two thirds of a deep search's trials. This tuner
checks each sample of its inner tuner with the trial's own check (`SampleRules`), tells the inner tuner that a
refused sample ran and scored the worst value (so Evolution drops it from its population and TPE learns where
the rule bites) and asks again, up to `max_refusals` times in a row. Its nnictl config: docs/nnictl_tuner.md.

The inner tuner only ever sees the wrapper's own parameter ids; the NNI manager only sees its own. Tuners that
hand out samples later through the dispatcher's callback (Evolution and PPO, when more trials are asked for
than they have samples) are served the same way: their late samples are checked before the callback is passed on.
"""

from __future__ import annotations

import importlib
import itertools
import logging
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

import nni
from nni.tuner import Tuner

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.nni_support.sample_rules import SampleRules

_logger = logging.getLogger(__name__)
WHERE = "tuner.classArgs"


def code_directory() -> Path:
    """Where relative classArgs paths start: the tuner's `codeDirectory` inside an NNI experiment, else the cwd
    (NNI starts tuners in the experiment's log folder, so the cwd there means nothing to the user)."""
    from nni_emotionnas.nni_compat import dispatcher_tuner_config

    config = dispatcher_tuner_config()
    directory = config.get("codeDirectory") if config else None
    return Path(directory) if directory else Path.cwd()


def _resolve(path: Optional[str], base: Path) -> Optional[Path]:
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def build_inner_tuner(name: str, args: dict[str, Any]) -> Tuner:
    """NNI's builtin tuner `name` (its arguments checked by NNI's own validator, as nnictl does), or the class
    `module.Class` of any NNI Tuner."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{WHERE}.tuner: name the tuner to wrap (e.g. Evolution, TPE, Random)")
    if not isinstance(args, dict):
        raise ConfigError(f"{WHERE}.tuner_args: must be a mapping of the {name} tuner's classArgs")
    cls, preset, validator = _tuner_class(name)
    if not (isinstance(cls, type) and issubclass(cls, Tuner)):
        raise ConfigError(f"{WHERE}.tuner: {name} is not an NNI Tuner (advisors such as Hyperband and BOHB "
                          "schedule trials themselves and cannot be wrapped)")
    try:
        if validator is not None:
            validator.validate_class_args(**args)
        return cls(**{**preset, **args})
    except Exception as exc:  # the tuner's own refusal of its arguments (TypeError, SchemaError, ValueError)
        raise ConfigError(f"{WHERE}.tuner_args: {name} refuses them: {exc}") from exc


def _tuner_class(name: str) -> tuple[Any, dict[str, Any], Any]:
    """(class, classArgs NNI's registry presets, NNI's class-args validator or None) of a tuner name."""
    from nni_emotionnas.nni_compat import builtin_tuner, builtin_tuner_names

    if "." in name:
        module, _, cls_name = name.rpartition(".")
        try:
            return getattr(importlib.import_module(module), cls_name), {}, None
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{WHERE}.tuner: cannot load {name!r}: {exc}") from exc
    known = {n.lower(): n for n in builtin_tuner_names()}
    if name.lower() not in known:
        raise ConfigError(f"{WHERE}.tuner: {name!r} is no NNI builtin tuner (known: {', '.join(known.values())}; "
                          "or give module.Class)")
    try:
        module, cls_name, preset, validator = builtin_tuner(known[name.lower()])  # the validator imports it too
        cls = getattr(importlib.import_module(module), cls_name)
    except ImportError as exc:  # Anneal needs hyperopt, PPO gym, SMAC smac
        raise ConfigError(f"{WHERE}.tuner: NNI's {name} tuner cannot load: {exc}") from exc
    return cls, preset, validator


def worst_score(tuner: Any) -> float:
    """The worst final metric for the tuner's optimize mode: trials report val UA, a fraction in [0, 1]."""
    mode = getattr(tuner, "optimize_mode", None)
    return 1.0 if getattr(mode, "value", mode) == "minimize" else 0.0


class ValidSampleTuner(Tuner):
    """Any NNI tuner, minus the samples the model space refuses (see the module docstring for the config)."""

    def __init__(
        self,
        tuner: str,
        experiment: str,
        stream: Optional[str] = None,
        tuner_args: Optional[dict[str, Any]] = None,
        space: Optional[str] = None,
        max_refusals: int = 1000,
        refused_score: Optional[float] = None,
        branch: Optional[str] = None,  # the old spelling of `stream`, which nnictl configs may still carry
    ) -> None:
        if not isinstance(max_refusals, int) or isinstance(max_refusals, bool) or max_refusals < 0:
            raise ConfigError(f"{WHERE}.max_refusals: must be a whole number >= 0, got {max_refusals!r}")
        stream = stream if stream is not None else branch
        if stream not in ("spectrogram", "deep"):
            raise ConfigError(f"{WHERE}.stream: {stream!r} is not a stream (spectrogram, deep)")
        self._space_args = (experiment, stream, space)
        self._rules: Optional[SampleRules] = None
        self.name = tuner
        self.inner = build_inner_tuner(tuner, tuner_args or {})
        number = isinstance(refused_score, (int, float)) and not isinstance(refused_score, bool)
        if refused_score is not None and not number:
            raise ConfigError(f"{WHERE}.refused_score: must be a number (the metric a refused sample scored), got "
                              f"{refused_score!r}")
        self.refused_score = float(refused_score) if refused_score is not None else worst_score(self.inner)
        self.max_refusals = max_refusals
        self.refused = 0  # samples refused so far
        self._in_row = 0
        self._inner_ids = itertools.count()
        self._inner_id_of: dict[Any, int] = {}  # NNI's parameter id -> the inner tuner's, for handed-out samples
        self._waiting: deque[Any] = deque()  # NNI's ids asked for and owed by the inner tuner's callback
        self._offers: deque[tuple[int, Any]] = deque()  # late samples of the inner tuner, not checked yet
        self._draining = False
        self._send: Optional[Callable[[Any, Any], None]] = None

    @property
    def rules(self) -> SampleRules:
        """The model space, built on first use: NNI gives a tuner 10 s from its start to connect to the manager,
        and importing torch and building the space can take longer on a busy machine."""
        if self._rules is None:
            experiment, stream, space = self._space_args
            base = code_directory()
            self._rules = SampleRules(_resolve(experiment, base), stream, _resolve(space, base), where=WHERE)
        return self._rules

    # --- what NNI's dispatcher calls --------------------------------------------------------------------------
    def update_search_space(self, search_space: dict[str, Any]) -> None:
        self.rules.check_search_space(search_space)
        self.inner.update_search_space(search_space)

    def generate_parameters(self, parameter_id: Any, **kwargs: Any) -> Any:
        samples = self.generate_multiple_parameters([parameter_id], **kwargs)
        if not samples:
            raise nni.NoMoreTrialError(f"{self.name}: no sample now")
        return samples[0]

    def generate_multiple_parameters(self, parameter_id_list: list[Any], **kwargs: Any) -> list[Any]:
        """One checked sample per id the inner tuner has one for; NNI pairs them with the first ids in order."""
        self._send = kwargs.pop("st_callback", None) or self._send
        accepted = [offer for offer in (self._ask(kwargs) for _ in parameter_id_list) if offer is not None]
        for parameter_id, (inner_id, _) in zip(parameter_id_list, accepted):
            self._inner_id_of[parameter_id] = inner_id
        self._waiting.extend(parameter_id_list[len(accepted):])
        self._drain()
        return [sample for _, sample in accepted]

    def receive_trial_result(self, parameter_id: Any, parameters: Any, value: Any, **kwargs: Any) -> None:
        inner_id = self._inner_id_of.get(parameter_id)
        if inner_id is None:  # a trial the wrapper did not hand out (added in the web UI)
            _logger.info("result of parameter %s ignored: not sampled by %s", parameter_id, self.name)
            return
        self.inner.receive_trial_result(inner_id, parameters, value, **kwargs)
        self._drain()

    def trial_end(self, parameter_id: Any, success: bool, **kwargs: Any) -> None:
        inner_id = self._inner_id_of.pop(parameter_id, None)
        if inner_id is not None:
            self.inner.trial_end(inner_id, success, **kwargs)
            self._drain()

    def import_data(self, data: Any) -> None:
        self.inner.import_data(data)

    def load_checkpoint(self) -> None:
        self.inner.load_checkpoint()

    def save_checkpoint(self) -> None:
        self.inner.save_checkpoint()

    def _on_exit(self) -> None:
        self.inner._on_exit()

    def _on_error(self) -> None:
        self.inner._on_error()

    # --- asking the inner tuner -------------------------------------------------------------------------------
    def _ask(self, kwargs: dict[str, Any]) -> Optional[tuple[int, Any]]:
        """(inner id, sample) of the first sample the space accepts; None when the inner tuner has none now."""
        while True:
            inner_id = next(self._inner_ids)
            samples = self.inner.generate_multiple_parameters([inner_id], st_callback=self._late_sample, **kwargs)
            if not samples:
                return None
            if self._admit(inner_id, samples[0]):
                return inner_id, samples[0]

    def _admit(self, inner_id: int, sample: Any) -> bool:
        """True for a sample the space accepts; a refused one is reported to the inner tuner as a finished trial
        that scored the worst."""
        why = self.rules.refusal(sample)
        if why is None:
            self._in_row = 0
            return True
        self.refused += 1
        self._in_row += 1
        if self._in_row > self.max_refusals:
            raise ConfigError(
                f"{WHERE}: {self.name} gave {self._in_row} samples in a row that the {self.rules.stream} space of "
                f"{self.rules.source} refuses (max_refusals: {self.max_refusals}); does the space admit any? Last: "
                f"{why}"
            )
        _logger.info("%s sample refused (%d so far), reported as scoring %s: %s", self.name, self.refused,
                     self.refused_score, why)
        self.inner.receive_trial_result(inner_id, sample, self.refused_score)
        self.inner.trial_end(inner_id, True)
        return False

    def _late_sample(self, inner_id: int, sample: Any) -> None:
        """The inner tuner's dispatcher callback: queued, checked once the inner tuner's call has returned."""
        self._offers.append((inner_id, sample))

    def _drain(self) -> None:
        """Passes the inner tuner's late samples on to NNI (refused ones replaced), each to the next waiting id."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._offers:
                offer: Optional[tuple[int, Any]] = self._offers.popleft()
                if offer is not None and not self._admit(*offer):
                    offer = self._ask({})  # a replacement, now or as another late sample
                if offer is not None:
                    self._serve(*offer)
        finally:
            self._draining = False

    def _serve(self, inner_id: int, sample: Any) -> None:
        if not self._waiting or self._send is None:
            _logger.warning("%s sent a sample nobody asked for: dropped", self.name)
            self.inner.trial_end(inner_id, False)
            return
        parameter_id = self._waiting.popleft()
        self._inner_id_of[parameter_id] = inner_id
        self._send(parameter_id, sample)
