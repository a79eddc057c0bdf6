"""Crash safety: SIGKILL a collecting process at random moments; nothing committed is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.policies import PolicySpec

# Ten-step episodes and a commit after each: the collector spends most of its time writing
# and committing, so most kills land in the middle of an append.
EPISODES = 150
ARGS = dict(
    env_id="wmrobot/PointMaze-v0",
    env_kwargs={"max_episode_steps": 10},
    policy=PolicySpec(beta=1.0),
    seed=7,
)


def _collect_in_subprocess(path, episodes: int) -> subprocess.Popen:
    code = (
        "from wmrobot.datasets import collect; from wmrobot.datasets.policies import PolicySpec; "
        f"collect({str(path)!r}, {ARGS['env_id']!r}, {ARGS['env_kwargs']!r}, "
        f"policy={ARGS['policy']}, episodes={episodes}, seed={ARGS['seed']}, flush_every=1, "
        "progress=False)"
    )
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)


def _committed(path) -> int:
    """The committed episode count, read the way any reader would (0 before creation)."""
    try:
        return json.loads((path / "zarr.json").read_text())["attributes"]["n_episodes"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return 0


def _assert_prefix_of(store: EpisodeStore, reference: EpisodeStore) -> None:
    """Every committed episode equals the reference's, row for row."""
    n_rows, n_eps = store.n_rows, store.n_episodes
    assert n_eps <= reference.n_episodes
    np.testing.assert_array_equal(store.episode_ends, reference.episode_ends[:n_eps])
    for key in reference.keys:
        np.testing.assert_array_equal(store.array(key)[:n_rows], reference.array(key)[:n_rows])
    for key in ("seed", "return", "length", "success"):
        np.testing.assert_array_equal(store.meta(key), reference.meta(key)[:n_eps])


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path):
    reference_path = tmp_path / "reference.zarr"
    collect(str(reference_path), **ARGS, episodes=EPISODES, flush_every=10, progress=False)
    reference = EpisodeStore.open(reference_path)

    path = tmp_path / "killed.zarr"
    rng = np.random.default_rng(0)
    committed = []
    for trial in range(8):
        proc = _collect_in_subprocess(path, EPISODES)
        # Kill only once this process is writing: it has committed past the last count.
        before = committed[-1] if committed else 0
        deadline = time.monotonic() + 60
        while _committed(path) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"trial {trial}: finished before the kill"

        store = EpisodeStore.open(path)  # opens and validates
        assert store.n_episodes >= (committed[-1] if committed else 0)
        _assert_prefix_of(store, reference)
        committed.append(store.n_episodes)
        EpisodeStore.open(path, mode="a")  # reopening for append cleans up, still valid
    assert committed[-1] > 0, committed

    # Resuming after all those kills ends exactly where an uninterrupted run does.
    collect(str(path), **ARGS, episodes=EPISODES, flush_every=10, progress=False)
    store = EpisodeStore.open(path)
    assert store.n_episodes == EPISODES
    _assert_prefix_of(store, reference)
    assert store.n_rows == reference.n_rows
    assert not list(path.rglob("*.partial"))
