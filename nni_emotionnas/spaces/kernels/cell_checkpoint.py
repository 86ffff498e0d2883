"""Activation checkpointing per cell (`checkpoint_cells: true`): a cell keeps only its inputs for backward and
recomputes its activations there, trading one more forward for most of the memory a step holds.

`torch.utils.checkpoint` reruns the forward as it was, batch norms included; a batch norm in training mode
would then update its running statistics a second time. The rerun here restores them, so a checkpointed step
leaves the same weights, gradients and buffers as a plain one.

The recomputation frees and allocates a cell's activations again in every backward; under glibc's defaults
each would fault fresh pages in (docs/search-cost.md), so freed memory stays in the process heap
(`keep_freed_memory`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nni_emotionnas.errors import ConfigError


@contextmanager
def running_stats_kept(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Restores every batch norm's running statistics (and batch count) under `modules` on exit."""
    norms = [
        m
        for module in modules
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def recomputed(function: Callable[..., Any], tensors: Sequence[torch.Tensor], modules: Iterable[nn.Module]) -> Any:
    """`function(*tensors)`, its activations recomputed in backward instead of kept; the batch norms under
    `modules` (exactly those `function` runs: restoring another's would change a tensor its backward saved)
    keep the running statistics of the first run."""
    runs = 0

    def run(*args: torch.Tensor) -> Any:
        nonlocal runs
        runs += 1
        if runs == 1:
            return function(*args)
        with running_stats_kept(modules):
            return function(*args)

    return checkpoint(run, *tensors, use_reentrant=False)


def checkpointed(cell: nn.Module, inputs: list[torch.Tensor]) -> Any:
    """`cell(inputs)`, its activations recomputed in backward instead of kept (when gradients are on)."""
    if not torch.is_grad_enabled():
        return cell(inputs)
    return recomputed(lambda *tensors: cell(list(tensors)), inputs, [cell])


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # what glibc's own threshold grows to after a PyTorch process frees large tensors
KEPT_FREE_BYTES = 1 << 30  # free memory the heap keeps at its top instead of returning it
MALLOC_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def keep_freed_memory() -> bool:
    """Process-wide, glibc only: the heap keeps up to `KEPT_FREE_BYTES` of freed memory for the next
    allocations instead of returning it to the OS. Returns whether the allocator took the setting (False
    on other C libraries, where nothing changes, and when the user tuned glibc's malloc in the environment,
    e.g. `MALLOC_MMAP_THRESHOLD_=131072` to cap peak RSS: their setting stays)."""
    if any(name in os.environ for name in MALLOC_ENVIRONMENT) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES))


def enable_cell_checkpointing(model: Any, enabled: bool, where: str) -> None:
    """Turns checkpointing on for a network whose cells support it (the spectrogram stream's), with freed
    memory kept for the recomputation (`keep_freed_memory`); asking for it on any other network is a config
    error naming `where`."""
    if not enabled:
        return
    if not hasattr(model, "checkpoint_cells"):
        raise ConfigError(f"{where}: {type(model).__name__} has no cells to checkpoint (spectrogram stream only)")
    model.checkpoint_cells = True
    keep_freed_memory()
