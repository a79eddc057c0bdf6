"""Sampler throughput and the training step's wait for data, lazy and in memory, side by side.

Collects a PointMaze-v0 dataset (the training task) into a temporary folder and prints, for each
way of reading it, the windows/s of ``WindowSampler.sample`` and the fraction of a training step
spent waiting for data: wmrobot's own training loop (``wmrobot.train.train``) at the defaults of
``configs/train.yaml`` (batch 256, horizon 5, the state MLP, 1 thread). Run:

    python benchmarks/sampler_throughput.py [--episodes 200]

``windows_per_second`` and ``data_wait_fraction`` also serve other benchmarks.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import torch

from wmrobot.cli import compose
from wmrobot.config import validate
from wmrobot.datasets import EpisodeStore, WindowSampler, collect
from wmrobot.model import ModelConfig
from wmrobot.train import data, trainer

Cache = bool | Literal["auto"]


def windows_per_second(
    path: str,
    keys: list[str],
    steps: int,
    batch_size: int,
    cache: Cache,
    memory: int | None = None,
    seconds: float = 2.0,
) -> float:
    """Windows/s of ``WindowSampler.sample`` once warm (the first batch fills any chunk LRU)."""
    sampler = WindowSampler(EpisodeStore.open(path), keys, steps, cache=cache, memory=memory)
    gen = torch.Generator().manual_seed(0)
    sampler.sample(batch_size, gen)
    batches, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        sampler.sample(batch_size, gen)
        batches += 1
    return batches * batch_size / elapsed


class TimedSampler(WindowSampler):
    """A WindowSampler that clocks its reads: (start, end, whether it drew a batch) per call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[float, float, bool]] = []

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        out = super().sample(batch_size, generator)
        self.calls.append((start, time.perf_counter(), True))
        return out

    def rows(self, key: str, indices: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = super().rows(key, indices)
        self.calls.append((start, time.perf_counter(), False))
        return out

    def wait_fraction(self, skip: int) -> float:
        """Time in reads over wall time, from the ``skip``-th batch to the last one drawn."""
        steps = [start for start, _, batch in self.calls if batch]
        first, last = steps[skip], steps[-1]
        wait = sum(end - start for start, end, _ in self.calls if first <= start < last)
        return wait / (last - first)


def data_wait_fraction(
    path: str,
    cache: Cache = "auto",
    memory: int | None = None,
    steps: int = 300,
    skip: int = 20,
) -> float:
    """Fraction of wmrobot's training step spent reading data (windows and goal rows), over
    ``steps`` steps of ``wmrobot.train.train`` at the default training settings, the first
    ``skip`` left out. ``cache`` and ``memory`` replace the trainer's sampler options."""
    c = validate("train", compose("train", [f"dataset={path}", f"model.train.steps={steps}"]))
    model_cfg = ModelConfig(**{f.name: getattr(c.model, f.name) for f in fields(ModelConfig)})
    made: list[TimedSampler] = []

    def timed(*args: Any, **kwargs: Any) -> TimedSampler:
        made.append(TimedSampler(*args, cache=cache, memory=memory, **kwargs))
        return made[-1]

    threads = torch.get_num_threads()
    torch.set_num_threads(c.threads)
    try:
        with (
            mock.patch.object(data, "WindowSampler", timed),
            tempfile.TemporaryDirectory() as out,
        ):
            trainer.train(path, out, model_cfg, c.model.train, progress=False)
    finally:
        torch.set_num_threads(threads)
    return made[0].wait_fraction(skip)


WAYS: list[tuple[str, Cache, int | None]] = [
    ("in memory (cache=True)", True, None),
    ("lazy, chunk LRU (cache=False)", False, None),
    ("lazy, no chunk cache (memory=0)", False, 0),
]


def report(path: str, steps: int = 300, seconds: float = 2.0) -> None:
    """Print windows/s and the data-wait fraction of each way of reading ``path``, at the
    default training settings (batch, horizon, keys and threads of ``wmrobot train``)."""
    store = EpisodeStore.open(path)
    c = validate("train", compose("train", [f"dataset={path}"]))
    batch, horizon = c.model.train.batch_size, c.model.train.horizon
    keys = [*data.observation_keys(store), "action"]
    auto = WindowSampler(store, keys, horizon).cached
    print(
        f"{store.n_episodes} episodes, {store.n_rows:,} rows; keys {keys}; "
        f"batch {batch}, horizon {horizon}, {c.threads} thread(s); "
        f"the trainer's cache='auto' reads {'in memory' if auto else 'lazily'}"
    )
    print(f"{'':40}{'windows/s':>12}  {'data wait':>10}")
    threads = torch.get_num_threads()
    torch.set_num_threads(c.threads)
    try:
        for name, cache, memory in WAYS:
            rate = windows_per_second(path, keys, horizon, batch, cache, memory, seconds)
            wait = data_wait_fraction(path, cache, memory, steps)
            print(f"{name:40}{rate:>12,.0f}  {wait:>10.1%}")
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200, help="PointMaze episodes to collect")
    parser.add_argument("--steps", type=int, default=300, help="training steps per wait fraction")
    parser.add_argument("--seconds", type=float, default=2.0, help="per windows/s measurement")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wmrobot-bench-"))
    try:
        path = str(tmp / "maze.zarr")
        collect(path, "wmrobot/PointMaze-v0", episodes=args.episodes, seed=0, progress=False)
        print("PointMaze-v0: ", end="")
        report(path, args.steps, args.seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
