"""Experiment files -> validated config dataclasses (and the packaged default files); every stage reads these."""
