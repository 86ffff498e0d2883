"""Ctrl-C and SIGTERM stop a command within seconds: the first raises `Interrupted`, a second one exits at once.

Exit status: 130 after SIGINT, 143 after SIGTERM (128 + signal number, what a shell reports for a process
the signal killed), so schedulers and scripts can tell a stop from a failure (1) or bad input (2).
Finished files are safe because everything a rerun trusts is written atomically (temp file + rename).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM: the command stops, finished files stay.

    A BaseException but not a KeyboardInterrupt on purpose: Lightning turns a KeyboardInterrupt inside
    `fit` into `sys.exit(1)` (and then ignores further Ctrl-C), and NNI's experiment loop logs and swallows
    it, so a search would carry on into the next stage. Neither catches this type.
    """

    def __init__(self, signal_name: str, exit_status: int):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_status = exit_status


EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


@contextmanager
def stop_on_signals(quiet: bool = True) -> Iterator[None]:
    """Installs the handlers for the body of a command and restores the previous ones afterwards.

    Lightning keeps a SIGTERM handler installed before `fit` and calls it after its own, so ours still
    runs inside training. `quiet` mutes logging once a stop is under way: what NNI logs while its
    strategy unwinds ("Model 1 fails to be executed") is noise after a requested stop.
    """
    received: list[int] = []

    def handle(signum: int, frame: object) -> None:
        if received:  # asked twice: the user does not want to wait for the cleanup
            print(f"\nstopped by a second {NAMES[signum]} without cleaning up", file=sys.stderr, flush=True)
            os._exit(EXIT_STATUS[signum])
        received.append(signum)
        if quiet:
            logging.disable(logging.CRITICAL)
        raise Interrupted(NAMES[signum], EXIT_STATUS[signum])

    previous = {signum: signal.signal(signum, handle) for signum in EXIT_STATUS}
    muted = logging.root.manager.disable
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        logging.disable(muted)
