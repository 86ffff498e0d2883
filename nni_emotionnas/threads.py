"""How many threads each kind of work uses, so that a run degrades gracefully beside another busy process.

Torch's default is one intra-op thread per core, and its OpenMP threads spin for a while when they run out
of work. That suits one large network on an idle machine; it does not suit the small stream networks this
project trains (their per-batch matrices are tiny), and beside a second process two spinning threads per
process fight for two cores (docs/results.md). The policy:

- `stream`: stream networks, their cross-fitted copies and fusion heads: 1 thread (the batch is too small to
  split; one thread per process never waits for a descheduled partner);
- `supernet`: a search step (the spectrogram supernet is large): every core the process may use;
- `worker`: a feature-extraction or fold worker process: 1 thread, times the number of workers.

OpenMP threads sleep as soon as their work runs out (`OMP_WAIT_POLICY=PASSIVE`, set by the command-line
entry points before torch loads, unless the user set it). `EMOTIONNAS_THREADS=N` gives every kind of work
N threads instead; a config section's own `threads` key still wins for its fits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Optional

THREADS_ENV = "EMOTIONNAS_THREADS"
Work = Literal["stream", "supernet", "worker"]
_cores_share: Optional[int] = None  # a worker process's share of the cores (`share_cores`)


def wait_passively() -> None:
    """Idle OpenMP threads sleep instead of spinning; only effective before torch (libgomp) is loaded."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """The cores this process may use: its share when it is one of several workers, else all it may run on."""
    if _cores_share is not None:
        return _cores_share
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_cores(workers: int) -> int:
    """Called in each of `workers` worker processes: their supernet steps split the cores between them."""
    global _cores_share
    _cores_share = max(1, usable_cores() // max(1, workers))
    return _cores_share


def policy_threads(work: Work) -> int:
    """The thread count for `work`: `EMOTIONNAS_THREADS` if set, else the policy above."""
    override = os.environ.get(THREADS_ENV, "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            from nni_emotionnas.errors import ConfigError

            raise ConfigError(f"{THREADS_ENV} must be a whole number of at least 1, got {override!r}")
        return int(override)
    return usable_cores() if work == "supernet" else 1


@contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Runs the block with `count` torch intra-op threads (None: unchanged), then restores the previous count."""
    import torch

    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
