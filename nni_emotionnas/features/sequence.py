"""Unifies deep-feature sequences to one length as the paper does: zero-pad to the corpus maximum, then
average-pool to a fixed number of frames, keeping a mask of the frames that hold speech features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class DeepSequenceConfig:
    """Knobs of the length unification (the `features.sequence` section of the experiment file).

    `target_frames`: frames every utterance ends with (727 in the paper). `max_frames`: length every
    utterance is zero-padded (or cropped) to before pooling; `None` means the corpus maximum, which the
    data layer passes in. `min_valid_fraction`: a pooled frame is valid when more than this fraction of
    the frames averaged into it are real (0 = any real frame makes it valid).
    """

    target_frames: int = 727
    max_frames: Optional[int] = None
    min_valid_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.target_frames < 1:
            raise ValueError(f"target_frames must be at least 1, got {self.target_frames}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {self.max_frames}")
        if not 0.0 <= self.min_valid_fraction < 1.0:
            raise ValueError(f"min_valid_fraction must be in [0, 1), got {self.min_valid_fraction}")


def pooling_bins(length: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Start/end (exclusive) of the frames averaged into each output frame, as adaptive average pooling."""
    index = np.arange(target)
    starts = (index * length) // target
    ends = -((-(index + 1) * length) // target)
    return starts, ends


def unify_length(
    frames: np.ndarray, corpus_max_frames: int, config: Optional[DeepSequenceConfig] = None
) -> tuple[np.ndarray, np.ndarray]:
    """`frames` (T x D) -> (`target_frames` x D float32, `target_frames` bool mask of valid frames).

    Every utterance is first zero-padded to the same length (so one pooled frame covers the same time
    span in every utterance), then averaged down; when that length is below `target_frames` the padded
    sequence is used as is and zero-padded up to `target_frames`.
    """
    config = config or DeepSequenceConfig()
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 2:
        raise ValueError(f"expected frames x dim features, got shape {frames.shape}")
    padded_length = config.max_frames or max(int(corpus_max_frames), frames.shape[0], 1)
    valid = min(frames.shape[0], padded_length)
    target = config.target_frames
    if padded_length <= target:
        out = np.zeros((target, frames.shape[1]), dtype=np.float32)
        out[:valid] = frames[:valid]
        mask = np.zeros(target, dtype=bool)
        mask[:valid] = True
        return out, mask
    starts, ends = pooling_bins(padded_length, target)
    # cumulative sums over the real frames; the zero padding adds nothing to the sums
    cumulative = np.zeros((valid + 1, frames.shape[1]), dtype=np.float64)
    np.cumsum(frames[:valid], axis=0, out=cumulative[1:])
    real_starts, real_ends = np.minimum(starts, valid), np.minimum(ends, valid)
    sums = cumulative[real_ends] - cumulative[real_starts]
    widths = (ends - starts).astype(np.float64)
    out = (sums / widths[:, None]).astype(np.float32)
    mask = (real_ends - real_starts) / widths > config.min_valid_fraction
    return out, mask
