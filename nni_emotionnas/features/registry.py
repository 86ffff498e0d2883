"""Deep-feature backends by name, imported lazily so optional dependencies stay optional."""

from __future__ import annotations

import importlib
from typing import Any

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.features.base import FeatureExtractor

# backend name -> "module:factory"; factory(options: dict) -> FeatureExtractor
DEEP_BACKENDS: dict[str, str] = {
    "fbank": "nni_emotionnas.features.fbank:from_options",
    "wav2vec": "nni_emotionnas.features.wav2vec:from_options",
    "wav2vec2": "nni_emotionnas.features.torchaudio_backend:wav2vec2_from_options",
    "hubert": "nni_emotionnas.features.torchaudio_backend:hubert_from_options",
    "wavlm": "nni_emotionnas.features.torchaudio_backend:wavlm_from_options",
    "resemblyzer": "nni_emotionnas.features.resemblyzer_backend:from_options",
    "hf": "nni_emotionnas.features.hf_backend:from_options",
    "opensmile": "nni_emotionnas.features.opensmile_backend:from_options",
}

# backends whose checkpoint file is unpickled in full (fairseq stores argparse/omegaconf objects in it)
UNPICKLING_BACKENDS = {"wav2vec": "checkpoint"}


def unpickled_checkpoint(options: dict[str, Any]) -> Any:
    """The checkpoint a `features.deep` section makes us unpickle (running any code it holds), else None."""
    key = UNPICKLING_BACKENDS.get(options.get("backend"))
    return options.get(key) if key else None


def build_deep_extractor(options: dict[str, Any]) -> FeatureExtractor:
    """Builds the deep-stream extractor named by `options["backend"]` (the `features.deep` section)."""
    options = dict(options)
    backend = options.pop("backend", None)
    if backend not in DEEP_BACKENDS:
        raise ConfigError(
            f"features.deep.backend: unknown backend {backend!r} (known: {', '.join(sorted(DEEP_BACKENDS))})"
        )
    module_name, factory_name = DEEP_BACKENDS[backend].split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(options)
