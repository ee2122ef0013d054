"""Exceptions raised for bad user input: configs, files, checkpoints, data."""


class SegkitError(Exception):
    """Base class of every error segkit raises for bad input."""


class ConfigError(SegkitError):
    """A config file, key, type or value that cannot be used."""


class CheckpointError(SegkitError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class DatasetError(SegkitError):
    """A dataset folder, file list, image or label that cannot be used."""
