"""Windows of consecutive steps that never cross an episode boundary, for world-model training."""

from __future__ import annotations

from collections.abc import Iterable

import numba
import numpy as np
import torch

from wmrobot.datasets.store import EpisodeStore
from wmrobot.errors import DatasetError


def window_starts(episode_ends: np.ndarray, steps: int) -> np.ndarray:
    """Row indices ``t`` such that rows ``t .. t+steps`` lie in one episode and the actions of
    rows ``t .. t+steps-1`` are real (each episode's last row has no action)."""
    return _window_starts(np.asarray(episode_ends, dtype=np.int64), np.int64(steps))


@numba.njit(cache=True)
def _window_starts(ends: np.ndarray, steps: np.int64) -> np.ndarray:
    # An episode of rows [b, e) has actions on rows b .. e-2, so t + steps <= e - 1.
    total, begin = 0, 0
    for end in ends:
        total += max(end - steps - begin, 0)
        begin = end
    out = np.empty(total, dtype=np.int64)
    k, begin = 0, 0
    for end in ends:
        for t in range(begin, end - steps):
            out[k] = t
            k += 1
        begin = end
    return out


class WindowSampler(torch.utils.data.Dataset):
    """In-memory windows of ``steps`` actions (``steps + 1`` rows) from an EpisodeStore.

    ``sample(batch, rng)`` draws a batch as a dict of (B, steps+1, ...) tensors, the fast path
    for small models; indexing (``sampler[i]``) makes it a torch ``Dataset`` too.
    """

    def __init__(self, store: EpisodeStore, keys: Iterable[str], steps: int) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = steps
        self.data = {
            k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in store.load(keys).items()
        }
        self.starts = torch.from_numpy(window_starts(store.episode_ends, steps))
        if len(self.starts) == 0:
            raise DatasetError(
                f"no episode of {store.path!r} is longer than {steps} steps; "
                f"lower the window (model.train.horizon) or collect longer episodes"
            )
        self._offsets = torch.arange(steps + 1)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rows = self.starts[i] + self._offsets
        return {k: v[rows] for k, v in self.data.items()}

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        pick = torch.randint(len(self.starts), (batch_size,), generator=generator)
        rows = self.starts[pick, None] + self._offsets  # (B, steps + 1)
        return {k: v[rows] for k, v in self.data.items()}
