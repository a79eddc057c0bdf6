"""The one family of wmrobot errors: each message names the bad value and how to fix it."""

import re


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


def check_range(
    key: str, value: float | None, low: float | None, high: float | None = None, closed=True
) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (``<`` if not ``closed``);
    a bound of None is open, and so is a value of None (an unset optional setting)."""
    if value is None:
        return
    above = low is None or (value >= low if closed else value > low)
    below = high is None or (value <= high if closed else value < high)
    if not (above and below):
        if high is None:
            want = f"{'>=' if closed else '>'} {low}"
        else:
            want = f"in [{low}, {high}]" if closed else f"in ({low}, {high})"
        raise ConfigError(f"{key}={value} is out of range: it must be {want}")


def refused_pickle(path: object, e: BaseException) -> str | None:
    """The one line for a file that a weights-only ``torch.load`` refused (its pickle names
    objects beyond tensors and plain values), or None for another error. PyTorch's own text
    suggests turning the protection off; this line never does."""
    text = str(e)
    if "Weights only load failed" not in text:
        return None
    named = re.search(r"GLOBAL ([\w.]+)", text)
    reason = f"it names {named.group(1)}" if named else "objects beyond tensors and plain values"
    return (
        f"{path} holds objects a safe load refuses ({reason}); it was not written by wmrobot "
        f"or is damaged: re-create it"
    )
