"""The `emotionnas` command: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Optional

from nni_emotionnas import __version__
from nni_emotionnas.cli.failures import describe
from nni_emotionnas.cli.interrupts import stop_on_signals
from nni_emotionnas.threads import wait_passively

# Modules under nni_emotionnas.cli, in the order their subcommands are listed.
COMMAND_MODULES = ["corpus", "search_train", "pipeline", "nni_commands"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotionnas",
        description="EmotionNAS on NNI: search, fuse, train and evaluate speech emotion recognition models.",
    )
    parser.add_argument("--version", action="version", version=f"nni-emotionnas {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"nni_emotionnas.cli.{name}").register(subparsers)
    for command_parser in [parser, *subparsers.choices.values()]:
        add_global_flags(command_parser, top_level=command_parser is parser)
    return parser


# what the line after Ctrl-C says of commands that resume (other commands start again)
RESUME_HINTS = {
    command: "finished searches and models in the run folder are kept: rerun the same command to resume"
    for command in ("run", "demo")
}
GLOBAL_FLAGS = {
    "--verbose": "show NNI's and Lightning's own log messages and warnings",
    "--debug": "show the traceback of a failure instead of a one-line message",
}


def add_global_flags(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """--verbose/--debug work before and after the subcommand (a subcommand's default must not reset them)."""
    for flag, help_text in GLOBAL_FLAGS.items():
        try:
            parser.add_argument(flag, action="store_true", default=False if top_level else argparse.SUPPRESS,
                                help=help_text)
        except argparse.ArgumentError:  # the command defines the flag itself
            continue


# Warnings NNI logs on every one-shot search about its own wiring, meant for its developers: its one-shot
# strategy moves the val loader into training (then finds it missing) and our search keeps no checkpoints.
DEVELOPER_WARNINGS = [
    ("nni.nas.oneshot.pytorch.strategy", "Checkpoint callback is found to be None"),
    ("nni.nas.evaluator.pytorch.lightning", "Validation dataloaders are missing"),
]


def quiet_libraries() -> None:
    """Keeps the terminal for our progress bars and results: NNI and Lightning chatter goes to warnings only.

    Both libraries set their loggers' levels when first imported, so they are imported before we lower them.
    """
    import nni  # noqa: F401
    import pytorch_lightning  # noqa: F401

    for name in ("nni", "pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # repeated on every one-shot search: we never set a training service for one-shot strategies
    logging.getLogger("nni.nas.experiment.config.experiment").setLevel(logging.ERROR)
    for logger, message in DEVELOPER_WARNINGS:
        logging.getLogger(logger).addFilter(lambda record, text=message: not record.getMessage().startswith(text))
    # fusion's head phase keeps the frozen streams in eval mode on purpose (batch-norm statistics); a refit
    # (`train.refit`) trains with nothing held out, so its module's validation step goes unused
    for message in (".*LeafSpec.*", ".*does not have many workers.*", ".*smaller than the logging interval.*",
                    ".*module\\(s\\) in eval mode at the start of training.*", ".*but have no `val_dataloader`.*"):
        warnings.filterwarnings("ignore", message=message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with stop_on_signals(quiet=not args.verbose):
            if not args.verbose:
                quiet_libraries()
            return int(args.handler(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - sorted into expected failures (one line) and bugs (re-raised)
        failure = describe(exc, RESUME_HINTS.get(args.command))
        if failure is None:
            raise
        if args.debug:
            traceback.print_exc()
        message, status = failure
        print(f"emotionnas {args.command}: {message}", file=sys.stderr, flush=True)
        return status


def console() -> None:
    """The `emotionnas` script: `main`, then exit without the interpreter's final sweep of the heap.

    With torch, NNI and Lightning loaded that sweep takes seconds, which a user waiting on Ctrl-C notices;
    freezing is harmless because the process ends right after.
    OpenMP's wait policy is set first, while torch is not loaded yet (`nni_emotionnas.threads`).
    """
    wait_passively()
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    console()
