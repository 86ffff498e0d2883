"""Unifies deep-feature sequences to one length as the paper does: zero-pad to the corpus maximum, then
average-pool to a fixed number of frames, keeping a mask of the frames that hold speech features."""

from __future__ import annotations

from typing import Optional

import numpy as np

from nni_emotionnas.config.experiment import DeepSequenceConfig


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
