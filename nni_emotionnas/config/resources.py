"""Packaged default files (search spaces, strategies), found the same way from a checkout or a wheel.

pyproject maps the top-level `search_spaces/` and `strategies/` folders to `nni_emotionnas/search_spaces/`
and `nni_emotionnas/strategies/` in a wheel. We look them up as data folders inside the installed
`nni_emotionnas` package rather than as importable packages, because the module `nni_emotionnas/strategies.py`
shadows a data-only `nni_emotionnas.search.strategies` package on import; in a source checkout those folders do
not exist inside the package, so we fall back to the folders beside it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from nni_emotionnas.errors import ConfigError

KINDS = {"search_spaces": "search_spaces", "strategies": "strategies", "examples": "examples"}


def default_file(kind: str, name: str) -> Path:
    """Path of a packaged default file, e.g. `default_file("strategies", "darts.yml")`."""
    if kind not in KINDS:
        raise ConfigError(f"unknown resource kind {kind!r} (known: {', '.join(KINDS)})")
    candidates = []
    candidates.append(Path(str(resources.files("nni_emotionnas").joinpath(KINDS[kind], name))))
    candidates.append(Path(__file__).resolve().parents[2] / KINDS[kind] / name)
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"{kind}/{name}: no such packaged file")
