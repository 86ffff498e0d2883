"""What a multi-trial NAS trial receives as its NNI parameters: the sampled architecture, readable, and a reference.

NNI 3.0 sends each trial its whole `SimplifiedModelSpace` (model symbol, init arguments, evaluator with the
experiment config, and base64 pickles `__nni_obj__` for whatever is not traced), which the web UI shows as
the trial's parameters, corpus paths included. `ReferencedModelSpace` uses NNI's serializer
protocol (`_dump`/`_load`, documented in `nni.dump`) to send only the sample, in the search-space JSON form
(`n1/operand_a: h1`), plus the path of `trial_setup.json` in the run folder, which holds the rest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import nni
from nni.nas.space import ModelStatus, SimplifiedModelSpace

from nni_emotionnas.features.store import atomic_write_bytes
from nni_emotionnas.nni_compat import SerializableObject
from nni_emotionnas.search.space_json import decode_sample, encode_sample

SETUP_KEY = "trial_setup"
SETUP_FILE = "trial_setup.json"


class ReferencedModelSpace(SimplifiedModelSpace):
    """A `SimplifiedModelSpace` whose frozen samples serialise as readable choices + `trial_setup` (a file path)."""

    def __init__(self, model: Any, mutables: Any, evaluator: Any, setup: str = "",
                 names: Optional[dict[str, list[str]]] = None) -> None:
        super().__init__(model, mutables, evaluator)
        self.setup, self.names = setup, dict(names or {})

    def freeze(self, sample: dict[str, Any]) -> ReferencedModelSpace:
        frozen = super().freeze(sample)  # NNI copies with the three base arguments only
        frozen.setup, frozen.names = self.setup, self.names
        return frozen

    def _dump(self) -> dict:
        if self.sample is None:  # the unfrozen space (NNI's checkpoint) keeps NNI's own form
            return super()._dump()
        return {**encode_sample(self.sample, self.names), SETUP_KEY: self.setup}

    @classmethod
    def _load(cls, **attrs: Any) -> SimplifiedModelSpace:
        if SETUP_KEY not in attrs:
            return super()._load(**attrs)
        setup_path = attrs.pop(SETUP_KEY)
        with open(setup_path) as handle:
            setup = nni.load(fp=handle)
        model = cls(SerializableObject(setup["model_symbol"], setup["model_args"], setup["model_kwargs"]), {},
                    setup["evaluator"], setup_path, setup["names"])
        model.status = ModelStatus.Frozen
        model.sample = decode_sample(attrs, setup["names"], setup["inputs"])
        return model


def referenced_space(base: SimplifiedModelSpace, run_dir: Path, names: dict[str, list[str]],
                     inputs: list[str]) -> ReferencedModelSpace:
    """Writes `<run_dir>/trial_setup.json` and wraps `base`; the path is relative to the working directory
    (where NNI starts NAS trials, and what a remote training service copies) when the run folder is inside it."""
    path = Path(run_dir) / SETUP_FILE
    setup = {"model_symbol": base.model.trace_symbol, "model_args": base.model.trace_args,
             "model_kwargs": base.model.trace_kwargs, "evaluator": base.evaluator, "names": names, "inputs": inputs}
    text = nni.dump(setup)
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))
    resolved = path.resolve()
    reference = os.path.relpath(resolved) if resolved.is_relative_to(Path.cwd().resolve()) else str(resolved)
    return ReferencedModelSpace(base.model, base.mutables, base.evaluator, reference, names)
