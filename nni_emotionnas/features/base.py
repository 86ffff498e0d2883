"""The interface every feature extractor implements, so the store can cache any of them."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class FeatureExtractor(Protocol):
    """Turns one utterance (16 kHz mono float32) into a feature array.

    `config()` must hold everything that changes the output (it keys the cache). Extractors with
    `parallel = True` are picklable numpy code run in worker processes; the others (neural encoders)
    run in the main process through `extract_batch`, where they may use a GPU.
    """

    name: str
    parallel: bool

    def config(self) -> dict[str, Any]: ...

    def extract(self, audio: np.ndarray) -> np.ndarray: ...

    def extract_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]: ...


class UtteranceExtractor:
    """Base of the extractors of picklable numpy code, one utterance at a time (run in worker processes)."""

    parallel = True

    def extract_batch(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        return [self.extract(audio) for audio in audios]  # type: ignore[attr-defined]


class BatchExtractor:
    """Base of the neural encoders, which run batches in the main process (where they may use a GPU)."""

    parallel = False

    def extract(self, audio: np.ndarray) -> np.ndarray:
        return self.extract_batch([audio])[0]  # type: ignore[attr-defined]


def config_digest(name: str, config: dict[str, Any]) -> str:
    """A short stable hash of an extractor's identity, used as its cache folder name."""
    payload = json.dumps({"name": name, "config": config}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]
