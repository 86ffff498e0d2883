"""Torch intra-op thread counts for a block of work, restored afterwards (feature extraction, training)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import torch


@contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Runs the block with `count` torch intra-op threads (None: unchanged), then restores the previous count."""
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
