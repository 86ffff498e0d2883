"""Exceptions users see: each names the file or config key at fault.

`exit_status` is the command's exit status for the error: 2 for a problem in what the user asked
(config, corpus, arguments), 1 for a failure of the environment (a folder in use, a full disk).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional


class EmotionNASError(Exception):
    """Base class of every error the product raises on purpose."""

    exit_status = 2


class ConfigError(EmotionNASError):
    """A config file or value is malformed; the message names the key."""


class AudioError(EmotionNASError):
    """An audio file cannot be used; the message names the file."""


class CorpusError(EmotionNASError):
    """A corpus is missing, malformed or has labels the config does not allow."""


class FoldError(EmotionNASError):
    """A fold would leak speakers between train/val/test or lacks a class."""


class BackendError(EmotionNASError):
    """A feature backend or checkpoint is unavailable; the message says how to fix it."""


class RunFolderError(EmotionNASError):
    """A run folder cannot be used as asked (another experiment's, a changed corpus, a file, damaged)."""


class RunLockedError(RunFolderError):
    """Another live process is running in the folder; the message names it (pid, host, start time)."""

    exit_status = 1


class StorageError(EmotionNASError):
    """A file could not be written for a reason the user fixes: permissions, a full disk, a read-only mount."""

    exit_status = 1


# errno -> (what happened, what to do); any other OSError is a bug and keeps its traceback
_STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free some space and run again (finished work is kept)"),
    errno.EDQUOT: ("disk quota exceeded", "free some space and run again (finished work is kept)"),
    errno.EACCES: ("permission denied", "make it writable or choose another folder"),
    errno.EPERM: ("operation not permitted", "make it writable or choose another folder"),
    errno.EROFS: ("read-only file system", "choose a folder on a writable file system"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
}


def storage_error(exc: OSError, what: str, where: object = None) -> Optional[StorageError]:
    """The user-facing form of an OSError a user can fix (None for any other OSError).

    The message names the file the OSError names, else `where` (the folder being written).
    """
    if exc.errno not in _STORAGE_ERRNOS:
        return None
    happened, todo = _STORAGE_ERRNOS[exc.errno]
    return StorageError(f"{exc.filename or where}: {happened} ({what}); {todo}")


@contextmanager
def storage_errors(what: str, where: object = None) -> Iterator[None]:
    """Turns permission / full-disk / read-only OSErrors raised inside into a `StorageError`.

    `what` says what was being done, e.g. "writing the feature cache"; the message names the file.
    """
    try:
        yield
    except OSError as exc:
        converted = storage_error(exc, what, where)
        if converted is None:
            raise
        raise converted from exc
