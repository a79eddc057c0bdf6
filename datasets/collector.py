"""Collect episodes from any Gymnasium MuJoCo env into an EpisodeStore, resumable to a target."""

from __future__ import annotations

import datetime as _dt
import itertools
import multiprocessing as mp
import os
import platform
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from wmrobot.datasets.fastpath import fast_episodes, unsupported_reason
from wmrobot.datasets.policies import Policy, PolicySpec, RandomPolicy, make_policy  # noqa: F401
from wmrobot.datasets.store import EpisodeStore, dataset_exists
from wmrobot.envs import has_physics, make_env
from wmrobot.envs.physics import physics_reader
from wmrobot.errors import DatasetError


@dataclass(frozen=True)
class CollectResult:
    path: str
    episodes: int
    transitions: int
    seconds: float


def versions() -> dict[str, str]:
    """Versions of the packages whose behaviour a dataset or checkpoint depends on."""
    out = {"python": platform.python_version()}
    for name in ("wmrobot", "mujoco", "gymnasium", "zarr", "numpy", "torch", "stable-baselines3"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def episode_seed(seed: int, index: int) -> int:
    """Episode ``index``'s reset seed: a function of the run seed and the index alone, so a
    resumed collection draws exactly what an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def _obs_rows(obs_list: list[Any]) -> dict[str, np.ndarray]:
    if isinstance(obs_list[0], dict):
        return {f"obs/{k}": np.stack([o[k] for o in obs_list]) for k in obs_list[0]}
    return {"obs": np.stack(obs_list)}


def run_episode(env: gym.Env, policy: Policy, seed: int) -> dict[str, Any]:
    """One episode as T+1 rows: the final observation is kept, its action is NaN, reward 0."""
    base = env.unwrapped
    obs, _ = env.reset(seed=seed)
    policy.reset(np.random.default_rng(seed))
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    read_physics = physics_reader(env) if has_physics(env) else None
    physics = [read_physics()] if read_physics else None
    frames = [env.render()] if env.render_mode == "rgb_array" else None
    success = False
    while True:
        action = np.asarray(policy.act(obs), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        if read_physics is not None:
            physics.append(read_physics())
        if frames is not None:
            frames.append(env.render())
        success = success or bool(info.get("is_success", False))
        if terminated or truncated:
            break
    nan_action = np.full_like(actions[0], np.nan)
    ep = {
        **_obs_rows(observations),
        "action": np.stack([*actions, nan_action]),
        "reward": np.asarray([*rewards, 0.0], dtype=np.float32),
        "terminated": np.asarray([*terms, False]),
        "truncated": np.asarray([*truncs, False]),
        "seed": seed,
        "return": float(np.sum(rewards)),
        "success": success,
    }
    if physics is not None:
        ep["physics"] = np.stack(physics)
    if frames is not None:
        ep["pixels"] = np.stack(frames).astype(np.uint8)  # (T+1, H, W, C)
    if hasattr(base, "goal_observation") and isinstance(obs, dict):
        goals = np.stack([o["desired_goal"] for o in observations])
        ep["goal"] = base.goal_observation(goals).astype(np.float32)
    return ep


_WORKER: dict[str, Any] = {}


def _worker_init(env_id: str, env_kwargs: dict[str, Any], policy: PolicySpec, parent: int) -> None:
    _die_with_parent(parent)
    _WORKER["env"], _WORKER["policy"] = _make_env_and_policy(env_id, env_kwargs, policy)


def _die_with_parent(parent: int) -> None:
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


def _worker_episode(seed: int) -> dict[str, Any]:
    return run_episode(_WORKER["env"], _WORKER["policy"], seed)


def _make_env_and_policy(
    env_id: str, env_kwargs: dict[str, Any], policy: PolicySpec
) -> tuple[gym.Env, Policy]:
    env = make_env(env_id, env_kwargs)
    try:
        return env, make_policy(policy, env)
    except BaseException:
        env.close()
        raise


def episodes_in_order(
    env_id: str,
    env_kwargs: dict[str, Any],
    policy: PolicySpec,
    seeds: Iterable[int],
    workers: int = 1,
) -> Iterator[dict[str, Any]]:
    """Run one episode per seed and yield them in the order of ``seeds``.

    With ``workers > 1`` the episodes run in that many worker processes and come back in
    order, so the result does not depend on the number of workers. ``seeds`` may be endless:
    only ``2 * workers`` episodes run ahead of the consumer.
    """
    seeds = iter(seeds)
    if workers == 1:
        env, act = _make_env_and_policy(env_id, env_kwargs, policy)
        try:
            for s in seeds:
                yield run_episode(env, act, s)
        finally:
            env.close()
        return
    ctx = mp.get_context("spawn")  # fork is unsafe with threaded libraries (torch, MuJoCo GL)
    # A worker that fails to start breaks this pool (BrokenProcessPool) instead of being
    # restarted for ever, as multiprocessing.Pool would.
    init = (env_id, env_kwargs, policy, os.getpid())
    pool = ProcessPoolExecutor(workers, ctx, _worker_init, init)
    try:
        ahead = deque(pool.submit(_worker_episode, s) for s in itertools.islice(seeds, 2 * workers))
        while ahead:
            try:
                episode = ahead.popleft().result()
            except BrokenProcessPool:
                raise DatasetError(
                    f"collector worker processes for {env_id!r} died or could not start; an env "
                    f"registered in a script must be registered at import time (not under "
                    f"`if __name__ == '__main__'`), or collect with workers=1"
                ) from None
            following = next(seeds, None)
            if following is not None:
                ahead.append(pool.submit(_worker_episode, following))
            yield episode
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _spec_json(env: gym.Env) -> str | None:
    """The env's gymnasium spec as JSON (None for an env whose entry point is a callable)."""
    try:
        return env.spec.to_json() if env.spec is not None else None
    except ValueError:
        return None


def _spaces(env: gym.Env) -> dict[str, Any]:
    return {
        "observation": repr(env.observation_space),
        "action": repr(env.action_space),
        "action_low": env.action_space.low.tolist(),
        "action_high": env.action_space.high.tolist(),
    }


def _row_shapes(episode: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        k: (v.shape[1:], str(v.dtype))
        for k, v in episode.items()
        if isinstance(v, np.ndarray) and v.ndim >= 1
    }


class _BackgroundWriter:
    """Appends (and so commits) batches of episodes in order in a thread of its own, so that
    compression and storage overlap with simulation; at most ``depth`` batches wait."""

    def __init__(self, store: EpisodeStore, bar: tqdm, count_steps: bool, depth: int = 2):
        self.store, self.bar, self.count_steps = store, bar, count_steps
        self.queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="wmrobot-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (batch := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain, so that put() never blocks on a dead writer
            try:
                self.store.append(batch)
            except BaseException as e:  # re-raised in the collecting thread
                self.error = e
                continue
            n = sum(len(e["action"]) - 1 for e in batch) if self.count_steps else len(batch)
            self.bar.update(n)
            self.bar.set_postfix(episodes=self.store.n_episodes, steps=self.store.n_transitions)

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, batch: list[dict[str, Any]]) -> None:
        self._raise()
        self.queue.put(batch)

    def close(self) -> None:
        """Wait until every batch handed over is committed; raise the writer's error if any."""
        self.queue.put(None)
        self.thread.join()
        self._raise()


def collect(
    path: str,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    policy: PolicySpec | str = "random",
    episodes: int = 100,
    steps: int | None = None,
    seed: int = 0,
    flush_every: int = 10,
    workers: int = 1,
    pixels: int | None = None,
    fast: bool | None = None,
    progress: bool = True,
) -> CollectResult:
    """Collect until the dataset at ``path`` holds ``episodes`` episodes, or, when ``steps``
    is given, at least ``steps`` transitions (whole episodes); creates or resumes it.

    ``workers`` processes step environments; this process alone writes. Finished episodes
    are committed every ``flush_every`` episodes, so a crash loses at most that many (plus
    those in flight), and the dataset is the same for any number of workers. ``pixels=N``
    also stores each row's N x N camera image (``data/pixels``, uint8), rendered offscreen.
    ``policy`` is a :class:`PolicySpec` or a policy name with default parameters.

    ``fast``: simulate open-loop policies (random actions) in batches with ``mujoco.rollout``
    on ``workers`` threads and compute observations from the states (the same rows as
    stepping the env); ``None`` uses it wherever it applies, ``False`` always steps the env.
    """
    import time

    if episodes <= 0:
        raise DatasetError(f"episodes must be a positive count, got {episodes}")
    if steps is not None and steps <= 0:
        raise DatasetError(f"steps must be a positive count, got {steps}")
    if workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers}")
    policy = PolicySpec(policy) if isinstance(policy, str) else policy
    policy.check()
    if pixels is not None and pixels < 8:
        raise DatasetError(f"pixels={pixels} is too small: give an image size >= 8 (e.g. 64)")
    env_kwargs = {**(env_kwargs or {}), **pixel_kwargs(pixels)}
    env, _ = _make_env_and_policy(env_id, env_kwargs, policy)  # fails fast on bad input
    reason = unsupported_reason(env, policy, pixels)
    if fast and reason:
        env.close()
        raise DatasetError(f"fast=True cannot collect this: {reason}; collect with fast=False")
    fast = reason is None if fast is None else fast
    env_record = {
        "id": env_id,
        "kwargs": env_kwargs,
        "spec": _spec_json(env),
    }

    store = None
    if dataset_exists(path):
        store = EpisodeStore.open(path, mode="a")
        if store.attrs["env"]["id"] != env_id or store.attrs["env"]["kwargs"] != env_kwargs:
            raise DatasetError(
                f"{path!r} holds {store.attrs['env']['id']} {store.attrs['env']['kwargs']}, "
                f"not {env_id} {env_kwargs}; collect into a new path"
            )
        recorded, current = store.attrs["spaces"], _spaces(env)
        for key in ("observation", "action"):
            if recorded.get(key) != current[key]:
                raise DatasetError(
                    f"{path!r} holds {key} space {recorded.get(key)}, but the env now has "
                    f"{current[key]}; collect into a new path"
                )
        previous = store.attrs["collector"]
        asked = {"seed": seed, **policy.record()}
        for key, value in asked.items():
            if previous.get(key) != value:
                raise DatasetError(
                    f"{path!r} was collected with {key}={previous.get(key)}, not {value}; "
                    f"resume it with the same {key} or collect into a new path"
                )
    start = time.perf_counter()
    done = store.n_episodes if store else 0
    held = store.n_transitions if store else 0
    buffer: list[dict[str, Any]] = []
    bar = tqdm(
        total=steps or episodes,
        initial=held if steps else done,
        desc="collect",
        unit="step" if steps else "ep",
        disable=None if progress else True,
        leave=False,
    )
    indices = itertools.count(done) if steps else range(done, episodes)
    seeds = (episode_seed(seed, index) for index in indices)
    stream = (
        fast_episodes(env_id, env_kwargs, policy, seeds, threads=workers)
        if fast
        else episodes_in_order(env_id, env_kwargs, policy, seeds, workers)
    )
    reached = held >= steps if steps else done >= episodes
    writer: _BackgroundWriter | None = None
    try:
        for index, episode in enumerate(stream if not reached else (), start=done):
            buffer.append(episode)
            held += len(episode["action"]) - 1
            reached = held >= steps if steps else index == episodes - 1
            if store is None:
                store = EpisodeStore.create(
                    path,
                    env=env_record,
                    spaces=_spaces(env),
                    row_shapes=_row_shapes(buffer[0]),
                    collector={
                        **policy.record(),
                        "seed": seed,
                        # Provenance only: both give the same rows.
                        "simulation": "mujoco.rollout" if fast else "env.step",
                        "versions": versions(),
                        "git_revision": git_revision(),
                        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    },
                )
            if writer is None:
                writer = _BackgroundWriter(store, bar, count_steps=bool(steps))
            if len(buffer) >= flush_every or reached:
                writer.put(buffer)
                buffer = []
            if reached:
                break
    finally:  # also on an error: episodes handed over are committed; nothing is left open
        stream.close()
        try:
            if writer is not None:
                writer.close()
        finally:
            bar.close()
            env.close()
    assert store is not None
    stats = store.attrs["stats"]
    if any("q01" not in stats.get(k, {}) for k in store.stat_keys):  # also after a crash
        store.finalize_stats()
    return CollectResult(
        path=path,
        episodes=store.n_episodes,
        transitions=store.n_transitions,
        seconds=time.perf_counter() - start,
    )
