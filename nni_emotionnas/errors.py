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
