"""EpisodeStore: round trips, the plain Zarr layout, the crash-safe commit and clear errors."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from wmrobot.datasets import EpisodeStore
from wmrobot.datasets.accel.store import DirectStore
from wmrobot.errors import DatasetError


@pytest.fixture(params=[EpisodeStore, DirectStore], ids=["zarr", "direct"])
def new_store(request, new_store):
    """Every test of the format holds for both writers: through zarr (the plain path) and
    direct (the acceleration layer)."""
    return functools.partial(new_store, kind=request.param)


def test_episodes_round_trip(new_store, make_episode, rng, tmp_path):
    episodes = [make_episode(t, rng, seed=i) for i, t in enumerate([4, 7, 1])]
    store = new_store()
    store.append(episodes[:2])
    store.append(episodes[2:])

    again = EpisodeStore.open(tmp_path / "d.zarr")
    assert again.n_episodes == 3
    assert again.n_rows == 5 + 8 + 2
    assert again.n_transitions == 4 + 7 + 1
    assert again.keys == ["obs", "action", "reward"]
    np.testing.assert_array_equal(again.episode_ends, [5, 13, 15])
    np.testing.assert_array_equal(again.meta("length"), [4, 7, 1])
    np.testing.assert_array_equal(again.meta("seed"), [0, 1, 2])
    np.testing.assert_array_equal(again.meta("success"), [ep["success"] for ep in episodes])
    np.testing.assert_allclose(again.meta("return"), [ep["return"] for ep in episodes])
    for i, ep in enumerate(episodes):
        for key in again.keys:
            np.testing.assert_array_equal(again.episode(i)[key], ep[key])
    np.testing.assert_array_equal(again.episode(-1)["obs"], episodes[-1]["obs"])
    loaded = again.load(["obs"])
    assert list(loaded) == ["obs"]
    np.testing.assert_array_equal(loaded["obs"], np.concatenate([ep["obs"] for ep in episodes]))
    with pytest.raises(IndexError):
        again.episode(3)


def test_layout_is_readable_with_plain_zarr(new_store, make_episode, rng, tmp_path):
    episodes = [make_episode(3, rng), make_episode(5, rng)]
    new_store().append(episodes)

    root = zarr.open_group(tmp_path / "d.zarr", mode="r")
    n = root.attrs["n_rows"]
    assert root.attrs["format"] == "wmrobot.episodes"
    assert root.attrs["n_episodes"] == 2
    np.testing.assert_array_equal(root["meta/episode_ends"][:2], [4, 10])
    np.testing.assert_array_equal(
        root["data/action"][:n], np.concatenate([ep["action"] for ep in episodes])
    )
    assert root["data/obs"].dtype == np.float32


def test_rows_past_the_commit_are_invisible_and_overwritten(new_store, make_episode, rng, tmp_path):
    path = tmp_path / "d.zarr"
    store = new_store()
    first = make_episode(3, rng)
    store.append([first])
    # A writer killed after writing rows but before its commit: rows 4..9 hold junk.
    root = zarr.open_group(path, mode="r+")
    root["data/obs"][4:10] = 123.0
    root["meta/episode_ends"][1] = 10

    reopened = EpisodeStore.open(path, mode="a")
    assert (reopened.n_rows, reopened.n_episodes) == (4, 1)
    assert not np.any(reopened.load(["obs"])["obs"] == 123.0)

    second = make_episode(2, rng)
    reopened.append([second])
    final = EpisodeStore.open(path)
    np.testing.assert_array_equal(final.episode_ends, [4, 7])
    np.testing.assert_array_equal(final.episode(1)["obs"], second["obs"])
    np.testing.assert_array_equal(final.episode(0)["obs"], first["obs"])


def test_finalize_stats_leaves_the_columns_it_is_given_as_they_were(new_store, make_episode, rng):
    # The quantiles sort a copy; sorting in place would reorder the caller's own arrays.
    episodes = [make_episode(t, rng) for t in (6, 3, 9)]
    store = new_store()
    columns = store.append(episodes)
    assert columns.keys() == set(store.stat_keys)
    np.testing.assert_array_equal(
        columns["action"].T, np.concatenate([e["action"][:-1] for e in episodes])
    )
    before = {k: v.copy() for k, v in columns.items()}
    given = store.finalize_stats(columns)
    for key in columns:
        np.testing.assert_array_equal(columns[key], before[key])
    assert given == store.finalize_stats()  # the same as from the stored rows


def test_stats_match_numpy(new_store, make_episode, rng):
    episodes = [make_episode(t, rng) for t in (6, 3, 9)]
    store = new_store()
    store.append(episodes[:1])
    store.append(episodes[1:])  # stats are merged across commits
    stats = store.attrs["stats"]

    obs = np.concatenate([ep["obs"] for ep in episodes]).astype(np.float64)
    actions = np.concatenate([ep["action"][:-1] for ep in episodes]).astype(np.float64)
    assert not np.isnan(actions).any()
    np.testing.assert_allclose(stats["obs"]["mean"], obs.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["obs"]["std"], obs.std(0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(0))
    np.testing.assert_allclose(stats["action"]["max"], actions.max(0))

    final = store.finalize_stats()
    np.testing.assert_allclose(final["action"]["q01"], np.quantile(actions, 0.01, axis=0))
    np.testing.assert_allclose(final["obs"]["q99"], np.quantile(obs, 0.99, axis=0))
    assert final["obs"]["mean"] == stats["obs"]["mean"]


def test_fingerprint_changes_when_an_episode_is_added(new_store, make_episode, rng, tmp_path):
    store = new_store()
    store.append([make_episode(4, rng)])
    before = store.fingerprint()
    assert EpisodeStore.open(tmp_path / "d.zarr").fingerprint() == before
    store.append([make_episode(4, rng)])
    assert store.fingerprint() != before


def test_validate_catches_corrupted_episode_ends(new_store, make_episode, rng, tmp_path):
    path = tmp_path / "d.zarr"
    store = new_store()
    store.append([make_episode(3, rng), make_episode(3, rng)])
    store.validate()
    zarr.open_group(path, mode="r+")["meta/episode_ends"][:2] = [6, 4]
    with pytest.raises(DatasetError, match="episode_ends"):
        store.validate()
    with pytest.raises(DatasetError, match="episode_ends"):
        EpisodeStore.open(path)


def test_open_for_append_removes_partial_files(new_store, make_episode, rng, tmp_path):
    path = tmp_path / "d.zarr"
    new_store().append([make_episode(3, rng)])
    leftovers = [path / "zarr.json.partial", path / "data" / "obs" / "c.partial"]
    for f in leftovers:
        f.write_bytes(b"half a write")

    EpisodeStore.open(path)  # a reader leaves them alone
    assert all(f.exists() for f in leftovers)
    store = EpisodeStore.open(path, mode="a")
    assert not any(f.exists() for f in leftovers)
    assert store.n_episodes == 1


def test_a_path_that_is_not_a_dataset_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="no such path"):
        EpisodeStore.open(tmp_path / "missing.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a wmrobot dataset"):
        EpisodeStore.open(tmp_path / "empty")
    zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3).attrs["x"] = 1
    with pytest.raises(DatasetError, match="no format"):
        EpisodeStore.open(tmp_path / "other.zarr")


def test_a_newer_format_version_is_refused(new_store, tmp_path):
    new_store()
    zarr.open_group(tmp_path / "d.zarr", mode="r+").attrs["format_version"] = 99
    with pytest.raises(DatasetError, match="format_version 99"):
        EpisodeStore.open(tmp_path / "d.zarr")


def test_create_refuses_an_existing_path(new_store, tmp_path):
    new_store()
    with pytest.raises(DatasetError, match="already exists"):
        new_store()


def test_read_only_store_refuses_appends(new_store, make_episode, rng, tmp_path: Path):
    new_store()
    store = EpisodeStore.open(tmp_path / "d.zarr")
    with pytest.raises(DatasetError, match="read-only"):
        store.append([make_episode(3, rng)])
    assert EpisodeStore.open(tmp_path / "d.zarr").n_episodes == 0


def test_append_rejects_malformed_episodes(new_store, make_episode, rng):
    store = new_store()
    incomplete = make_episode(3, rng)
    del incomplete["reward"]
    with pytest.raises(DatasetError, match="reward"):
        store.append([incomplete])
    with pytest.raises(DatasetError, match="at least one action"):
        store.append([make_episode(0, rng)])
    assert store.n_rows == 0


def test_a_commit_is_one_write_of_the_group_attributes(
    new_store, make_episode, rng, tmp_path, monkeypatch
):
    """All counts move together: a kill can never land between two of their writes."""
    store = new_store()
    written = []
    real_replace = os.replace

    def counting_replace(src, dst):  # every file the store writes is renamed into place
        written.append(Path(dst))
        real_replace(src, dst)

    monkeypatch.setattr("wmrobot.files.os.replace", counting_replace)
    store.append([make_episode(5, rng), make_episode(3, rng)])
    root = tmp_path / "d.zarr" / "zarr.json"
    assert written.count(root) == 1, written
    assert any(p.parent.name == "obs" and p.name == "zarr.json" for p in written)  # its growth
    assert len(written) > 8  # and chunks of every array
    store.finalize_stats()
    assert written.count(root) == 2


def test_narrow_rows_get_longer_chunks():
    from wmrobot.datasets.store import ROW_CHUNK, ROW_CHUNK_MAX, row_chunk

    assert row_chunk((17,), "float64") == ROW_CHUNK  # 136 bytes a row
    assert row_chunk((1000,), "float64") == ROW_CHUNK  # never fewer rows than that
    assert row_chunk((6,), "float32") == 16384  # 24 bytes: 384 KiB a chunk
    assert row_chunk((), "float32") == ROW_CHUNK_MAX
    assert row_chunk((), "bool") == ROW_CHUNK_MAX


def test_capacity_at_least_doubles_when_it_grows(new_store, make_episode, rng):
    store = new_store()
    chunk = store.node("data/obs").chunks[0]
    capacities = []
    for seed in range(12):  # 12 commits, each past the capacity of the one before
        store.append([make_episode(chunk // 2 - 1, rng, seed=seed)])
        capacities.append(store.node("data/obs").shape[0])
    assert capacities[-1] >= store.n_rows
    grown = sorted(set(capacities))
    assert all(b >= 2 * a for a, b in zip(grown, grown[1:], strict=False))
    assert len(grown) <= 4  # whole-chunk growth would have grown 6 times
    store.validate()
    assert store.n_episodes == 12


@pytest.mark.parametrize(
    "url, path",
    [
        ("file:///data/d.zarr", "/data/d.zarr"),
        ("file:/data/d.zarr/", "/data/d.zarr"),
        ("file://localhost/data/d.zarr", "/data/d.zarr"),
        ("file:///data/my%20runs/d.zarr", "/data/my runs/d.zarr"),
    ],
)
def test_a_file_url_is_the_path_it_names(url, path):
    from wmrobot.datasets.store import is_local, normalise_path

    assert normalise_path(url) == path and is_local(url)


@pytest.mark.parametrize("url", ["file://otherhost/data/d.zarr", "file://"])
def test_a_file_url_without_a_local_path_is_refused_in_one_line(url):
    from wmrobot.datasets.store import normalise_path

    with pytest.raises(DatasetError, match="names no local path"):
        normalise_path(url)


def test_shrink_leaves_plain_zarr_readers_the_committed_episodes(
    new_store, make_episode, rng, tmp_path, read_plainly
):
    episodes = [make_episode(t, rng, seed=i) for i, t in enumerate([4, 7, 1, 9])]
    store = new_store()
    store.append(episodes[:2])
    assert store.node("meta/episode_ends").shape[0] > 2  # capacity: whole chunks
    store.shrink()
    ends, data = read_plainly(tmp_path / "d.zarr")  # every array: the committed length
    np.testing.assert_array_equal(ends, [5, 13])

    # Appending grows the arrays again, in whole chunks from the exact length; then shrinks.
    store.append(episodes[2:3])
    for name in ("data/obs", "meta/episode_ends"):
        array = store.node(name)
        assert array.shape[0] % array.chunks[0] == 0 and array.shape[0] >= 3
    store.append(episodes[3:])
    store.shrink()
    ends, data = read_plainly(tmp_path / "d.zarr")
    np.testing.assert_array_equal(ends, [5, 13, 15, 25])
    starts = np.concatenate([[0], ends[:-1]])
    for (start, end), episode in zip(zip(starts, ends, strict=True), episodes, strict=True):
        for key in store.keys:
            np.testing.assert_array_equal(data[key][start:end], episode[key])
    again = EpisodeStore.open(tmp_path / "d.zarr")
    again.check_contents()
    assert (again.n_episodes, again.n_rows) == (4, 25)


def test_shrink_of_a_shrunk_dataset_writes_nothing(
    new_store, make_episode, rng, tmp_path, monkeypatch
):
    store = new_store()
    store.append([make_episode(3, rng)])
    store.shrink()
    written = []
    monkeypatch.setattr("wmrobot.files.os.replace", lambda src, dst: written.append(dst))
    store.shrink()
    EpisodeStore.open(tmp_path / "d.zarr", mode="a").shrink()
    assert written == []


def test_a_shrink_cut_short_leaves_a_dataset_that_opens_and_shrinks(
    new_store, make_episode, rng, tmp_path, monkeypatch, read_plainly
):
    # Killed between two arrays' metadata writes: some arrays exact, some with capacity; every
    # one still holds the committed rows, so the dataset opens, validates and reads.
    episodes = [make_episode(5, rng, seed=s) for s in range(3)]
    store = new_store()
    store.append(episodes)
    real_replace, landed = os.replace, []

    def die_after_three(src, dst):
        if len(landed) == 3:  # as a kill between two writes (zarr writes in a thread of its own)
            raise OSError("killed")
        real_replace(src, dst)
        landed.append(dst)

    monkeypatch.setattr("wmrobot.files.os.replace", die_after_three)
    with pytest.raises(OSError, match="killed"):
        store.shrink()
    monkeypatch.undo()
    root = zarr.open_group(tmp_path / "d.zarr", mode="r")
    exact = [
        a.shape[0] == (18 if group == "data" else 3)
        for group in ("data", "meta")
        for _, a in root[group].arrays()
    ]
    assert 0 < sum(exact) < len(exact)
    again = EpisodeStore.open(tmp_path / "d.zarr", mode="a")
    again.check_contents()
    for i, episode in enumerate(episodes):
        np.testing.assert_array_equal(again.episode(i)["obs"], episode["obs"])
    again.shrink()
    read_plainly(tmp_path / "d.zarr")


def test_shrink_needs_a_writable_store(new_store, make_episode, rng, tmp_path):
    new_store().append([make_episode(3, rng)])
    with pytest.raises(DatasetError, match="read-only"):
        EpisodeStore.open(tmp_path / "d.zarr").shrink()
