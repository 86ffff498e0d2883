"""The `emotionnas` command: argument parsing only; each module registers its subcommands and imports lazily."""

from nni_emotionnas.cli.app import console, main

__all__ = ["console", "main"]
