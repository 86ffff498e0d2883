"""Small pieces the neural deep-feature backends share: device choice, layer selection, file identity."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Union

import torch

from nni_emotionnas.errors import BackendError, ConfigError

# `layer` option of a layered encoder: one layer (int, negative counts from the top) or every layer stacked
LayerSpec = Union[int, Literal["weighted"]]
Device = Literal["auto", "cpu", "cuda"]


def resolve_device(device: Device) -> torch.device:
    """`auto` means the GPU when there is one; asking for `cuda` without one is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendError("features.deep.device: 'cuda' requested but torch sees no GPU; use 'auto' or 'cpu'")
    return torch.device(device)


def select_layers(layer: LayerSpec, available: list[int], where: str = "features.deep.layer") -> list[int]:
    """Resolves `layer` against the encoder's layer numbers: one layer, or all of them for `weighted`."""
    if layer == "weighted":
        return list(available)
    if not isinstance(layer, int) or isinstance(layer, bool) or not -len(available) <= layer <= available[-1]:
        raise ConfigError(
            f"{where}: {layer!r} is out of range; use {available[0]}..{available[-1]}, "
            f"-1..-{len(available)} (from the top) or 'weighted'"
        )
    if layer < 0:
        return [available[layer]]
    if layer not in available:
        raise ConfigError(f"{where}: {layer!r} is not a layer of this encoder ({available[0]}..{available[-1]})")
    return [layer]


def file_stamp(path: Path) -> str:
    """Cheap identity (name, size, mtime) for weights too large to hash on every run."""
    stat = Path(path).stat()
    return f"{Path(path).name}:{stat.st_size}:{stat.st_mtime_ns}"
