"""Corpus readers: each turns a corpus on disk into a list of `Utterance` records."""

from nni_emotionnas.corpora.records import Utterance

__all__ = ["Utterance"]
