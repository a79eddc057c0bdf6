"""What collect() reports without reading the dataset back equals what the dataset holds."""

from __future__ import annotations

from wmrobot.datasets import EpisodeStore, collect

ENV_ID = "wmrobot/PointMaze-v0"
KWARGS = {"layout": "open"}


def assert_reported_as_stored(result, path):
    store = EpisodeStore.open(path)
    assert (result.episodes, result.transitions) == (store.n_episodes, store.n_transitions)
    stats = store.attrs["stats"]
    assert all("q01" in stats[k] and "q99" in stats[k] for k in store.stat_keys)


def test_fresh_and_resumed_collections_report_their_stored_counts(tmp_path):
    path = str(tmp_path / "d.zarr")
    fresh = collect(path, ENV_ID, KWARGS, episodes=3, seed=1, flush_every=1, progress=False)
    assert fresh.episodes == 3
    assert_reported_as_stored(fresh, path)
    # Resumed: the writer did not see every row, so the collector finishes the statistics.
    resumed = collect(path, ENV_ID, KWARGS, episodes=5, seed=1, flush_every=2, progress=False)
    assert resumed.episodes == 5
    assert_reported_as_stored(resumed, path)
    # Nothing left to collect: no writer at all.
    again = collect(path, ENV_ID, KWARGS, episodes=5, seed=1, progress=False)
    assert (again.episodes, again.transitions) == (resumed.episodes, resumed.transitions)
