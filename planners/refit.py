"""The sampling planners' refit rules in plain arithmetic, written once for both backends:
torch runs them on tensors (``cem.py``, ``mppi.py``), Numba compiles them for float32 scalars
(``numba/refit.py``)."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def mppi_logit(cost: T, best_cost: T, temperature: float) -> T:
    """MPPI's log-weight of an elite, -(cost - best_cost) / temperature: 0 for the best."""
    return (best_cost - cost) / temperature


def smooth(alpha: float, old: T, new: T) -> T:
    """CEM's smoothing: ``alpha`` of the old value, the rest of the refit one."""
    return new + alpha * (old - new)
