"""One writer per dataset (datasets/lock.py): a second writing process is refused in one line
naming the holder; the lock survives fork into a writer process and dies with its holder."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.lock import LOCK_FILE
from wmrobot.datasets.store import episode_row_shapes
from wmrobot.errors import DatasetError

# Forked, not spawned: these children start at once, and one forked before a hold shares none.
CTX = mp.get_context("fork")
ENV_ID = "wmrobot/PointMaze-v0"
HOLDER = f"on host {socket.gethostname()}"


def _open_for_append(path: Path) -> str:
    """What opening ``path`` for appending does here: "ok", or the error's line."""
    try:
        EpisodeStore.open(path, mode="a").close()
        return "ok"
    except DatasetError as e:
        return str(e)


def _in_another_process(go: Any, results: Any, work: Callable[[], Any], times: int = 1) -> None:
    for _ in range(times):
        go.wait()
        go.clear()
        results.put(work())


class Other:
    """A process forked now, before this one holds anything, that runs ``work`` each time it
    is told to (:meth:`run`)."""

    def __init__(self, work: Callable[[], Any], times: int = 1) -> None:
        self.go, self.results = CTX.Event(), CTX.Queue()
        args = (self.go, self.results, work, times)
        self.process = CTX.Process(target=_in_another_process, args=args, daemon=True)
        self.process.start()

    def run(self) -> Any:
        self.go.set()
        return self.results.get(timeout=60)


def _dataset(new_store: Callable[..., EpisodeStore], make_episode: Any, rng: Any) -> Path:
    store = new_store()
    store.append([make_episode(5, rng, seed=i) for i in range(3)])
    store.close()
    return Path(store.path)


def test_a_second_writer_in_another_process_is_told_who_holds_it(new_store, make_episode, rng):
    path = _dataset(new_store, make_episode, rng)
    other = Other(lambda: _open_for_append(path), times=2)
    store = EpisodeStore.open(path, mode="a")
    refused = other.run()
    assert refused.startswith(f"{str(path)!r} is being written by pid {os.getpid()} {HOLDER}")
    assert "wait for it to finish" in refused and "\n" not in refused
    EpisodeStore.open(path)  # readers take no lock
    store.close()
    store.close()  # closing twice is harmless
    assert other.run() == "ok"
    assert (path / LOCK_FILE).read_bytes() == b""  # a clean close names no past writer


def test_a_killed_writer_leaves_no_stale_lock(new_store, make_episode, rng):
    path = _dataset(new_store, make_episode, rng)
    held = CTX.Event()

    def hold() -> None:
        store = EpisodeStore.open(path, mode="a")  # noqa: F841 (held until killed)
        held.set()
        signal.pause()

    holder = CTX.Process(target=hold, daemon=True)
    holder.start()
    assert held.wait(30)
    with pytest.raises(DatasetError, match=f"pid {holder.pid} {HOLDER}"):
        EpisodeStore.open(path, mode="a")
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with EpisodeStore.open(path, mode="a") as store:
        store.append([make_episode(4, rng)])
    assert EpisodeStore.open(path).n_episodes == 4


def test_the_lock_is_reentrant_within_a_process(new_store, make_episode, rng):
    path = _dataset(new_store, make_episode, rng)
    other = Other(lambda: _open_for_append(path), times=2)
    first = EpisodeStore.open(path, mode="a")
    second = EpisodeStore.open(path, mode="a")  # no deadlock against its own hold
    first.close()
    assert "is being written by" in other.run()  # the second hold keeps it
    second.append([make_episode(4, rng)])
    second.close()
    assert other.run() == "ok"
    with pytest.raises(DatasetError, match="read-only"):
        second.append([make_episode(4, rng)])  # a closed store writes nothing


def test_a_writer_process_forked_from_the_holder_keeps_the_lock(new_store, make_episode, rng):
    path = _dataset(new_store, make_episode, rng)
    other = Other(lambda: _open_for_append(path), times=2)
    store = EpisodeStore.open(path, mode="a")
    ready, go = CTX.Event(), CTX.Event()

    def write() -> None:
        child = EpisodeStore.open(path, mode="a")  # shares the parent's hold
        ready.set()
        go.wait()
        child.append([make_episode(4, np.random.default_rng(1))])
        child.close()

    writer = CTX.Process(target=write)
    writer.start()
    assert ready.wait(30)
    store.close()  # the parent is done, the child still writes
    assert f"pid {os.getpid()} {HOLDER}" in other.run()
    go.set()
    writer.join(30)
    assert writer.exitcode == 0
    assert other.run() == "ok"
    assert EpisodeStore.open(path).n_episodes == 4


def _create(path: Path, episode: dict[str, Any], barrier: Any, seal: Any = None) -> str:
    """Create ``path`` with ``episode`` (unsealed until ``seal`` is set, if given)."""
    barrier.wait()
    try:
        store = EpisodeStore.create(
            path,
            env={"id": "synthetic", "kwargs": {}},
            spaces={"observation": "Box(3)", "action": "Box(2)"},
            row_shapes=episode_row_shapes(episode),
            sealed=seal is None,
        )
        try:
            store.append([episode])
            if seal is not None:
                seal.wait()
                store.seal()
        except BaseException:
            store.discard()
            raise
        finally:
            store.close()
        return "ok"
    except DatasetError as e:
        return str(e)


def _create_into(path: Path, episode: dict[str, Any], barrier: Any, results: Any) -> None:
    results.put(_create(path, episode, barrier))


def test_two_processes_creating_one_path_end_with_one_dataset(tmp_path, make_episode, rng):
    for round in range(3):
        path = tmp_path / f"new{round}.zarr"
        barrier, results = CTX.Barrier(2), CTX.Queue()
        args = (path, make_episode(5, rng), barrier, results)
        procs = [CTX.Process(target=_create_into, args=args) for _ in range(2)]
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(30)
        # One creation won; the other was told in one line, and left nothing beside it.
        assert outcomes[1] == "ok" and outcomes[0].startswith(f"{str(path)!r} "), outcomes
        assert "\n" not in outcomes[0]
        store = EpisodeStore.open(path)
        store.check_contents()
        assert store.n_episodes == 1
        assert sorted(p.name for p in tmp_path.glob(f"{path.name}*")) == [path.name]


def test_a_creation_under_way_in_another_process_is_not_removed(tmp_path, make_episode, rng):
    path = tmp_path / "new.zarr"
    barrier, seal, results = CTX.Barrier(2), CTX.Event(), CTX.Queue()
    episode = make_episode(5, rng)
    builder = CTX.Process(target=lambda: results.put(_create(path, episode, barrier, seal)))
    builder.start()
    barrier.wait()
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("new.zarr.creating-*/zarr.json")):
        assert time.monotonic() < deadline
    # A creation here meanwhile removes what cut-short creations left, not the live one.
    assert _create(path, episode, CTX.Barrier(1)) == "ok"
    assert len(list(tmp_path.glob("new.zarr.creating-*"))) == 1
    seal.set()
    refused = results.get(timeout=60)
    builder.join(30)
    assert refused.startswith(f"{str(path)!r} already exists"), refused
    assert not list(tmp_path.glob("new.zarr.creating-*"))  # the refused one cleaned up
    assert EpisodeStore.open(path).n_episodes == 1


def _collect_to(path: Path, episodes: int, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        collect(str(path), ENV_ID, {"layout": "open"}, episodes=episodes, progress=False)
        results.put((os.getpid(), "ok"))
    except DatasetError as e:
        results.put((os.getpid(), str(e)))


def test_two_collections_resuming_one_dataset_at_once(maze_dataset, tmp_path):
    """Released from one barrier onto one dataset: one writes, the other is told who does;
    the dataset stays valid (two writers once left episode_ends decreasing). A run that starts
    after the other finished finds nothing to do (no race: both say ok), as
    benchmarks/two_writers.py counts apart; about one round in ten goes so."""
    raced = 0
    for round in range(3):
        path = tmp_path / f"race{round}.zarr"
        shutil.copytree(maze_dataset, path)
        barrier, results = CTX.Barrier(2), CTX.Queue()
        args = (path, 150, barrier, results)
        procs = [CTX.Process(target=_collect_to, args=args) for _ in range(2)]
        for p in procs:
            p.start()
        outcomes = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(30)
        winners = [pid for pid, said in outcomes.items() if said == "ok"]
        assert len(winners) in (1, 2), outcomes
        if len(winners) == 1:
            raced += 1
            [told] = [said for said in outcomes.values() if said != "ok"]
            assert f"is being written by pid {winners[0]} {HOLDER}" in told
        store = EpisodeStore.open(path)
        store.check_contents()
        assert store.n_episodes == 150
        assert np.all(np.diff(store.episode_ends) > 0)
    assert raced >= 1  # the lock was contended at least once


def test_a_collection_that_wrote_from_a_process_leaves_the_dataset_free(maze_dataset, monkeypatch):
    from wmrobot.datasets import collector
    from wmrobot.datasets.policies import PolicySpec

    other = Other(lambda: _open_for_append(maze_dataset))
    # A writer process, forked while this process holds the lock of the dataset it resumes.
    monkeypatch.setattr(collector, "WRITER_PROCESS_STEPS", 0)
    monkeypatch.setattr(collector, "only_workers_step", lambda *args: False)
    args = dict(env_kwargs={"layout": "open"}, policy=PolicySpec(), fast=False, progress=False)
    collect(str(maze_dataset), ENV_ID, episodes=6, **args)
    assert other.run() == "ok"  # at once: the writer process, still exiting, holds nothing
