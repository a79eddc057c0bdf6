"""Collecting PointMaze episodes: the record, resuming to a target, random policies, bad input."""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing as mp
import os
import subprocess
import sys
import threading
from pathlib import Path

import mujoco
import numpy as np
import pytest
import zarr

from wmrobot.datasets import EpisodeStore, collect, episodes, merge
from wmrobot.datasets.episodes import episode_seed
from wmrobot.datasets.policies import PolicySpec
from wmrobot.datasets.replay import replay
from wmrobot.envs import make_env
from wmrobot.errors import DatasetError, EnvError

ENV_ID = "wmrobot/PointMaze-v0"
KWARGS = {"layout": "open"}


def test_collected_dataset_holds_whole_episodes(maze_dataset):
    store = EpisodeStore.open(maze_dataset)
    assert store.n_episodes == 4
    assert {"obs/observation", "obs/achieved_goal", "action", "physics", "goal"} <= set(store.keys)
    assert store.attrs["env"]["id"] == ENV_ID and store.attrs["env"]["kwargs"] == KWARGS
    assert store.attrs["collector"]["seed"] == 0
    assert store.attrs["collector"]["versions"]["mujoco"] == mujoco.__version__
    assert "git_revision" in store.attrs["collector"] and store.attrs["collector"]["created"]
    assert "q01" in store.attrs["stats"]["obs/observation"]
    np.testing.assert_array_equal(store.meta("seed"), [episode_seed(0, i) for i in range(4)])
    for i in range(store.n_episodes):
        ep = store.episode(i)
        assert np.isnan(ep["action"][-1]).all() and np.isfinite(ep["action"][:-1]).all()
        assert ep["reward"][-1] == 0.0
        assert ep["terminated"][-2] or len(ep["action"]) - 1 == 100  # success or time limit
        # Each row's physics state is the state its observation was read from.
        np.testing.assert_allclose(ep["physics"][:, 1:3], ep["obs/observation"][:, :2], atol=1e-6)


def test_episode_seed_depends_on_seed_and_index_only():
    assert episode_seed(0, 3) == episode_seed(0, 3)
    seeds = {episode_seed(s, i) for s in range(3) for i in range(50)}
    assert len(seeds) == 150
    assert all(0 <= s < 2**31 for s in seeds)


def test_resuming_equals_an_uninterrupted_collection(tmp_path):
    whole, resumed = str(tmp_path / "whole.zarr"), str(tmp_path / "resumed.zarr")
    collect(whole, ENV_ID, KWARGS, episodes=5, seed=3, flush_every=2, progress=False)
    first = collect(resumed, ENV_ID, KWARGS, episodes=2, seed=3, flush_every=2, progress=False)
    assert first.episodes == 2
    result = collect(resumed, ENV_ID, KWARGS, episodes=5, seed=3, flush_every=2, progress=False)
    assert result.episodes == 5
    assert result.transitions == EpisodeStore.open(whole).n_transitions

    a, b = EpisodeStore.open(whole), EpisodeStore.open(resumed)
    np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
    np.testing.assert_array_equal(a.meta("seed"), b.meta("seed"))
    for key, rows in a.load().items():
        np.testing.assert_array_equal(rows, b.load([key])[key], err_msg=key)
    assert a.fingerprint() == b.fingerprint()
    for key, stats in a.attrs["stats"].items():
        np.testing.assert_allclose(stats["mean"], b.attrs["stats"][key]["mean"], rtol=1e-9)


def test_a_target_already_reached_collects_nothing(maze_dataset):
    before = EpisodeStore.open(maze_dataset).fingerprint()
    result = collect(str(maze_dataset), ENV_ID, KWARGS, episodes=3, seed=0, progress=False)
    assert result.episodes == 4
    assert EpisodeStore.open(maze_dataset).fingerprint() == before


def test_a_dataset_written_before_shrinking_is_shrunk_by_the_next_collect(
    maze_dataset, read_plainly
):
    # As one written before writers shrank: every array with capacity past the commit.
    root = zarr.open_group(maze_dataset, mode="r+")
    names = [f"data/{k}" for k in root.attrs["keys"]]
    names += [f"meta/{name}" for name, _ in root["meta"].arrays()]
    for name in names:
        root[name].resize((2 * root[name].shape[0] + 100, *root[name].shape[1:]))
    before = EpisodeStore.open(maze_dataset).fingerprint()
    collect(str(maze_dataset), ENV_ID, KWARGS, episodes=4, seed=0, progress=False)  # reached
    read_plainly(maze_dataset)
    assert EpisodeStore.open(maze_dataset).fingerprint() == before


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"episodes": 0}, DatasetError, "episodes"),
        ({"policy": "greedy"}, EnvError, "greedy"),
        ({"policy": "expert"}, DatasetError, "policy=random, not expert"),
        ({"env_kwargs": {"layout": "ring"}}, DatasetError, "ring"),
        ({"seed": 1}, DatasetError, "seed"),
    ],
)
def test_bad_requests_fail_and_leave_the_dataset_unchanged(maze_dataset, kwargs, error, named):
    before = EpisodeStore.open(maze_dataset)
    fingerprint, attrs = before.fingerprint(), before.attrs
    args = {"env_kwargs": KWARGS, "episodes": 6, "seed": 0, "progress": False, **kwargs}
    with pytest.raises(error, match=named):
        collect(str(maze_dataset), ENV_ID, **args)
    after = EpisodeStore.open(maze_dataset)
    assert after.fingerprint() == fingerprint
    assert after.attrs == attrs


def test_unknown_env_is_refused_before_writing(tmp_path):
    path = tmp_path / "d.zarr"
    with pytest.raises(EnvError, match="Nope-v0"):
        collect(str(path), "wmrobot/Nope-v0", episodes=1, progress=False)
    assert not path.exists()


def _same_rows(a: EpisodeStore, b: EpisodeStore) -> None:
    assert a.keys == b.keys and a.fingerprint() == b.fingerprint()
    for key in a.keys:
        np.testing.assert_array_equal(a.array(key)[: a.n_rows], b.array(key)[: b.n_rows])
    for key in ("seed", "return", "success", "length"):
        np.testing.assert_array_equal(a.meta(key), b.meta(key))


@pytest.mark.parametrize(
    ("env_id", "env_kwargs"),
    [
        ("wmrobot/PointMaze-v0", {"layout": "open", "min_goal_distance": 0.5}),
        ("HalfCheetah-v5", {"max_episode_steps": 40}),
    ],
)
def test_two_workers_write_the_same_dataset_as_one(tmp_path, env_id, env_kwargs):
    # The acceleration layer against this plain path: tests/datasets/accel/test_accelerate.py.
    stores = []
    for workers in (1, 2):
        path = tmp_path / f"w{workers}.zarr"
        collect(
            str(path),
            env_id,
            env_kwargs,
            policy=PolicySpec(beta=1.0),
            episodes=6,
            seed=5,
            workers=workers,
            fast=False,
            flush_every=4,
            progress=False,
        )
        stores.append(EpisodeStore.open(path))
    assert "physics" in stores[0].keys
    if env_id.startswith("wmrobot"):  # some episodes end early, on success
        assert len(set(stores[0].meta("length"))) > 1
    for other in stores[1:]:
        _same_rows(stores[0], other)


def test_resume_refuses_an_env_whose_spaces_changed(tmp_path):
    path = tmp_path / "d.zarr"
    collect(str(path), "wmrobot/PointMaze-v0", episodes=2, progress=False)
    store = EpisodeStore.open(path, mode="a")
    spaces = {**store.attrs["spaces"], "observation": "Box(0.0, 1.0, (3,), float32)"}
    store.update_attrs(spaces=spaces)  # as if the env's observation had changed since
    fingerprint = store.fingerprint()
    with pytest.raises(DatasetError, match="observation space"):
        collect(str(path), "wmrobot/PointMaze-v0", episodes=4, progress=False)
    store = EpisodeStore.open(path)
    assert store.n_episodes == 2 and store.fingerprint() == fingerprint


def test_pixels_are_stored_as_uint8_frames_a_few_per_chunk(tmp_path):
    path = tmp_path / "pixels.zarr"
    collect(
        str(path),
        "wmrobot/PointMaze-v0",
        policy=PolicySpec(beta=1.0),
        episodes=2,
        pixels=32,
        progress=False,
    )
    store = EpisodeStore.open(path)
    frames = store.array("pixels")
    assert frames.dtype == np.uint8 and frames.shape[1:] == (32, 32, 3)
    assert frames.chunks[0] < 64  # random access reads a few frames, not a whole block
    first = store.episode(0, ["pixels"])["pixels"]
    assert len(first) == store.meta("length")[0] + 1
    assert np.abs(first[0].astype(int) - first[-1].astype(int)).mean() > 0.1  # the agent moved
    assert store.attrs["env"]["kwargs"]["width"] == 32
    assert store.attrs["env"]["kwargs"]["show_goal"] is False  # the goal image shows the goal


def test_pixels_keep_the_goal_marker_when_asked(tmp_path):
    path = tmp_path / "marked.zarr"
    kwargs = {"show_goal": True}
    collect(str(path), "wmrobot/PointMaze-v0", kwargs, episodes=1, pixels=16, progress=False)
    assert EpisodeStore.open(path).attrs["env"]["kwargs"]["show_goal"] is True
    assert kwargs == {"show_goal": True}  # the caller's dict is left as it was


def test_too_small_pixels_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="pixels=4"):
        collect(str(tmp_path / "d.zarr"), "wmrobot/PointMaze-v0", episodes=1, pixels=4)
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.parametrize(("workers", "fast"), [(1, False), (2, False), (2, True)])
def test_a_steps_target_collects_whole_episodes_until_reached(tmp_path, workers, fast):
    path = tmp_path / "steps.zarr"
    args = dict(env_id="wmrobot/PointMaze-v0", env_kwargs={"max_episode_steps": 30}, seed=2)
    collect(str(path), **args, steps=100, workers=workers, fast=fast, flush_every=2, progress=False)
    store = EpisodeStore.open(path)
    lengths = store.meta("length")
    assert store.n_transitions >= 100 and store.n_transitions - lengths[-1] < 100
    # a larger target resumes and ends where a single run to that target ends
    collect(str(path), **args, steps=250, workers=workers, fast=fast, progress=False)
    once = tmp_path / "once.zarr"
    collect(str(once), **args, steps=250, fast=False, progress=False)
    assert EpisodeStore.open(path).fingerprint() == EpisodeStore.open(once).fingerprint()


def _run_script(tmp_path, code):
    """Run ``code`` as a script of its own (``__main__``) in a fresh interpreter."""
    script = tmp_path / "script.py"
    script.write_text(code)
    command = [sys.executable, str(script)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _guarded_script(tmp_path, pixels):
    """A script that registers an env only under `if __name__ == "__main__"` and collects
    from it with two workers."""
    return _run_script(
        tmp_path,
        "import gymnasium as gym\n"
        "from wmrobot.datasets import collect\n"
        "from wmrobot.envs import PointMazeEnv\n"
        "if __name__ == '__main__':\n"
        "    gym.register(id='GuardedOnly-v0', entry_point=PointMazeEnv, max_episode_steps=5)\n"
        f"    collect({str(tmp_path / 'd.zarr')!r}, 'GuardedOnly-v0', episodes=3, workers=2,\n"
        f"            fast=False, pixels={pixels}, progress=False)\n",
    )


def _tagged_worker_episode(seed):
    env, policy = episodes._WORKER["env"], episodes._WORKER["policy"]
    return {**episodes.run_episode(env, policy, seed), "pid": os.getpid()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers (Linux)")
def test_the_collecting_process_takes_the_last_episodes_rather_than_wait(monkeypatch):
    # Where this process steps beside the workers (spawned ones, which start slowly; forked
    # here, to see which process ran what): with one worker process and two episodes left,
    # the worker gets one and this process the other; queueing both on the worker would
    # leave this process waiting with nothing to do.
    monkeypatch.setattr(episodes, "_worker_episode", _tagged_worker_episode)
    seeds = [episode_seed(0, i) for i in range(2)]
    run = functools.partial(episodes.episodes_in_order, ENV_ID, KWARGS, PolicySpec(), workers=2)
    got = list(run(seeds, pooled=False))
    assert [e["seed"] for e in got] == seeds
    mine = os.getpid()
    assert [e.get("pid", mine) != mine for e in got] == [True, False]  # a worker, then this one
    got = list(run(range(1, 9), pooled=False))
    pids = {e.get("pid", mine) for e in got}
    assert len(pids) == 2 and [e["seed"] for e in got] == list(range(1, 9))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers (Linux)")
@pytest.mark.parametrize("workers", [2, 3])
def test_forked_workers_step_every_episode_and_this_process_none(monkeypatch, workers):
    # Forked workers start at once, so they step all the episodes, in order, and the
    # collecting process is left free to write.
    monkeypatch.setattr(episodes, "_worker_episode", _tagged_worker_episode)
    env = make_env(ENV_ID, KWARGS)
    assert episodes.only_workers_step(env, KWARGS, PolicySpec(), workers)
    assert not episodes.only_workers_step(env, KWARGS, PolicySpec(), 1)
    env.close()
    seeds = list(range(1, 4 * workers + 2))
    got = list(episodes.episodes_in_order(ENV_ID, KWARGS, PolicySpec(), seeds, workers))
    assert [e["seed"] for e in got] == seeds
    pids = {e.get("pid") for e in got}  # an episode of this process's has no pid
    assert None not in pids and os.getpid() not in pids
    # An endless stream of seeds, read as far as the consumer goes.
    endless = episodes.episodes_in_order(ENV_ID, KWARGS, PolicySpec(), itertools.count(), workers)
    with contextlib.closing(endless):
        assert [e["seed"] for e in itertools.islice(endless, 3)] == [0, 1, 2]


def test_workers_skip_what_is_queued_once_the_collection_is_over(monkeypatch):
    # The pool cannot take back the episodes already handed to its processes; once the
    # consumer is done (a step target reached, Ctrl-C), the workers skip them.
    env, policy = episodes.make_env_and_policy(ENV_ID, KWARGS, PolicySpec())
    stop = threading.Event()
    for key, value in (("env", env), ("policy", policy), ("stop", stop)):
        monkeypatch.setitem(episodes._WORKER, key, value)
    assert episodes._worker_episode(1)["seed"] == 1
    stop.set()
    assert episodes._worker_episode(2) is None
    env.close()


def test_workers_that_cannot_start_fail_fast_with_a_clear_error(tmp_path):
    # Rendering workers start afresh (spawn), and the env is unknown to them.
    result = _guarded_script(tmp_path, pixels=16)
    assert result.returncode != 0
    assert "could not start" in result.stderr
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers fork on Linux only")
def test_forked_workers_know_an_env_registered_in_a_script(tmp_path):
    result = _guarded_script(tmp_path, pixels=None)
    assert result.returncode == 0, result.stderr
    assert EpisodeStore.open(tmp_path / "d.zarr").n_episodes == 3


def test_workers_fork_only_where_they_run_numpy_and_physics(tmp_path):
    from wmrobot.datasets.episodes import start_method

    forks = "fork" if sys.platform.startswith("linux") else "spawn"
    env = make_env("wmrobot/PointMaze-v0")
    assert start_method(env, {}, PolicySpec("random")) == forks
    assert start_method(env, {}, PolicySpec("expert", epsilon=0.2)) == forks
    assert start_method(env, {}, PolicySpec("sb3", path="model.zip")) == "spawn"  # torch
    assert start_method(env, {"obs_mode": "pixels"}, PolicySpec("random")) == "spawn"
    env.close()
    env = make_env("wmrobot/PointMaze-v0", {"render_mode": "rgb_array", "width": 16, "height": 16})
    assert start_method(env, {}, PolicySpec("random")) == "spawn"  # OpenGL
    env.close()


def _pipe_max_size() -> int:
    try:
        return int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return 0


@pytest.mark.skipif(
    _pipe_max_size() < episodes.RESULT_PIPE_BYTES, reason="Linux, where pipes may be that large"
)
def test_the_pipe_of_the_workers_episodes_holds_several_of_them():
    # Else a worker writes each episode 64 KiB at a time, waiting for this process to read.
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp.get_context("fork")) as pool:
        assert episodes.widen_result_pipe(pool) == episodes.RESULT_PIPE_BYTES


def test_a_trailing_slash_names_the_same_dataset(tmp_path):
    path = tmp_path / "d.zarr"
    collect(f"{path}/", "wmrobot/PointMaze-v0", episodes=1, progress=False)
    collect(f"{path}/", "wmrobot/PointMaze-v0", episodes=2, progress=False)  # resumes
    assert EpisodeStore.open(path).n_episodes == 2
    assert not list(tmp_path.glob("*creating*")) and not list(path.glob("*creating*"))


def test_pixels_stay_out_of_the_statistics(tmp_path):
    path = tmp_path / "px.zarr"
    collect(str(path), "wmrobot/PointMaze-v0", episodes=1, pixels=16, progress=False)
    stats = EpisodeStore.open(path).attrs["stats"]
    assert "pixels" not in stats and "obs/observation" in stats


@pytest.mark.parametrize("workers", [1, 2])
def test_the_writer_process_commits_what_the_writer_thread_does(
    tmp_path, monkeypatch, workers, read_plainly
):
    from wmrobot.datasets import collector

    args = dict(
        env_id="wmrobot/PointMaze-v0",
        policy=PolicySpec(beta=1.0),
        seed=4,
        fast=False,
        workers=workers,
    )
    collect(str(tmp_path / "thread.zarr"), **args, episodes=7, flush_every=3, progress=False)
    # Long collections write from a process of their own; make this one count as long.
    monkeypatch.setattr(collector, "WRITER_PROCESS_STEPS", 0)
    # Only where this process steps too: with forked workers that is spawned workers' scheme
    # (the writer thread above took episodes from two forked workers).
    monkeypatch.setattr(collector, "only_workers_step", lambda *args: False)
    path = str(tmp_path / "process.zarr")
    collect(path, **args, episodes=4, flush_every=3, progress=False)
    read_plainly(path)  # shrunk by the writer process itself, which saw every row
    result = collect(path, **args, episodes=7, flush_every=3, progress=False)  # resumes
    assert result.episodes == 7
    thread, process = EpisodeStore.open(tmp_path / "thread.zarr"), EpisodeStore.open(path)
    _same_rows(thread, process)
    assert all("q01" in process.attrs["stats"][k] for k in process.stat_keys)


def test_spawned_workers_collect_what_one_process_does(tmp_path, monkeypatch):
    # Rendering workers start afresh (spawn), so the collecting process steps beside them,
    # and a long collection writes from a process of its own.
    from wmrobot.datasets import collector

    args = dict(
        env_id=ENV_ID,
        env_kwargs={**KWARGS, "max_episode_steps": 6},
        pixels=16,
        seed=5,
        fast=False,
        progress=False,
    )
    collect(str(tmp_path / "one.zarr"), **args, episodes=5, workers=1)
    monkeypatch.setattr(collector, "WRITER_PROCESS_STEPS", 0)
    collect(str(tmp_path / "two.zarr"), **args, episodes=5, workers=2)
    one, two = EpisodeStore.open(tmp_path / "one.zarr"), EpisodeStore.open(tmp_path / "two.zarr")
    assert "pixels" in two.keys
    _same_rows(one, two)


def _collect_call(path, env_id="wmrobot/PointMaze-v0", **kwargs):
    """Source of a stepping ``c.collect(...)`` call, for the scripts below."""
    args = {"fast": False, "progress": False, **kwargs}
    listed = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return f"c.collect({str(path)!r}, {env_id!r}, {listed})"


def test_a_script_without_a_main_guard_collects_twice_with_a_writer_process(tmp_path):
    # The second collection starts its writer process with zarr loaded (as a script that reads
    # a dataset has it); it used to be spawned then, which re-ran this unguarded script and died.
    code = (
        "import zarr\n"
        "import wmrobot.datasets.collector as c\n"
        f"a = {_collect_call(tmp_path / 'a.zarr', episodes=2)}\n"
        "c.WRITER_PROCESS_STEPS = 0\n"
        f"b = {_collect_call(tmp_path / 'b.zarr', episodes=3)}\n"
        "print(a.episodes, b.episodes)\n"
    )
    result = _run_script(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "3"]
    assert EpisodeStore.open(tmp_path / "b.zarr").n_episodes == 3


def test_a_writer_process_that_dies_stops_the_collection_with_one_line(tmp_path):
    # Dead after two commits: the collection raises, keeps what was committed, and the
    # interpreter exits: the batch the dead writer never read (HalfCheetah's, larger than a
    # pipe holds) must not hold it at exit.
    code = (
        "import os\n"
        "import time\n"
        "import wmrobot.datasets.collector as c\n"
        "from wmrobot.errors import DatasetError\n"
        "c.WRITER_PROCESS_STEPS = 0\n"
        "write = c._write_batches\n"
        "class Dying:\n"
        "    def __init__(self, batches):\n"
        "        self.batches, self.n = batches, 0\n"
        "    def get(self, *args, **kwargs):\n"
        "        self.n += 1\n"
        "        if self.n == 4:  # the creation request, two commits, then death, once\n"
        "            time.sleep(1.0)  # the next batches are on their way\n"
        "            os._exit(3)\n"
        "        return self.batches.get(*args, **kwargs)\n"
        "    def get_nowait(self):\n"
        "        return self.batches.get_nowait()\n"
        "c._write_batches = lambda path, batches, *rest: write(path, Dying(batches), *rest)\n"
        "try:\n"
        f"    {_collect_call(tmp_path / 'd.zarr', 'HalfCheetah-v5', episodes=20, flush_every=2)}\n"
        "except DatasetError as e:\n"
        "    print(e)\n"
    )
    result = _run_script(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert "the writer process of" in result.stdout and "exit code 3" in result.stdout
    assert len(result.stdout.strip().splitlines()) == 1
    store = EpisodeStore.open(tmp_path / "d.zarr")
    store.validate()
    # what its two commits held (batches queued meanwhile go into the same commit)
    assert 2 <= store.n_episodes < 20 and store.n_episodes % 2 == 0


def test_the_writer_creates_a_new_dataset_before_the_first_batch(tmp_path):
    # Created while the first episodes run, so the first commit does not wait for it.
    import queue
    import threading
    import time

    from wmrobot.datasets.collector import _write_batches

    batches, done = queue.Queue(), queue.Queue()
    writer = threading.Thread(
        target=_write_batches, args=(str(tmp_path / "d.zarr"), batches, done, None)
    )
    writer.start()
    batches.put(
        dict(env={"id": "x", "kwargs": {}}, spaces={}, row_shapes={"action": ((2,), "float32")})
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "d.zarr" / "zarr.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    created = (tmp_path / "d.zarr" / "zarr.json").exists()
    batches.put(None)
    writer.join()
    assert created
    assert done.get_nowait() == ("closed", None)  # nothing committed, no statistics to finish
    assert EpisodeStore.open(tmp_path / "d.zarr").n_episodes == 0


def test_ctrl_c_commits_the_finished_episodes(tmp_path, monkeypatch):
    from wmrobot.datasets import collector

    real = collector.episodes_in_order

    def interrupted(*args, **kwargs):
        yield from itertools.islice(real(*args, **kwargs), 3)
        raise KeyboardInterrupt

    monkeypatch.setattr(collector, "episodes_in_order", interrupted)
    path = tmp_path / "d.zarr"
    with pytest.raises(KeyboardInterrupt):
        collect(str(path), ENV_ID, episodes=10, fast=False, flush_every=100, progress=False)
    assert EpisodeStore.open(path).n_episodes == 3


@pytest.mark.parametrize(
    ("workers", "target", "flush", "before", "handed"),
    [
        # the last episode's start hands over what waits; half a second of stepping before
        # (a quarter of the flush interval), so does the one before
        (1, {"episodes": 6}, 8.0, 0, [4, 1, 1]),
        (2, {"episodes": 6}, 8.0, 0, [4, 2]),  # both at once
        (1, {"steps": 150}, 8.0, 0, [3, 1, 1]),  # episodes left, from their mean length
        (1, {"episodes": 8}, 3.0, 0, [3, 3, 1, 1]),  # by time, then the last one's start
        (1, {"episodes": 8}, 8.0, 2, [4, 1, 1]),  # resumed: this run's pace and episodes
        (1, {"episodes": 3}, 8.0, 0, [2, 1]),  # the pace is not known at the first episode
    ],
)
def test_the_closing_commit_holds_only_the_last_episodes(
    tmp_path, monkeypatch, workers, target, flush, before, handed
):
    # By default batches go by time; what waits when the last episodes start is handed over
    # then, and what waits a little before that too, so that the commit at the end, which
    # nothing overlaps, is small and the writer is done with the one before. Each episode
    # takes one second here, on a clock of the test's.
    from types import SimpleNamespace

    from wmrobot.datasets import collector

    clock = [0.0]
    monkeypatch.setattr(collector, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    real_episodes = collector.episodes_in_order

    def one_second_each(*args, **kwargs):
        for episode in real_episodes(*args, **kwargs):
            clock[0] += 1.0
            yield episode

    monkeypatch.setattr(collector, "episodes_in_order", one_second_each)
    sizes = []
    real = collector._Writer.put

    def put(self, batch):
        if not isinstance(batch, dict):  # a dict asks the writer to create the dataset
            sizes.append(None if batch is None else len(batch))
        real(self, batch)

    monkeypatch.setattr(collector._Writer, "put", put)
    monkeypatch.setattr(collector, "FLUSH_SECONDS", flush)
    kwargs = {"max_episode_steps": 30}
    path = tmp_path / "d.zarr"
    if before:
        collect(str(path), ENV_ID, kwargs, episodes=before, fast=False, progress=False)
        sizes.clear()
    collect(str(path), ENV_ID, kwargs, **target, workers=workers, fast=False, progress=False)
    assert sizes == [*handed, None]
    assert EpisodeStore.open(path).n_episodes == before + sum(handed)


def test_factors_of_variation_are_recorded_per_episode_and_replayed(tmp_path):
    path = tmp_path / "rooms.zarr"
    ranges = {"door_position": [-0.5, 0.5], "mass": [0.5, 2.0]}
    collect(
        str(path),
        "wmrobot/TwoRoom-v0",
        {"factors": ranges},
        policy="expert",
        episodes=4,
        seed=0,
        progress=False,
    )
    store = EpisodeStore.open(path)
    assert store.attrs["factors"]["ranges"]["door_position"] == [-0.5, 0.5]
    values = store.meta("factors")
    assert values.shape == (4, len(store.factor_names))
    door = values[:, store.factor_names.index("door_position")]
    assert ((door >= -0.5) & (door <= 0.5)).all() and len(set(door)) == 4
    assert (values[:, store.factor_names.index("friction")] == 1.0).all()  # held at nominal
    assert store.meta("success").all()  # the expert finds each episode's door
    for episode in range(4):
        assert replay(store, episode).exact
    other = tmp_path / "more-rooms.zarr"
    collect(
        str(other),
        "wmrobot/TwoRoom-v0",
        {"factors": ranges},
        policy="expert",
        episodes=2,
        seed=1,
        progress=False,
    )
    merged = merge(str(tmp_path / "merged.zarr"), [str(path), str(other)])
    np.testing.assert_array_equal(
        merged.meta("factors"), np.concatenate([values, EpisodeStore.open(other).meta("factors")])
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_quantiles_from_the_writer_equal_a_pass_over_the_stored_rows(
    tmp_path, workers, monkeypatch
):
    calls = []
    finalize = EpisodeStore.finalize_stats

    def spy(self, columns=None, **kwargs):
        calls.append(columns is not None)
        return finalize(self, columns, **kwargs)

    monkeypatch.setattr(EpisodeStore, "finalize_stats", spy)
    path = tmp_path / "q.zarr"
    collect(
        str(path),
        "HalfCheetah-v5",
        {"max_episode_steps": 30},
        episodes=5,
        workers=workers,
        fast=False,
        flush_every=2,
        progress=False,
    )
    assert calls == [True]  # the writer's rows, once; nothing read back
    store = EpisodeStore.open(path, mode="a")
    written = {k: dict(v) for k, v in store.attrs["stats"].items()}
    assert all("q01" in written[k] for k in store.stat_keys)
    reread = store.finalize_stats()  # reads every row back
    for key in store.stat_keys:
        assert written[key]["q01"] == reread[key]["q01"]
        assert written[key]["q99"] == reread[key]["q99"]


@pytest.mark.parametrize("fast", [False, None], ids=["plain", "fast"])
def test_a_finished_collection_reads_right_with_plain_zarr(tmp_path, fast, read_plainly):
    # Every array exactly as long as the commit, for readers of the plain layout; resuming
    # grows them again and leaves them exact once more.
    path = tmp_path / "d.zarr"
    args = dict(env_kwargs={"max_episode_steps": 20}, seed=1, fast=fast, progress=False)
    collect(str(path), ENV_ID, episodes=3, **args)
    ends, _ = read_plainly(path)
    assert len(ends) == 3
    collect(str(path), ENV_ID, episodes=5, flush_every=1, **args)
    ends, data = read_plainly(path)
    store = EpisodeStore.open(path)
    np.testing.assert_array_equal(ends, store.episode_ends)
    for i, start in enumerate(np.concatenate([[0], ends[:-1]])):
        for key in store.keys:
            np.testing.assert_array_equal(data[key][start : ends[i]], store.episode(i)[key])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ({"episodes": 10**12}, "collecting 1,000,000,000,000 episodes would take about"),
        ({"steps": 10**15}, "collecting 1,000,000,000,000,000 steps would take about"),
    ],
)
def test_a_collection_that_cannot_fit_is_refused_before_writing(tmp_path, target, said):
    with pytest.raises(DatasetError, match=said) as refused:
        collect(str(tmp_path / "huge.zarr"), ENV_ID, KWARGS, progress=False, **target)
    message = str(refused.value)
    assert f"but {tmp_path} has" in message and "free; collect fewer" in message
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its creation folder


def test_a_resume_that_cannot_fit_is_refused_and_leaves_the_dataset_as_it_was(maze_dataset):
    before = _files(maze_dataset)
    with pytest.raises(DatasetError, match="collecting 999,999,999,996 more episodes"):
        collect(str(maze_dataset), ENV_ID, KWARGS, episodes=10**12, progress=False)
    assert _files(maze_dataset) == before


def test_the_command_line_refuses_a_collection_too_large_in_one_line(tmp_path, capsys):
    from wmrobot.cli import main

    out = tmp_path / "huge.zarr"
    assert main(["collect", "episodes=1000000000000", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would take about" in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []
