"""Deep-feature backends by name, imported lazily so optional dependencies stay optional."""

from __future__ import annotations

import importlib
from typing import Any

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.features.base import FeatureExtractor

# backend name -> "module:factory"; factory(options: dict) -> FeatureExtractor
DEEP_BACKENDS: dict[str, str] = {}


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
