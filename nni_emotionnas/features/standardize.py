"""Feature standardisation with statistics from a fold's training speakers only (as SER practice does).

Spectrograms are standardised per frequency row (mean and std over training utterances and time), deep
frames per dimension (over the training utterances' valid frames). The statistics are a function of the
training indices alone, so neither validation nor test speakers leak into them; a run saves them beside
the fold's models so `predict` applies the same transform.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nni_emotionnas.errors import RunFolderError
from nni_emotionnas.features.store import atomic_write_bytes

EPS = 1e-5


@dataclass
class Standardization:
    """Per-row spectrogram and per-dimension deep-frame mean/std; a stream that is absent stays None."""

    spectrogram_mean: Optional[np.ndarray] = None  # (rows, 1)
    spectrogram_std: Optional[np.ndarray] = None
    deep_mean: Optional[np.ndarray] = None  # (dim,)
    deep_std: Optional[np.ndarray] = None

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """(..., rows, time) standardised; unchanged when no spectrogram statistics are held."""
        if self.spectrogram_mean is None:
            return x
        mean, std = torch.from_numpy(self.spectrogram_mean), torch.from_numpy(self.spectrogram_std)
        return ((x - mean) / std).to(x.dtype)

    def frames(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(..., time, dim) standardised; padding frames stay exactly zero."""
        if self.deep_mean is None:
            return frames
        mean, std = torch.from_numpy(self.deep_mean), torch.from_numpy(self.deep_std)
        return (((frames - mean) / std) * mask[..., None].to(frames.dtype)).to(frames.dtype)

    def apply(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A stream input dict (`spectrogram` and/or `frames` + `mask`, batched or not) standardised."""
        out = dict(inputs)
        if "spectrogram" in out:
            out["spectrogram"] = self.spectrogram(out["spectrogram"])
        if "frames" in out:
            out["frames"] = self.frames(out["frames"], out["mask"])
        return out

    def save(self, path: Path) -> None:
        arrays = {k: v for k, v in vars(self).items() if v is not None}
        atomic_write_bytes(Path(path), lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: Path, redo: str = "") -> Standardization:
        """Statistics `save` wrote; a damaged file (cut short, not arrays of finite numbers with positive
        stds) is a `RunFolderError` naming it and saying `redo` (how to write it again)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            problem = cls.problem(arrays)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # cut short, not an .npz at all
            problem = f"unreadable: {str(exc)[:120]}"
        if problem is not None:
            raise RunFolderError(f"{path}: damaged input statistics ({problem}){'; ' + redo if redo else ''}")
        return cls(**arrays)

    @staticmethod
    def problem(arrays: dict[str, np.ndarray]) -> Optional[str]:
        """What makes `arrays` unusable as saved statistics, None when nothing does."""
        known = {f.name for f in fields(Standardization)}
        for name, array in arrays.items():
            if name not in known:
                return f"unknown array {name!r}"
            if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                return f"{name} holds {array.dtype} values, not finite numbers"
            if name.endswith("_std") and not (array > 0).all():
                return f"{name} is not positive"
        for stream in ("spectrogram", "deep"):
            mean, std = arrays.get(f"{stream}_mean"), arrays.get(f"{stream}_std")
            if (mean is None) != (std is None) or (mean is not None and mean.shape != std.shape):
                return f"{stream}_mean and {stream}_std do not match"
        return None


def fit_standardization(
    train_indices: Sequence[int],
    spectrogram: Optional[Callable[[int], np.ndarray]] = None,
    deep: Optional[Callable[[int], tuple[np.ndarray, np.ndarray]]] = None,
) -> Standardization:
    """Statistics over the training utterances only: `spectrogram(i)` gives rows x time, `deep(i)` (frames,
    mask) of utterance i. Accumulated in float64 so large corpora do not lose precision."""
    out = Standardization()
    if spectrogram is not None:
        mean, std = _mean_std((np.asarray(spectrogram(i), dtype=np.float64) for i in train_indices), axis=1)
        out.spectrogram_mean, out.spectrogram_std = (mean[:, None].astype(np.float32), std[:, None].astype(np.float32))
    if deep is not None:
        pairs = map(deep, train_indices)  # (frames, mask): the valid frames count
        mean, std = _mean_std((np.asarray(f, dtype=np.float64)[np.asarray(m, dtype=bool)] for f, m in pairs), axis=0)
        out.deep_mean, out.deep_std = mean.astype(np.float32), std.astype(np.float32)
    return out


def _mean_std(parts: Iterable[np.ndarray], axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (plus `EPS`) along `axis` over every part, summed in float64."""
    total = squares = None
    count = 0
    for x in parts:
        total = x.sum(axis) if total is None else total + x.sum(axis)
        squares = (x**2).sum(axis) if squares is None else squares + (x**2).sum(axis)
        count += x.shape[axis]
    mean = total / max(count, 1)
    return mean, np.sqrt(np.maximum(squares / max(count, 1) - mean**2, 0.0)) + EPS
