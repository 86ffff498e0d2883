"""The `emotionnas` command: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Optional

from nni_emotionnas import __version__
from nni_emotionnas.errors import EmotionNASError

# Modules under nni_emotionnas.commands, in the order their subcommands are listed.
COMMAND_MODULES = ["corpus", "search_train", "pipeline", "nni_commands"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotionnas",
        description="EmotionNAS on NNI: search, fuse, train and evaluate speech emotion recognition models.",
    )
    parser.add_argument("--version", action="version", version=f"nni-emotionnas {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"nni_emotionnas.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"nni_emotionnas.commands.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except EmotionNASError as exc:
        print(f"emotionnas {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
