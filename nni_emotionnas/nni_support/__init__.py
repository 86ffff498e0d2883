"""NNI the way its users work: HPO-style search-space JSON, the nnictl trial entries, export of the best trial
and multi-trial strategies run through the NNI manager (so every trial shows in the web UI)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Callable, Optional

from nni_emotionnas.errors import EmotionNASError


def trial_main(
    prog: str,
    doc: Optional[str],
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], Any],
    argv: Optional[Sequence[str]] = None,
) -> int:
    """`python -m` entry of a trial module: parse, run, print the final result as JSON; errors exit 2."""
    parser = argparse.ArgumentParser(prog=f"python -m nni_emotionnas.nni_support.{prog}", description=doc)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(run(args)))
    except EmotionNASError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
