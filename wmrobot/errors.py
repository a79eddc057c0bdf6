"""The one family of wmrobot errors: each message names the bad value and how to fix it."""


class WmrobotError(Exception):
    """Base of every error wmrobot raises for a user mistake (the CLI prints it as one line)."""


class ConfigError(WmrobotError, ValueError):
    """A configuration value is of the wrong type or out of range."""


class DatasetError(WmrobotError):
    """A dataset is missing, malformed, of a newer format, or does not match what is asked."""


class CheckpointError(WmrobotError):
    """A checkpoint is missing, truncated, or does not match the model or dataset."""


class EnvError(WmrobotError, ValueError):
    """An environment id or argument is unknown or invalid."""
