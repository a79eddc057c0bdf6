"""Zarr v3 episode datasets: the store, the collector, replay and the window sampler."""

from __future__ import annotations

import importlib
from typing import Any

# Functions named like their modules are imported here, or importing the module would shadow
# them. The store imports zarr only when a dataset is opened.
from wmrobot.datasets.merge import merge
from wmrobot.datasets.repair import repair
from wmrobot.datasets.replay import ReplayResult, replay, restore
from wmrobot.datasets.store import EpisodeStore

# Loaded on first use: a collector worker imports wmrobot.datasets.episodes, which imports this
# package first, and should not pay for the collector (tqdm, the acceleration layer) or torch
# (the sampler) to start.
_LAZY = {
    "collect": "collector",
    "Normalizer": "sampler",
    "WindowSampler": "sampler",
    "window_starts": "sampler",
}

__all__ = [
    "EpisodeStore",
    "Normalizer",
    "ReplayResult",
    "WindowSampler",
    "collect",
    "merge",
    "repair",
    "replay",
    "restore",
    "window_starts",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"wmrobot.datasets.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'wmrobot.datasets' has no attribute {name!r}")
