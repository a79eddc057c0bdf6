"""The free-space check of a collection: an estimate that counts compression, and its margin."""

from __future__ import annotations

import logging
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.capacity import FREE_SHARE, check_space, episode_bytes
from wmrobot.errors import DatasetError

Usage = namedtuple("Usage", "total used free")


def test_the_estimate_counts_what_compression_saves(make_episode, rng):
    noisy = make_episode(500, rng)
    raw = sum(v.nbytes for v in noisy.values() if isinstance(v, np.ndarray))
    assert 0.8 * raw < episode_bytes(noisy) < 1.2 * raw  # random floats hardly compress
    still = {
        **noisy,
        "obs": np.zeros_like(noisy["obs"]),
        "pixels": np.zeros((501, 32, 32, 3), "u1"),
    }
    # 1.5 MB of blank frames and still observations take a few kilobytes
    assert episode_bytes(still) < episode_bytes(noisy) - noisy["obs"].nbytes + 20_000


def test_the_estimate_is_near_what_a_collection_takes_on_disk(tmp_path):
    path = tmp_path / "d.zarr"
    collect(str(path), "wmrobot/PointMaze-v0", episodes=8, progress=False)
    first = next(EpisodeStore.open(path).iter_episodes())
    chunks = sum(p.stat().st_size for p in path.rglob("c/**/*") if p.is_file())
    assert 0.7 * chunks < 8 * episode_bytes(first) < 1.5 * chunks


def _free(monkeypatch, free: int) -> list[Path]:
    """Have the check see ``free`` bytes free; returns the folders it asked about."""
    asked = []

    def disk_usage(path):
        asked.append(Path(path))
        return Usage(10 * free, 9 * free, free)

    monkeypatch.setattr("wmrobot.datasets.capacity.shutil.disk_usage", disk_usage)
    return asked


def test_the_check_keeps_a_margin_of_the_free_space(tmp_path, make_episode, rng, monkeypatch):
    first = make_episode(99, rng)
    size = episode_bytes(first)
    path = str(tmp_path / "new" / "deeper" / "d.zarr")
    asked = _free(monkeypatch, int(100 * size / FREE_SHARE) + 1)
    check_space(path, first, episodes=100)  # fits in the share
    check_space(f"file://{path}", first, steps=100 * 99)  # 99 steps an episode
    assert asked == [tmp_path, tmp_path]  # the nearest folder that exists
    with pytest.raises(DatasetError, match=r"collecting 101 episodes would take about .* free"):
        check_space(path, first, episodes=101)
    with pytest.raises(DatasetError, match=r"101 more episodes .*: \d.* compressed\)"):
        check_space(path, first, episodes=101, resuming=True)
    with pytest.raises(DatasetError, match=r"10,000 steps .* compressed for 99 steps"):
        check_space(path, first, steps=10_000)


def test_a_url_gets_no_check_and_is_told_so(make_episode, rng, monkeypatch, caplog):
    asked = _free(monkeypatch, 0)
    with caplog.at_level(logging.WARNING, logger="wmrobot"):
        check_space("s3://bucket/d.zarr", make_episode(3, rng), episodes=10**12)
    assert asked == []
    assert [r.getMessage() for r in caplog.records] == [
        "s3://bucket/d.zarr: no free-space check is made for a dataset at a URL"
    ]
