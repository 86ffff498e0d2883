"""Advisory file locks for run folders and cache entries.

`fcntl.flock` locks belong to an open file and the kernel drops them when their process dies, so a lock
left by a killed run is never mistaken for a live one: its file is still there (with the dead holder's
pid, host and start time) but nobody holds it, and the next process takes it over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from nni_emotionnas.errors import RunLockedError


def describe_holder(holder: dict[str, Any]) -> str:
    """`pid 123 on host, started 2026-12-01 01:02:03 (emotionnas run exp.yml)`."""
    command = f" ({holder['command']})" if holder.get("command") else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}{command}"


def _read_holder(fd: int) -> Optional[dict[str, Any]]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        holder = json.loads(raw.decode()) if raw.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": "?", "note": "unreadable lock file"}
    return holder if isinstance(holder, dict) else None


def _open_locked(path: Path, blocking: bool) -> Optional[int]:
    """Opens (creating) `path` and flocks it; None when another process holds it and `blocking` is False.

    Releasing a lock unlinks its file, so a process that opened the file just before the unlink could lock
    a file nobody else sees any more: after locking, the open file must still be the one at `path`.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _release(path: Path, fd: int) -> None:
    """Unlinks the lock file while still holding it, then closes (which drops the lock)."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


class FolderLock:
    """One process at a time in a folder; the lock file says who holds it (pid, host, start time, command)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: Optional[int] = None

    def acquire(self) -> Optional[dict[str, Any]]:
        """Takes the lock or raises `RunLockedError` naming the live holder.

        Returns the holder recorded by a process that died holding the lock (a stale lock now taken over),
        else None.
        """
        fd = _open_locked(self.path, blocking=False)
        if fd is None:
            holder = self.holder() or {}
            raise RunLockedError(
                f"{self.path.parent}: in use by another emotionnas process ({describe_holder(holder)}); "
                "wait for it to finish or stop it, or pass another --out"
            )
        stale = _read_holder(fd)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except OSError:
            _release(self.path, fd)
            raise
        self._fd = fd
        return stale

    def holder(self) -> Optional[dict[str, Any]]:
        """Who the lock file says holds it (None when there is no lock file)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return _read_holder(fd)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _release(self.path, fd)

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def entry_lock_path(target: Path) -> Path:
    """The lock file guarding the write of `target` (hidden, beside it)."""
    return target.with_name(f".{target.name}.lock")


@contextmanager
def entry_lock(target: Path) -> Iterator[None]:
    """Waits for and holds the lock on writing `target`, so two processes never compute one entry twice."""
    path = entry_lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path, blocking=True)
    try:
        yield
    finally:
        _release(path, fd)


def is_entry_busy(target: Path) -> bool:
    """Whether a live process is writing `target` right now (its entry lock is held)."""
    path = entry_lock_path(target)
    if not path.exists():
        return False
    fd = _open_locked(path, blocking=False)
    if fd is None:
        return True
    _release(path, fd)
    return False
