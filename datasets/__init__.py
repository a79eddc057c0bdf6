"""Zarr v3 episode datasets: the store, the collector and the window sampler."""

from wmrobot.datasets.collector import collect
from wmrobot.datasets.replay import ReplayResult, replay, restore
from wmrobot.datasets.sampler import WindowSampler, window_starts
from wmrobot.datasets.store import EpisodeStore

__all__ = [
    "EpisodeStore",
    "ReplayResult",
    "WindowSampler",
    "collect",
    "replay",
    "restore",
    "window_starts",
]
