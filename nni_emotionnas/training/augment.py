"""SpecAugment-style perturbation of training batches (time shift, frequency and time masks).

Applied by `SERModule.training_step` only, so validation, test and prediction always see clean inputs; a
generator seeded from the training seed makes an augmented run reproducible.
"""

from __future__ import annotations

from typing import Any

import torch

from nni_emotionnas.config.training import AugmentConfig


def _spans(count: int, width: int, length: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, length) bool: `count` spans of 0..`width` positions each, placed uniformly."""
    positions = torch.arange(length)
    masked = torch.zeros(batch, length, dtype=torch.bool)
    for _ in range(count):
        widths = torch.randint(0, min(width, length) + 1, (batch, 1), generator=generator)
        starts = (torch.rand(batch, 1, generator=generator) * (length - widths + 1)).long()
        masked |= (positions >= starts) & (positions < starts + widths)
    return masked


def _shift(x: torch.Tensor, limit: int, time_dim: int, generator: torch.Generator) -> torch.Tensor:
    """Rolls each example along time by up to `limit` steps (the same circular shift SER recipes use)."""
    if limit <= 0:
        return x
    offsets = torch.randint(-limit, limit + 1, (x.shape[0],), generator=generator).tolist()
    return torch.stack([torch.roll(example, offset, dims=time_dim - 1) for example, offset in zip(x, offsets)])


def augment_spectrogram(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Batch x 1 x frequency x time -> shifted, with frequency bands and time spans zeroed."""
    batch, _, rows, cols = x.shape
    x = _shift(x, config.time_shift, 3, generator)
    keep = ~_spans(config.masks, config.freq_width, rows, batch, generator)[:, None, :, None]
    keep = keep & ~_spans(config.masks, config.time_width, cols, batch, generator)[:, None, None, :]
    return x * keep


def augment_frames(inputs: dict[str, torch.Tensor], config: AugmentConfig, generator: torch.Generator) -> dict:
    """Deep frames (batch x time x dim): time spans zeroed; the mask is kept, so pooling still sees them."""
    frames = inputs["frames"]
    keep = ~_spans(config.masks, config.time_width, frames.shape[1], frames.shape[0], generator)
    return {**inputs, "frames": frames * keep[..., None]}


def augment_batch(inputs: Any, config: AugmentConfig, generator: torch.Generator) -> Any:
    """Augments whichever streams a batch holds (a spectrogram tensor, a frames dict or both)."""
    if not config.enabled:
        return inputs
    if isinstance(inputs, torch.Tensor):
        return augment_spectrogram(inputs, config, generator) if "spectrogram" in config.streams else inputs
    out = dict(inputs)
    if "spectrogram" in out and "spectrogram" in config.streams:
        out["spectrogram"] = augment_spectrogram(out["spectrogram"], config, generator)
    if "frames" in out and "deep" in config.streams:
        out = augment_frames(out, config, generator)
    return out
