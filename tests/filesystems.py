"""Real read-only folders and full disks for fault tests.

As a normal user, `chmod a-w` makes a folder read-only; root ignores permission bits, so as root the folder
is bind-mounted read-only onto itself instead. A full disk is a tiny tmpfs, which needs root and mount
rights: `small_filesystem` yields None where that is impossible, and the caller patches a writer instead.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pytest


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` (a folder) and everything in it cannot be written while the context lasts."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    if not (_mount("--bind", str(path), str(path)) and _mount("-o", "remount,bind,ro", str(path))):
        subprocess.run(["umount", str(path)], capture_output=True)
        pytest.skip("running as root without mount rights: no way to make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


@contextmanager
def small_filesystem(path: Path, size_kb: int) -> Iterator[Optional[Path]]:
    """A real `size_kb` tmpfs mounted at `path` (created), or None where mounting is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)):
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
