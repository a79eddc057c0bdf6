"""Crash safety: SIGKILL a collecting process at random moments; nothing committed is lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

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


def _collect_in_subprocess(
    path, episodes: int, extra: str = "", setup: str = ""
) -> subprocess.Popen:
    code = (
        f"{setup}from wmrobot.datasets import collect; "
        "from wmrobot.datasets.policies import PolicySpec; "
        f"collect({str(path)!r}, {ARGS['env_id']!r}, {ARGS['env_kwargs']!r}, "
        f"policy={ARGS['policy']}, episodes={episodes}, seed={ARGS['seed']}, flush_every=1, "
        f"progress=False{extra})"
    )
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


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


@pytest.mark.parametrize("extra", ["", ", fast=False"], ids=["accelerated", "plain"])
def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path, extra):
    reference_path = tmp_path / "reference.zarr"
    collect(str(reference_path), **ARGS, episodes=EPISODES, flush_every=10, progress=False)
    reference = EpisodeStore.open(reference_path)

    path = tmp_path / "killed.zarr"
    rng = np.random.default_rng(0)
    committed = []
    for trial in range(8):
        proc = _collect_in_subprocess(path, EPISODES, extra=extra)
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


def test_sigkill_during_creation_leaves_no_dataset_or_a_valid_one(tmp_path):
    path = tmp_path / "young.zarr"
    rng = np.random.default_rng(1)
    outcomes = set()
    for _ in range(4):
        proc = _collect_in_subprocess(path, 5)
        # Python and wmrobot take about a second to import; creation follows right after.
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("young.zarr*")) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.02))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if path.exists():
            outcomes.add("dataset")
            EpisodeStore.open(path)  # a dataset, if there is one, opens and validates
            shutil.rmtree(path)
        else:
            outcomes.add("nothing")
    assert outcomes  # each kill left either nothing at the path or a valid dataset
    # Left-overs of a cut-short creation do not stop a new one.
    collect(str(path), **ARGS, episodes=2, progress=False)
    assert EpisodeStore.open(path).n_episodes == 2
    assert not list(tmp_path.glob("young.zarr.creating-*"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    ("extra", "setup", "children"),
    [
        (", workers=2, fast=False", "", 2),  # two stepping workers (this process writes)
        # one worker and a writer process (what long collections use)
        (", fast=False", "import wmrobot.datasets.collector as c; c.WRITER_PROCESS_STEPS = 0; ", 1),
    ],
)
def test_killing_the_collector_also_ends_its_workers(tmp_path, extra, setup, children):
    path = tmp_path / "workers.zarr"
    proc = _collect_in_subprocess(path, EPISODES, extra=extra, setup=setup)
    deadline = time.monotonic() + 60
    while _committed(path) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = _children(proc.pid)
    assert len(workers) >= children, "the collector should be running its processes"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    for w in alive:  # do not leave them behind even when the test fails
        os.kill(w, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived their collector"
    store = EpisodeStore.open(path)
    assert store.n_episodes >= 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers, /proc")
def test_ctrl_c_stops_a_collection_with_workers_in_one_line_and_it_resumes(tmp_path):
    # Ctrl-C reaches the whole process group: the collecting process says so in one line, its
    # workers print nothing, what is finished stays committed, and resuming ends where an
    # uninterrupted run does.
    path = tmp_path / "c.zarr"
    args = [
        "collect",
        "env.kwargs.layout=open",
        "+env.kwargs.max_episode_steps=10",
        "workers=2",
        "fast=false",
        "flush_every=5",
        "seed=7",
        f"out={path}",
    ]
    # Started as from a terminal, with Ctrl-C at its default. Run after many other tests, this
    # process has been seen ignoring SIGINT and SIGQUIT at the C level (glibc's system() does
    # so while it waits; the caller is not known yet), which a child inherits and keeps.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wmrobot.cli", *args, "episodes=100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        cwd=tmp_path,  # its run directory too
    )
    deadline = time.monotonic() + 60
    while _committed(path) < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = _children(proc.pid)
    assert proc.poll() is None and len(workers) >= 2, "the collection should be running"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err  # a user-facing error, as bad input
    assert err.strip().splitlines() == ["wmrobot collect: error: interrupted"], err
    assert not any(Path(f"/proc/{w}").exists() for w in workers)
    store = EpisodeStore.open(path)
    interrupted = store.n_episodes
    assert 10 <= interrupted < 100000

    resumed = subprocess.run(
        [sys.executable, "-m", "wmrobot.cli", *args, f"episodes={interrupted + 20}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference.zarr"
    whole = [a for a in args if not a.startswith("out=")]
    whole += [f"out={reference}", f"episodes={interrupted + 20}"]
    done = subprocess.run(
        [sys.executable, "-m", "wmrobot.cli", *whole],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    a, b = EpisodeStore.open(path), EpisodeStore.open(reference)
    assert a.n_episodes == b.n_episodes == interrupted + 20
    for key in a.keys:
        np.testing.assert_array_equal(a.array(key)[: a.n_rows], b.array(key)[: b.n_rows])
