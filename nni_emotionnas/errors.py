"""Exceptions users see: each names the file or config key at fault."""


class EmotionNASError(Exception):
    """Base class of every error the product raises on purpose."""


class ConfigError(EmotionNASError):
    """A config file or value is malformed; the message names the key."""


class AudioError(EmotionNASError):
    """An audio file cannot be used; the message names the file."""


class CorpusError(EmotionNASError):
    """A corpus is missing, malformed or has labels the config does not allow."""


class FoldError(EmotionNASError):
    """A fold would leak speakers between train/val/test or lacks a class."""


class BackendError(EmotionNASError):
    """A feature backend or checkpoint is unavailable; the message says how to fix it."""
