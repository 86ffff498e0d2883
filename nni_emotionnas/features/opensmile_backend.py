"""openSMILE features (the `opensmile` wheel ships the extractor and its configurations, so it works offline).

Two extractors share this module: frame-level low-level descriptors (LLDs) for the deep stream
(`features.deep.backend: opensmile`), and utterance functionals for the `classic` baseline, the feature
vectors speech-emotion papers compare against (ComParE 2016: 6373 values, eGeMAPS: 88).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, Optional

import numpy as np

from nni_emotionnas.errors import BackendError
from nni_emotionnas.features.base import UtteranceExtractor

FeatureSetName = Literal["ComParE_2016", "eGeMAPSv02", "GeMAPSv01b"]
# Sets whose configuration defines first-order deltas of the LLDs (the GeMAPS sets do not).
SETS_WITH_DELTAS = ("ComParE_2016",)
SAMPLE_RATE = 16000
HOP_MS = 10.0
INSTALL = "pip install 'nni-emotionnas[opensmile]' (or: pip install opensmile)"


def import_opensmile() -> ModuleType:
    """The `opensmile` package; a missing install becomes a one-line `BackendError` naming the command."""
    try:
        import opensmile
    except ImportError as exc:
        raise BackendError(f"openSMILE features need the opensmile package: {INSTALL} [{exc}]") from exc
    return opensmile


class _Smile:
    """Builds `opensmile.Smile` lazily and drops it when pickled: worker processes rebuild their own."""

    def __init__(self, feature_set: str, level: str) -> None:
        self.feature_set = feature_set
        self.level = level
        self._smile = None

    def process(self, audio: np.ndarray) -> np.ndarray:
        if self._smile is None:
            opensmile = import_opensmile()
            self._smile = opensmile.Smile(
                feature_set=opensmile.FeatureSet[self.feature_set], feature_level=opensmile.FeatureLevel[self.level]
            )
        frame = self._smile.process_signal(np.asarray(audio, dtype=np.float32), SAMPLE_RATE)
        return frame.to_numpy(dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_smile": None}


@dataclass
class OpenSmileLLDOptions:
    """The `features.deep` section for `backend: opensmile`.

    `feature_set`: which openSMILE configuration's LLDs (ComParE_2016: 65, eGeMAPSv02: 25, GeMAPSv01b: 18).
    `deltas`: append the set's own first-order deltas where it defines them (ComParE_2016 -> 130 per frame);
    ignored for the GeMAPS sets, which define none.
    """

    feature_set: FeatureSetName = "ComParE_2016"
    deltas: bool = True


class OpenSmileLLDExtractor(UtteranceExtractor):
    """Frames x LLDs (+ deltas) float32, one frame every 10 ms; pure CPU, so the store runs it in workers."""

    name = "opensmile"

    def __init__(self, options: Optional[OpenSmileLLDOptions] = None) -> None:
        self.options = options or OpenSmileLLDOptions()
        import_opensmile()
        self.with_deltas = self.options.deltas and self.options.feature_set in SETS_WITH_DELTAS
        self._lld = _Smile(self.options.feature_set, "LowLevelDescriptors")
        self._deltas = _Smile(self.options.feature_set, "LowLevelDescriptors_Deltas") if self.with_deltas else None

    def config(self) -> dict[str, Any]:
        return {
            "feature_set": self.options.feature_set,
            "deltas": self.with_deltas,
            "hop_ms": HOP_MS,
            "opensmile": import_opensmile().__version__,
        }

    def extract(self, audio: np.ndarray) -> np.ndarray:
        frames = self._lld.process(audio)
        if self._deltas is not None:
            # openSMILE's delta output is frame-aligned with the LLDs and flushes a few extra frames at the end
            deltas = self._deltas.process(audio)[: len(frames)]
            frames = np.concatenate([frames, deltas], axis=1)
        return np.ascontiguousarray(frames)


class OpenSmileFunctionalsExtractor(UtteranceExtractor):
    """One utterance-level vector of a set's functionals (statistics of its LLDs over the whole utterance)."""

    name = "opensmile-functionals"

    def __init__(self, feature_set: FeatureSetName = "ComParE_2016") -> None:
        import_opensmile()
        self.feature_set = feature_set
        self._smile = _Smile(feature_set, "Functionals")

    def config(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, "opensmile": import_opensmile().__version__}

    def extract(self, audio: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._smile.process(audio)[0])
