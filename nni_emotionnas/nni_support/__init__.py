"""NNI the way its users work: HPO-style search-space JSON, the nnictl trial entries, export of the best trial
and multi-trial strategies run through the NNI manager (so every trial shows in the web UI)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Callable, Optional

from nni_emotionnas.errors import ConfigError, EmotionNASError

NOT_UNDER_NNICTL = (
    "trial parameters: no NNI experiment launched this process (NNI_PLATFORM is unset, so NNI has no sample to "
    "give): this entry is meant to be launched by nnictl as an experiment's trial command; to run one sample by "
    "hand, pass --parameters JSON"
)


def trial_parameters(text: Optional[str]) -> dict[str, Any]:
    """The sample to run: `--parameters JSON` (`text`), else the tuner's sample from nnictl.

    Outside an experiment NNI answers with an empty sample, which would fail later for a missing key; here it
    says the entry is meant to be launched by nnictl.
    """
    if text is not None:
        try:
            parameters = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--parameters: not valid JSON ({exc})") from exc
        if not isinstance(parameters, dict):
            raise ConfigError(f"--parameters: expected a JSON object of choices, got {type(parameters).__name__}")
        return parameters
    if not os.environ.get("NNI_PLATFORM"):
        raise ConfigError(NOT_UNDER_NNICTL)
    import nni

    parameters = nni.get_next_parameter()
    if not isinstance(parameters, dict):
        raise ConfigError("trial parameters: NNI gave no sample (has the experiment's tuner stopped?)")
    return parameters


def add_trial_arguments(parser: argparse.ArgumentParser, train_section: str) -> None:
    """Arguments every trial entry takes; `train_section` names the experiment section trained with."""
    parser.add_argument("--experiment", required=True, help="experiment YAML (corpus, features)")
    parser.add_argument("--stream", "--branch", dest="stream", required=True, choices=["spectrogram", "deep"])
    parser.add_argument("--space", help="space config YAML (default: the experiment's, else the packaged one)")
    parser.add_argument("--train", help=f"TrainConfig YAML (default: the experiment's {train_section} section)")
    parser.add_argument("--fold", help="fold name (default: the first fold)")
    parser.add_argument("--epochs", type=int, help="override the train config's epochs")
    parser.add_argument("--limit-train-batches", type=int, help="cap batches per epoch (quick runs)")
    parser.add_argument("--seed", type=int, help="override the experiment's seed (weights, data order, splits)")
    parser.add_argument("--parameters", help="a sample as JSON, to run the trial outside nnictl")
    parser.add_argument("--out", help="output folder outside nnictl (inside, NNI's trial folder is used)")


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
