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


def test_merge_keeps_every_episode_in_order(tmp_path, read_plainly):
    a, b = _collect(tmp_path / "a.zarr", seed=1), _collect(tmp_path / "b.zarr", seed=2, episodes=2)
    merged = merge(str(tmp_path / "m.zarr"), [a.path, b.path])
    assert merged.n_episodes == 5 and merged.n_rows == a.n_rows + b.n_rows
    ends, _ = read_plainly(merged.path)  # no capacity past the commit
    np.testing.assert_array_equal(ends, merged.episode_ends)
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


def test_a_merge_that_fails_after_creating_leaves_nothing(tmp_path, monkeypatch):
    a, b = _collect(tmp_path / "a.zarr", seed=1), _collect(tmp_path / "b.zarr", seed=2)

    def crash(self):  # as if stopped just before the merge's last write
        raise KeyboardInterrupt

    monkeypatch.setattr(EpisodeStore, "finalize_stats", crash)
    with pytest.raises(KeyboardInterrupt):
        merge(str(tmp_path / "m.zarr"), [a.path, b.path])
    assert not list(tmp_path.glob("m.zarr*"))


def test_merge_reads_and_writes_in_batches(tmp_path, monkeypatch):
    a, b = _collect(tmp_path / "a.zarr", seed=1), _collect(tmp_path / "b.zarr", seed=2)
    whole = merge(str(tmp_path / "whole.zarr"), [a.path, b.path])
    monkeypatch.setattr(importlib.import_module("wmrobot.datasets.merge"), "BATCH", 2)
    batched = merge(str(tmp_path / "batched.zarr"), [a.path, b.path])
    assert batched.fingerprint() == whole.fingerprint()
    for key in whole.keys:
        np.testing.assert_array_equal(
            batched.array(key)[: batched.n_rows], whole.array(key)[: whole.n_rows]
        )
    for key in ("seed", "return", "success", "length"):
        np.testing.assert_array_equal(batched.meta(key), whole.meta(key))
