"""Merging datasets: every episode of every source, in order, and only compatible sources."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from wmrobot.datasets import EpisodeStore, collect, merge
from wmrobot.errors import DatasetError


def _collect(path, seed, episodes=3, **kwargs):
    collect(
        str(path), "wmrobot/PointMaze-v0", episodes=episodes, seed=seed, progress=False, **kwargs
    )
    return EpisodeStore.open(path)


def test_merge_keeps_every_episode_in_order(tmp_path):
    a, b = _collect(tmp_path / "a.zarr", seed=1), _collect(tmp_path / "b.zarr", seed=2, episodes=2)
    merged = merge(str(tmp_path / "m.zarr"), [a.path, b.path])
    assert merged.n_episodes == 5 and merged.n_rows == a.n_rows + b.n_rows
    for key in a.keys:
        np.testing.assert_array_equal(
            merged.array(key)[: merged.n_rows],
            np.concatenate([a.array(key)[: a.n_rows], b.array(key)[: b.n_rows]]),
        )
    np.testing.assert_array_equal(
        merged.meta("seed"), np.concatenate([a.meta("seed"), b.meta("seed")])
    )
    sources = merged.attrs["collector"]["merged_from"]
    assert [s["fingerprint"] for s in sources] == [a.fingerprint(), b.fingerprint()]
    assert "q01" in merged.attrs["stats"]["action"]


def test_merge_refuses_datasets_of_another_env(tmp_path):
    a = _collect(tmp_path / "a.zarr", seed=1)
    b = _collect(tmp_path / "b.zarr", seed=2, env_kwargs={"layout": "open"})
    with pytest.raises(DatasetError, match="env kwargs differ"):
        merge(str(tmp_path / "m.zarr"), [a.path, b.path])
    assert not (tmp_path / "m.zarr").exists()


def test_merge_refuses_the_same_dataset_twice_and_leaves_nothing(tmp_path):
    a = _collect(tmp_path / "a.zarr", seed=1)
    with pytest.raises(DatasetError, match="given twice"):
        merge(str(tmp_path / "m.zarr"), [a.path, a.path])
    assert not (tmp_path / "m.zarr").exists()
    assert not list(tmp_path.glob("*merging*"))


def test_a_merge_cut_short_is_never_taken_for_a_dataset(tmp_path, monkeypatch):
    a, b = _collect(tmp_path / "a.zarr", seed=1), _collect(tmp_path / "b.zarr", seed=2)
    from wmrobot.datasets import store as store_module

    def crash(self):  # as if killed before the merge's last write
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module.EpisodeStore, "seal", crash)
    # Build in place, as at a URL, to see what a reader would find.
    merge_module = importlib.import_module("wmrobot.datasets.merge")
    monkeypatch.setattr(merge_module, "_is_local", lambda path: False)
    out = tmp_path / "m.zarr"
    with pytest.raises(KeyboardInterrupt):
        merge(str(out), [a.path, b.path])
    with pytest.raises(DatasetError, match="creation was cut short"):
        EpisodeStore.open(out)
