"""Stepping environments: one episode as T+1 rows, and worker processes that run episodes in
order. Kept free of the storage stack (zarr), so that worker processes start fast."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from wmrobot.datasets.policies import Policy, PolicySpec, make_policy
from wmrobot.envs import make_env
from wmrobot.envs.physics import FULL_SIGNATURE, model_data
from wmrobot.errors import DatasetError


def episode_seed(seed: int, index: int) -> int:
    """Episode ``index``'s reset seed: a function of the run seed and the index alone, so a
    resumed collection draws exactly what an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def _set_aside(value: Any, rows: int) -> np.ndarray:
    """An empty array of ``rows`` rows shaped and typed as ``value``."""
    value = np.asarray(value)
    return np.empty((rows, *value.shape), dtype=value.dtype)


def _doubled(rows: np.ndarray) -> np.ndarray:
    return np.concatenate([rows, np.empty_like(rows)])


def _widened(rows: np.ndarray, value: Any) -> np.ndarray:
    """``rows`` in a dtype that holds ``value`` too (an env may reset to ints, step to floats)."""
    dtype = np.result_type(rows.dtype, np.asarray(value).dtype)
    return rows if dtype == rows.dtype else rows.astype(dtype)


def _first(rows: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` rows; an array of their own when fewer than were set aside, so that an
    episode that ends early does not keep the rest alive."""
    return rows[:n] if n == len(rows) else rows[:n].copy()


def run_episode(env: gym.Env, policy: Policy, seed: int, rows: int | None = None) -> dict[str, Any]:
    """One episode as T+1 rows: the final observation is kept, its action is NaN, reward 0.

    Every observation, action and full physics state (as
    :func:`wmrobot.envs.get_physics_state`) is copied as it comes into arrays set aside for
    ``rows`` rows (by default the time limit + 1), doubled if the episode runs past them:
    copies, so that an env that hands back one array changed in place is recorded step by
    step. The loop is the collector's hot path (``benchmarks/stepping_overhead.py`` measures
    it against the bare loop), so it calls ``mj_getState`` itself, with an int signature.
    """
    obs, info = env.reset(seed=seed)
    policy.reset(np.random.default_rng(seed))
    if rows is None:
        limit = env.spec.max_episode_steps if env.spec is not None else None
        rows = (limit or 1000) + 1
    # Observation rows by the observation's key (None for an array observation).
    keys = list(obs) if isinstance(obs, dict) else None
    observed = {k: _set_aside(obs if k is None else obs[k], rows) for k in keys or [None]}
    for k, v in observed.items():
        v[0] = obs if k is None else obs[k]
    physics = views = None
    if (mujoco_env := model_data(env)) is not None:
        model, data = mujoco_env
        get_state = mujoco.mj_getState
        physics = np.empty((rows, mujoco.mj_stateSize(model, FULL_SIGNATURE)))
        views = list(physics)  # every row's view made at once, cheaper than indexing each step
        get_state(model, data, views[0], FULL_SIGNATURE)
    frames = [env.render()] if env.render_mode == "rgb_array" else None
    step, act = env.step, policy.act
    action = np.asarray(act(obs), dtype=np.float32)
    actions = _set_aside(action, rows)
    rewards, terms, truncs = [], [], []
    n = 1  # rows written
    success = False
    while True:
        if n == rows:  # longer than its time limit said (or it has none)
            rows *= 2
            actions = _doubled(actions)
            observed = {k: _doubled(v) for k, v in observed.items()}
            if physics is not None:
                physics = _doubled(physics)
                views = list(physics)
        actions[n - 1] = action
        obs, reward, terminated, truncated, info = step(action)
        if n == 1:  # the first step's observation may be of a wider dtype than the reset's
            observed = {k: _widened(v, obs if k is None else obs[k]) for k, v in observed.items()}
        if keys is None:
            observed[None][n] = obs
        else:
            for k in keys:
                observed[k][n] = obs[k]
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        if views is not None:
            get_state(model, data, views[n], FULL_SIGNATURE)
        n += 1
        if frames is not None:
            frames.append(env.render())
        if not success and info.get("is_success", False):
            success = True
        if terminated or truncated:
            break
        action = np.asarray(act(obs), dtype=np.float32)
    return episode_rows(
        env,
        {"obs" if k is None else f"obs/{k}": _first(v, n) for k, v in observed.items()},
        actions[: n - 1],
        rewards,
        terms,
        truncs,
        seed,
        success,
        physics=_first(physics, n) if physics is not None else None,
        pixels=np.stack(frames).astype(np.uint8) if frames is not None else None,  # (T+1,H,W,C)
        factors=info.get("factors"),
    )


def episode_rows(
    env: gym.Env,
    obs: dict[str, np.ndarray],
    actions: np.ndarray,
    rewards: Any,
    terminated: Any,
    truncated: Any,
    seed: int,
    success: bool,
    physics: np.ndarray | None = None,
    pixels: np.ndarray | None = None,
    factors: dict[str, float] | None = None,
) -> dict[str, Any]:
    """An episode in the dataset's layout, from T+1 rows of ``obs`` (keyed as stored) and the
    T actions, rewards and flags: the last row's action is NaN, its reward 0, its flags off.
    ``factors`` are the episode's factors of variation (the reset info's), if the env has any."""
    rewards = np.asarray(rewards, dtype=np.float64)
    episode = {
        **obs,
        "action": np.concatenate([actions, np.full((1, actions.shape[1]), np.nan, actions.dtype)]),
        "reward": np.append(rewards, 0.0).astype(np.float32),
        "terminated": np.append(np.asarray(terminated, dtype=bool), False),
        "truncated": np.append(np.asarray(truncated, dtype=bool), False),
        "seed": seed,
        "return": float(np.sum(rewards)),
        "success": bool(success),
    }
    if physics is not None:
        episode["physics"] = physics
    if pixels is not None:
        episode["pixels"] = pixels
    if factors is not None:
        episode["factors"] = dict(factors)
    base = env.unwrapped
    if hasattr(base, "goal_observation") and "obs/desired_goal" in obs:
        episode["goal"] = base.goal_observation(obs["obs/desired_goal"]).astype(np.float32)
    return episode


_WORKER: dict[str, Any] = {}
# Episodes held in order, at most, per worker: finished ones wait behind one still running.
LOOKAHEAD = 4
# What the pipe that brings the workers' episodes back holds (Linux; the most an unprivileged
# process may ask for by default): a few state-only episodes, so that a worker writes its
# episode in one go and steps on, rather than wait for this process to read each piece.
RESULT_PIPE_BYTES = 2**20


def _worker_init(
    env_id: str, env_kwargs: dict[str, Any], policy: PolicySpec, parent: int, stop: Any
) -> None:
    # Ctrl-C reaches the whole process group. The collecting process handles it and stops
    # its workers (``stop``); interrupted themselves, they would each print a traceback, and
    # one cut off while writing its episode to the result pipe could leave the pool waiting.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    _WORKER["stop"] = stop
    _WORKER["env"], _WORKER["policy"] = make_env_and_policy(env_id, env_kwargs, policy)


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the collecting process dies (even by SIGKILL),
    so a killed collection leaves no workers stepping environments for nobody."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def pixel_kwargs(size: int | None) -> dict[str, Any]:
    """Env kwargs that make ``env.render()`` return ``size`` x ``size`` RGB frames."""
    return {} if not size else {"render_mode": "rgb_array", "width": size, "height": size}


def _worker_episode(seed: int) -> dict[str, Any] | None:
    if _WORKER["stop"].is_set():  # the collection is over: what is still queued is skipped
        return None
    return run_episode(_WORKER["env"], _WORKER["policy"], seed)


def make_env_and_policy(
    env_id: str, env_kwargs: dict[str, Any], policy: PolicySpec
) -> tuple[gym.Env, Policy]:
    """The env and the policy that acts in it (the env is closed if the policy fails)."""
    env = make_env(env_id, env_kwargs)
    try:
        return env, make_policy(policy, env)
    except BaseException:
        env.close()
        raise


@contextlib.contextmanager
def forking_quietly() -> Iterator[None]:
    """Around starting forked processes: Python >= 3.12 warns of any fork while threads run
    (here tqdm's monitor, say), and the forked processes use nothing of those threads'."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*multi-threaded.*fork", DeprecationWarning)
        yield


def can_fork() -> bool:
    """Whether processes can start by fork here (Linux; elsewhere fork is missing or unsafe)."""
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def start_method(env: gym.Env, env_kwargs: dict[str, Any], policy: PolicySpec) -> str:
    """How worker processes start: ``fork`` where the workers run only NumPy and MuJoCo's
    physics (a numpy policy, no rendering, on Linux), else ``spawn``.

    A forked worker starts at once with everything this process has imported and
    registered; a spawned one imports gymnasium and MuJoCo afresh and compiles the env's model
    before it steps. Fork is unsafe where the
    child would use a library with thread pools or driver state the parent may have set up:
    torch (a stable-baselines3 policy) and OpenGL (pixels).
    """
    renders = getattr(env.unwrapped, "render_mode", None) is not None
    pixels = env_kwargs.get("obs_mode", "state") != "state"
    return "fork" if can_fork() and policy.name != "sb3" and not renders and not pixels else "spawn"


def only_workers_step(
    env: gym.Env, env_kwargs: dict[str, Any], policy: PolicySpec, workers: int
) -> bool:
    """Whether :func:`episodes_in_order` runs every episode in a worker process, leaving the
    collecting process free to write: with more than one worker where workers fork (they
    start at once). Spawned workers are slow to start, so the collecting process steps in
    their place meanwhile, and goes on stepping beside them."""
    return workers > 1 and start_method(env, env_kwargs, policy) == "fork"


def widen_result_pipe(pool: ProcessPoolExecutor) -> int | None:
    """Make the pipe of ``pool``'s results hold ``RESULT_PIPE_BYTES``; returns its size, or
    None where that cannot be done (not Linux, or a Python whose pool keeps its results
    elsewhere: the pool's queue is a private attribute). A narrow pipe is slower, not wrong."""
    if not sys.platform.startswith("linux"):
        return None
    import fcntl

    try:
        fd = pool._result_queue._reader.fileno()  # type: ignore[attr-defined]
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, RESULT_PIPE_BYTES)
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except (AttributeError, OSError):
        return None


def _broken(env_id: str, spawned: bool) -> DatasetError:
    """The one line for a pool whose worker processes died or could not start."""
    if spawned:
        hint = (
            "workers that start afresh (pixels, an sb3 policy) need an env registered at "
            "import time, not under `if __name__ == '__main__'`; or collect with workers=1"
        )
    else:  # forked workers start with everything this process has: one was killed
        hint = "one was killed (out of memory?); collect with fewer workers, or workers=1"
    what = f"collector worker processes for {env_id!r} died or could not start"
    return DatasetError(f"{what}; {hint}")


def _submit(pool: ProcessPoolExecutor, seed: int, env_id: str, spawned: bool) -> Future:
    try:
        return pool.submit(_worker_episode, seed)
    except BrokenProcessPool:
        raise _broken(env_id, spawned) from None


def _result(future: Future, env_id: str, spawned: bool) -> dict[str, Any]:
    """A worker's episode; one clear line where the workers died or could not start."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise _broken(env_id, spawned) from None


def episodes_in_order(
    env_id: str,
    env_kwargs: dict[str, Any],
    policy: PolicySpec,
    seeds: Iterable[int],
    workers: int = 1,
    made: tuple[gym.Env, Policy] | None = None,
    pooled: bool | None = None,
) -> Iterator[dict[str, Any]]:
    """Run one episode per seed and yield them in the order of ``seeds``.

    With ``workers > 1``, ``workers`` processes step at once. ``pooled``: whether they are all
    worker processes, and this process only receives their episodes (and so is free to write
    them); else ``workers - 1`` worker processes run episodes and this process runs one too
    whenever the next episode in order is not back yet, so that no process only waits. By
    default (None), as :func:`only_workers_step` says. Episodes come back in order, so the
    result does not depend on the number of workers. ``seeds`` may be endless: at most
    ``LOOKAHEAD * workers`` episodes run ahead of the consumer. ``made``: the env and policy
    this process steps with, made by the caller (who closes them), else made and closed here.
    """
    seeds = iter(seeds)
    env, act = made or make_env_and_policy(env_id, env_kwargs, policy)
    close = env.close if made is None else lambda: None
    if workers == 1:
        try:
            for s in seeds:
                yield run_episode(env, act, s)
        finally:
            close()
        return
    if pooled is None:
        pooled = only_workers_step(env, env_kwargs, policy, workers)
    method = start_method(env, env_kwargs, policy)
    ctx = mp.get_context(method)
    # Set once this generator is done (consumed, closed, or interrupted): the workers then
    # skip the episodes already handed to them, which the pool cannot take back.
    stop = ctx.Event()
    # A worker that fails to start breaks this pool (BrokenProcessPool) instead of being
    # restarted for ever, as multiprocessing.Pool would.
    init = (env_id, env_kwargs, policy, os.getpid(), stop)
    pool = ProcessPoolExecutor(workers if pooled else workers - 1, ctx, _worker_init, init)
    spawned = method == "spawn"
    try:
        widen_result_pipe(pool)
        if pooled:
            yield from _from_workers(pool, seeds, workers, env_id, spawned)
        else:
            yield from _beside_workers(pool, seeds, workers, env_id, spawned, env, act)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        close()


def _from_workers(
    pool: ProcessPoolExecutor, seeds: Iterator[int], workers: int, env_id: str, spawned: bool
) -> Iterator[dict[str, Any]]:
    """Every episode from the pool's ``workers`` processes, in order."""
    ahead: deque[Future] = deque()

    def top_up() -> None:
        while len(ahead) < LOOKAHEAD * workers and (s := next(seeds, None)) is not None:
            ahead.append(_submit(pool, s, env_id, spawned))

    with forking_quietly():
        top_up()  # the first submission starts the workers
    while ahead:
        head = ahead.popleft()
        top_up()
        yield _result(head, env_id, spawned)


def _beside_workers(
    pool: ProcessPoolExecutor,
    seeds: Iterator[int],
    workers: int,
    env_id: str,
    spawned: bool,
    env: gym.Env,
    act: Policy,
) -> Iterator[dict[str, Any]]:
    """Episodes from the pool's ``workers - 1`` processes and from this one, in order."""
    # In order: each entry is a Future (a worker's), or a finished episode (this process's),
    # or a seed nobody has started yet.
    ahead: deque[Any] = deque()
    peeked: deque[int] = deque()  # seeds drawn to see how many are left, not yet started

    def next_seed() -> int | None:
        return peeked.popleft() if peeked else next(seeds, None)

    def left(k: int) -> bool:
        """Whether at least ``k`` seeds are left to start."""
        while len(peeked) < k and (s := next(seeds, None)) is not None:
            peeked.append(s)
        return len(peeked) >= k

    def top_up() -> None:
        """Keep three episodes queued for every worker process, and 2 * workers held. A third
        means a worker finds its next episode queued even when this process comes back from
        an episode of its own just as the worker finishes its second (otherwise the worker
        waits for that). Near the end of a finite ``seeds``, a worker's third and then second
        episode go to this process instead: otherwise this process can run out of episodes
        while a worker still has several to run."""
        running = sum(isinstance(e, Future) and not e.done() for e in ahead)
        while len(ahead) < LOOKAHEAD * workers:
            per_worker = 3 if left(2 * workers) else 2 if left(workers) else 1
            queue_one = running < per_worker * (workers - 1)
            if not queue_one and len(ahead) >= 2 * workers:
                return
            s = next_seed()
            if s is None:
                return
            if queue_one:
                ahead.append(_submit(pool, s, env_id, spawned))
                running += 1
            else:
                ahead.append(int(s))

    with forking_quietly():
        top_up()  # the first submission starts the workers
    while ahead:
        head = ahead[0]
        if isinstance(head, Future) and not head.done():
            # Step the first episode nobody has started, rather than wait; if there is
            # none, start the next one (up to LOOKAHEAD * workers held), so that this
            # process never waits for a worker that is behind it.
            waiting = next((i for i, e in enumerate(ahead) if isinstance(e, int)), None)
            if waiting is None and len(ahead) < LOOKAHEAD * workers:
                s = next_seed()
                if s is not None:
                    ahead.append(int(s))
                    waiting = len(ahead) - 1
            if waiting is not None:
                ahead[waiting] = run_episode(env, act, ahead[waiting])
                continue
        ahead.popleft()
        if isinstance(head, int):
            head = run_episode(env, act, head)
        elif isinstance(head, Future):
            head = _result(head, env_id, spawned)
        top_up()  # before handing the episode over: the workers keep busy meanwhile
        yield head
