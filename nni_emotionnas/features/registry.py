"""Deep-feature backends by name, imported lazily so optional dependencies stay optional."""

from __future__ import annotations

import importlib
from typing import Any

from nni_emotionnas.config.parse import parse
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.features.base import FeatureExtractor

# backend name -> "module:extractor:options"; the extractor gets the `features.deep` section without `backend`,
# parsed into the options dataclass
DEEP_BACKENDS: dict[str, str] = {
    "fbank": "nni_emotionnas.features.fbank:FbankExtractor:FbankConfig",
    "wav2vec": "nni_emotionnas.features.wav2vec:Wav2VecExtractor:Wav2VecConfig",
    "wav2vec2": "nni_emotionnas.features.torchaudio_backend:wav2vec2:TorchaudioConfig",
    "hubert": "nni_emotionnas.features.torchaudio_backend:hubert:TorchaudioConfig",
    "wavlm": "nni_emotionnas.features.torchaudio_backend:wavlm:TorchaudioConfig",
    "resemblyzer": "nni_emotionnas.features.resemblyzer_backend:ResemblyzerExtractor:ResemblyzerOptions",
    "hf": "nni_emotionnas.features.hf_backend:HFExtractor:HFOptions",
    "opensmile": "nni_emotionnas.features.opensmile_backend:OpenSmileLLDExtractor:OpenSmileLLDOptions",
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
    module_name, extractor, options_class = DEEP_BACKENDS[backend].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, extractor)(parse(getattr(module, options_class), options, "features.deep"))
