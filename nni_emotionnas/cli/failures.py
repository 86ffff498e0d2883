"""Expected failures as one line naming the file and what to do, with the exit status scripts can test.

Status 2: the input is wrong (config, corpus, audio: an `EmotionNASError`, unless it says otherwise);
1: the machine refused (permissions, full disk, a folder where a file belongs); 130/143: stopped by
SIGINT/SIGTERM.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import io
import traceback
from typing import Optional

from nni_emotionnas.cli.interrupts import Interrupted
from nni_emotionnas.errors import EmotionNASError

INPUT_ERROR = 2
ENVIRONMENT_ERROR = 1
SIGINT_STATUS = 130

# errno -> what the user can do about it; the file the system names is put in front
OS_ADVICE = {
    errno.EACCES: "permission denied: make it writable (or readable) for you, or choose another --out",
    errno.EPERM: "operation not permitted: make it writable for you, or choose another --out",
    errno.EROFS: "read-only file system: choose another --out or features.cache_dir",
    errno.ENOSPC: "no space left on the device: free some space (or move --out / features.cache_dir), then rerun",
    errno.EDQUOT: "disk quota exceeded: free some space (or move --out / features.cache_dir), then rerun",
    errno.EISDIR: "is a folder where a file is expected: pass the file, or move the folder away",
    errno.ENOTDIR: "a file stands where a folder is expected: pass a folder, or move the file away",
    errno.ENOENT: "not found: check the path",
    errno.EEXIST: "already exists: choose another path",
}


def interrupt_of(exc: BaseException) -> Optional[Interrupted]:
    """The stop request behind `exc`, also when a library converted Ctrl-C on the way up.

    Lightning answers a KeyboardInterrupt inside `fit` with `sys.exit(1)`, raised while handling it.
    """
    if isinstance(exc, Interrupted):
        return exc
    if isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt)
    ):
        return Interrupted("Ctrl-C (SIGINT)", SIGINT_STATUS)
    return None


def file_in_flight(exc: BaseException) -> Optional[str]:
    """The file an OSError without a file name was about: the innermost open file among the failing frames.

    A write or flush that fills the disk raises ENOSPC naming no file; the frame that wrote holds the handle.
    """
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                return value.name
    return None


def os_error_message(exc: OSError) -> str:
    """`<file>: <what to do>`; a rename names its destination (our writes rename a temp file into place)."""
    advice = OS_ADVICE.get(exc.errno or -1, exc.strerror or str(exc))
    name = exc.filename2 or exc.filename or file_in_flight(exc)
    return f"{name}: {advice}" if name is not None else advice


def describe(exc: BaseException, resume_hint: Optional[str] = None) -> Optional[tuple[str, int]]:
    """(message, exit status) for an expected failure, None for a bug."""
    interrupt = interrupt_of(exc)
    if interrupt is not None:
        after = resume_hint or "rerun the command to start again"
        return f"interrupted by {interrupt.signal_name}; {after}", interrupt.exit_status
    if isinstance(exc, EmotionNASError):  # errors of the machine (a lock, a full disk) may say 1
        return f"error: {exc}", getattr(exc, "exit_status", INPUT_ERROR)
    if isinstance(exc, OSError):
        return f"error: {os_error_message(exc)}", ENVIRONMENT_ERROR
    return None
