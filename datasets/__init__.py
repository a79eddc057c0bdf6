"""Zarr v3 episode datasets: the store, the collector, replay and the window sampler."""

from __future__ import annotations

import importlib
from typing import Any

from wmrobot.datasets.collector import collect
from wmrobot.datasets.merge import merge
from wmrobot.datasets.replay import ReplayResult, replay, restore
from wmrobot.datasets.store import EpisodeStore

__all__ = [
    "EpisodeStore",
    "Normalizer",
    "ReplayResult",
    "WindowSampler",
    "collect",
    "merge",
    "replay",
    "restore",
    "window_starts",
]


def __getattr__(name: str) -> Any:
    # The sampler needs torch; loading it lazily keeps collector workers light (as does the
    # store, which imports zarr only when a dataset is opened).
    if name in ("Normalizer", "WindowSampler", "window_starts"):
        return getattr(importlib.import_module("wmrobot.datasets.sampler"), name)
    raise AttributeError(f"module 'wmrobot.datasets' has no attribute {name!r}")
