"""Exceptions raised for bad user input: configs, files, checkpoints, data."""


class SegkitError(Exception):
    """Base class of every error segkit raises for bad input."""


class ConfigError(SegkitError):
    """A config file, key, type or value that cannot be used.

    Args:
        message: what was received, what was expected and how to fix it.
        key: the dotted config key at fault, when there is one; the config loader uses it to name
            the file the key came from.
    """

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


class CheckpointError(SegkitError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class DatasetError(SegkitError):
    """A dataset folder, file list, image or label that cannot be used."""


class TrainingError(SegkitError):
    """Training cannot go on (e.g. the loss became NaN or Inf)."""


class StoppedBySignal(SegkitError):
    """A run stopped on a signal; the tools exit with 128 + the signal number, as a shell reports it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum
