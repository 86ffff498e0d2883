"""The `emotionnas` command: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Optional

from nni_emotionnas import __version__
from nni_emotionnas.errors import EmotionNASError

# Modules under nni_emotionnas.cli, in the order their subcommands are listed.
COMMAND_MODULES = ["corpus", "search_train", "pipeline", "nni_commands"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotionnas",
        description="EmotionNAS on NNI: search, fuse, train and evaluate speech emotion recognition models.",
    )
    parser.add_argument("--version", action="version", version=f"nni-emotionnas {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show NNI's and Lightning's own log messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"nni_emotionnas.cli.{name}").register(subparsers)
    return parser


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
    for message in (".*is found to be not a nn.Module.*", ".*LeafSpec.*", ".*does not have many workers.*",
                    ".*smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        quiet_libraries()
    try:
        return int(args.handler(args) or 0)
    except EmotionNASError as exc:
        print(f"emotionnas {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
