"""What collect() reports without reading the dataset back equals what the dataset holds; the
writer commits what queued up while it was busy in one go."""

from __future__ import annotations

import queue

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.collector import _write_batches
from wmrobot.datasets.episodes import episode_seed, episodes_in_order
from wmrobot.datasets.policies import PolicySpec

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


def test_batches_queued_while_the_writer_is_busy_go_into_one_commit(tmp_path):
    """The writer commits what has queued up at once: one commit, the episodes in order."""
    path = str(tmp_path / "d.zarr")
    collect(path, ENV_ID, KWARGS, episodes=1, seed=2, progress=False)
    seeds = [episode_seed(2, i) for i in range(1, 4)]
    episodes = list(episodes_in_order(ENV_ID, KWARGS, PolicySpec(), seeds))
    batches, done = queue.Queue(), queue.Queue()
    for episode in episodes:
        batches.put([episode])
    batches.put(None)
    _write_batches(path, batches, done, None)
    reports = []
    while not done.empty():
        reports.append(done.get())
    steps = sum(len(e["action"]) - 1 for e in episodes)
    store = EpisodeStore.open(path)
    assert reports[0] == ("committed", (4, store.n_transitions, 3, steps))
    assert reports[1][0] == "closed" and len(reports) == 2
    assert list(store.meta("seed")[1:]) == seeds
