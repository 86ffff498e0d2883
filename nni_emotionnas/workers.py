"""Worker processes that never outlive the command that started them."""

from __future__ import annotations

import os
import threading
import time

# librosa modules that compile numba functions with `cache=True` when they load (lazily, on first use)
NUMBA_CACHED_MODULES = ("librosa.core.audio", "librosa.core.pitch", "librosa.util.utils")


def compile_before_workers() -> None:
    """Loads the librosa modules whose numba functions write librosa's on-disk cache, in this process, before it
    starts workers: several processes compiling into a cold cache at once can leave an index that points at
    another signature's binary, and a later process that loads it crashes (a segmentation fault in numba)."""
    import importlib

    for name in NUMBA_CACHED_MODULES:
        importlib.import_module(name)


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: the worker exits once its parent is gone, so a killed run leaves no workers (nor,
    once they are gone, multiprocessing's resource tracker) behind."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def start_extraction_worker(parent_pid: int) -> None:
    """Feature-extraction worker initializer: dies with its parent, and its BLAS/OpenMP pools keep to the
    thread policy's `worker` count (several workers already use every core)."""
    from threadpoolctl import threadpool_limits

    from nni_emotionnas.threads import policy_threads

    die_with_parent(parent_pid)
    threadpool_limits(policy_threads("worker"))
