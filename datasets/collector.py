"""Collect episodes from any Gymnasium MuJoCo env into an EpisodeStore, resumable to a target.

The plain path: worker processes step the env (``episodes.py``), and one writer, a thread or
a process of its own, appends their episodes in order through zarr's API. The optional
acceleration layer (``accel/``) may swap in a faster way to simulate or to write, through
one call in :func:`collect`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from wmrobot.datasets import lock
from wmrobot.datasets.accel import accelerate
from wmrobot.datasets.capacity import check_space
from wmrobot.datasets.episodes import (
    can_fork,
    die_with_parent,
    episode_seed,
    episodes_in_order,
    forking_quietly,
    make_env_and_policy,
    only_workers_step,
    pixel_kwargs,
)
from wmrobot.datasets.policies import Policy, PolicySpec
from wmrobot.datasets.spaces import describe_spaces
from wmrobot.datasets.store import EpisodeStore, dataset_exists, episode_row_shapes
from wmrobot.envs import TASKS
from wmrobot.errors import DatasetError
from wmrobot.provenance import git_revision, versions

# Each commit has a fixed cost (a dozen file writes, whatever the number of rows), so by
# default batches are committed by time, not by count: what a crash can lose stays bounded.
FLUSH_SECONDS = 2.0
KEEP_BYTES = 256 * 2**20  # the writer keeps this much of the statistics' columns, at most
WRITER_PROCESS_STEPS = 20_000  # collections this long repay a writer process's start


@dataclass(frozen=True)
class CollectResult:
    path: str
    episodes: int
    transitions: int
    seconds: float


@dataclass(frozen=True)
class Route:
    """How a collection makes its episodes and writes them."""

    episodes: Callable[[Iterator[int]], Iterator[dict[str, Any]]]  # seeds -> episodes, in order
    steps_here: bool  # whether this process steps envs in Python (then a writer takes the GIL)
    store: type[EpisodeStore]  # what the writer creates or opens the dataset with
    simulation: str  # recorded as provenance only: every route gives the same rows


def collect(
    path: str,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    policy: PolicySpec | str = "random",
    episodes: int = 100,
    steps: int | None = None,
    seed: int = 0,
    flush_every: int | None = None,
    workers: int = 1,
    pixels: int | None = None,
    fast: bool | None = None,
    progress: bool = True,
) -> CollectResult:
    """Collect until the dataset at ``path`` holds ``episodes`` episodes, or, when ``steps``
    is given, at least ``steps`` transitions (whole episodes); creates or resumes it.

    ``workers`` processes step environments; one writer commits. Finished episodes are
    committed every ``flush_every`` episodes, or by default about every ``FLUSH_SECONDS``
    seconds, so a crash loses at most that much (plus what is in flight); the dataset is the
    same for any number of workers and any commit grouping. ``pixels=N`` also stores each
    row's N x N camera image (``data/pixels``, uint8), rendered offscreen; a wmrobot goal
    task's frames leave out its goal marker unless ``env_kwargs`` set ``show_goal`` (a pixel
    model then meets the goal only as the planner shows it, in the goal image: 95% against
    82% on the U-maze, docs/BENCHMARKS.md "Pixels"). ``policy`` is a
    :class:`PolicySpec` or a policy name with default parameters.

    After the first episode, a local collection whose estimated size will not fit on its disk
    is refused before anything is written (:func:`~wmrobot.datasets.capacity.check_space`).
    A run that finishes cleanly shrinks the arrays to the committed counts
    (:meth:`EpisodeStore.shrink`), so that plain zarr readers see no capacity.

    ``fast``: the acceleration layer (``wmrobot.datasets.accel``): ``mujoco.rollout`` for
    open-loop policies and direct chunk writes for a local dataset, the same dataset as the
    plain path. ``None`` uses each wherever it applies, ``False`` never, and ``True`` refuses
    in one line where the rollout cannot apply.
    """
    _check_request(episodes, steps, flush_every, workers, pixels)
    policy = PolicySpec(policy) if isinstance(policy, str) else policy
    policy.check()
    env_kwargs = {**(env_kwargs or {}), **pixel_kwargs(pixels)}
    if pixels and env_id in TASKS:  # the goal is the goal image's to show, not the frames'
        env_kwargs.setdefault("show_goal", False)
    env, act = make_env_and_policy(env_id, env_kwargs, policy)  # fails fast on bad input
    store = None
    try:
        route = _plain_route(env, act, env_id, env_kwargs, policy, workers)
        # The one seam with the acceleration layer: without it, the plain route stands.
        route = accelerate(route, fast, env, env_id, env_kwargs, policy, pixels, path, workers)
        spaces = describe_spaces(env.observation_space, env.action_space)
        store = _resumable(path, env_id, env_kwargs, spaces, seed, policy)
        record = {
            "env": {"id": env_id, "kwargs": env_kwargs, "spec": _spec_json(env)},
            "spaces": spaces,
            "collector": {**policy.record(), "seed": seed, "simulation": route.simulation},
        }
        start = time.perf_counter()
        final = _run(
            path, env, store, route, record, episodes, steps, seed, flush_every, workers, progress
        )
    finally:
        env.close()
        if store is not None:
            store.close()
    if final is None:  # the writer did not see every row: read the counts, finish the stats
        with EpisodeStore.open(path, mode="a") as store:
            if any("q01" not in store.attrs["stats"].get(k, {}) for k in store.stat_keys):
                store.finalize_stats()  # also after a crash
            store.shrink()  # a no-op where the writer shrank it
            final = (store.n_episodes, store.n_transitions)
    return CollectResult(path, *final, seconds=time.perf_counter() - start)


def _check_request(
    episodes: int, steps: int | None, flush_every: int | None, workers: int, pixels: int | None
) -> None:
    if episodes <= 0:
        raise DatasetError(f"episodes must be a positive count, got {episodes}")
    if steps is not None and steps <= 0:
        raise DatasetError(f"steps must be a positive count, got {steps}")
    if flush_every is not None and flush_every < 1:
        raise DatasetError(f"flush_every must be a positive count of episodes, got {flush_every}")
    if workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers}")
    if pixels is not None and pixels < 8:
        raise DatasetError(f"pixels={pixels} is too small: give an image size >= 8 (e.g. 64)")


def _plain_route(
    env: gym.Env,
    act: Policy,
    env_id: str,
    env_kwargs: dict[str, Any],
    policy: PolicySpec,
    workers: int,
) -> Route:
    """Step the env in ``workers`` processes (this one's env included) and write through zarr."""
    # Where workers fork, every episode is stepped in one, and this process only writes.
    pooled = only_workers_step(env, env_kwargs, policy, workers)
    episodes = functools.partial(
        episodes_in_order,
        env_id,
        env_kwargs,
        policy,
        workers=workers,
        made=(env, act),
        pooled=pooled,
    )
    return Route(episodes, steps_here=not pooled, store=EpisodeStore, simulation="env.step")


def _resumable(
    path: str,
    env_id: str,
    env_kwargs: dict[str, Any],
    spaces: dict[str, Any],
    seed: int,
    policy: PolicySpec,
) -> EpisodeStore | None:
    """The dataset at ``path`` if there is one, checked to hold this env, spaces, seed and
    policy (resuming anything else would mix two collections); None for a new one."""
    if not dataset_exists(path):
        return None
    store = EpisodeStore.open(path, mode="a")  # refused if another process writes it
    try:
        _check_resumable(store, path, env_id, env_kwargs, spaces, seed, policy)
    except BaseException:
        store.close()
        raise
    return store


def _check_resumable(
    store: EpisodeStore,
    path: str,
    env_id: str,
    env_kwargs: dict[str, Any],
    spaces: dict[str, Any],
    seed: int,
    policy: PolicySpec,
) -> None:
    """Raise unless ``store`` holds this env, spaces, seed and policy."""
    env_record = store.attrs["env"]
    if env_record["id"] != env_id or env_record["kwargs"] != env_kwargs:
        raise DatasetError(
            f"{path!r} holds {env_record['id']} {env_record['kwargs']}, "
            f"not {env_id} {env_kwargs}; collect into a new path"
        )
    recorded = store.attrs["spaces"]
    for key in ("observation", "action"):
        if recorded.get(key) != spaces[key]:
            raise DatasetError(
                f"{path!r} holds {key} space {recorded.get(key)}, but the env now has "
                f"{spaces[key]}; collect into a new path"
            )
    previous = store.attrs["collector"]
    for key, value in {"seed": seed, **policy.record()}.items():
        if previous.get(key) != value:
            raise DatasetError(
                f"{path!r} was collected with {key}={previous.get(key)}, not {value}; "
                f"resume it with the same {key} or collect into a new path"
            )


def _run(
    path: str,
    env: gym.Env,
    store: EpisodeStore | None,
    route: Route,
    record: dict[str, Any],
    episodes: int,
    steps: int | None,
    seed: int,
    flush_every: int | None,
    workers: int,
    progress: bool,
) -> tuple[int, int] | None:
    """Run episodes from where ``store`` stands until the target, handing them to one writer;
    returns (episodes, transitions) where the writer saw every row, else None."""
    done = store.n_episodes if store else 0
    held = store.n_transitions if store else 0
    if (held >= steps) if steps else (done >= episodes):
        return None
    bar = tqdm(
        total=steps or episodes,
        initial=held if steps else done,
        desc="collect",
        unit="step" if steps else "ep",
        disable=None if progress else True,
        leave=False,
    )
    schedule = _CommitSchedule(flush_every, workers, episodes, steps, done, held)
    left = {"steps": steps - held} if steps else {"episodes": episodes - done}
    indices = itertools.count(done) if steps else range(done, episodes)
    stream = route.episodes(episode_seed(seed, index) for index in indices)
    writer = None
    if route.steps_here and _long(env, episodes - done, steps, held) and can_fork():
        # Stepping here and writing in a thread would compete for the GIL; a process writes
        # beside it. Started now, so its imports overlap the first episodes.
        writer = _Writer(path, route.store, bar, count_steps=bool(steps), process=True)
    buffer: list[dict[str, Any]] = []
    try:
        for index, episode in enumerate(stream, start=done):
            if index == done:  # once a run, before anything of it is written
                check_space(path, episode, resuming=store is not None, **left)
            buffer.append(episode)
            held += len(episode["action"]) - 1
            reached = held >= steps if steps else index == episodes - 1
            if writer is None:  # a thread, started after the pool's workers forked
                writer = _Writer(path, route.store, bar, count_steps=bool(steps), process=False)
            if store is None and index == done:  # created by the writer, beside the stepping
                writer.create(**_creation(record, env, episode))
            if schedule.due(index, held, reached, len(buffer)):
                # Emptied first: a Ctrl-C during the hand-over must not hand these over again.
                handed, buffer = buffer, []
                writer.put(handed)
            if reached:
                break
    except KeyboardInterrupt:  # keep the episodes that are finished
        if writer is not None and buffer:
            writer.put(buffer)
        raise
    finally:  # also on an error: episodes handed over are committed; nothing is left open
        stream.close()
        try:
            if writer is not None:
                writer.close()
        finally:
            bar.close()
    return writer.final if writer is not None else None


def _long(env: gym.Env, episodes_left: int, steps: int | None, held: int) -> bool:
    """Whether a collection is long enough to repay starting a writer process."""
    limit = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 1000
    remaining = steps - held if steps else episodes_left * limit
    return remaining >= WRITER_PROCESS_STEPS


def _creation(record: dict[str, Any], env: gym.Env, episode: dict[str, Any]) -> dict[str, Any]:
    """:meth:`EpisodeStore.create`'s arguments for a dataset of episodes like ``episode``."""
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "env": record["env"],
        "spaces": record["spaces"],
        "row_shapes": episode_row_shapes(episode),
        "factors": _factor_record(env, episode),
        "collector": {**record["collector"], "created": created},
    }


class _Writer:
    """Appends (and so commits) batches of episodes in order, away from the collecting loop,
    so that compression and storage overlap with simulation; at most ``depth`` batches wait.

    It runs in a thread, or with ``process=True`` in a process of its own, forked (Linux),
    which does not take the GIL from a process that steps. It creates a new dataset too
    (:meth:`create`), so that the collecting process need not load the storage stack.
    """

    def __init__(
        self,
        path: str,
        store: type[EpisodeStore],
        bar: tqdm,
        count_steps: bool,
        process: bool,
        depth: int = 2,
    ) -> None:
        self.path, self.bar, self.count_steps = path, bar, count_steps
        if process:
            # Forked, never spawned: a spawned process would import the user's script afresh,
            # which fails without a `__main__` guard. Zarr and numcodecs reset their I/O
            # thread, executor and locks in a forked child (os.register_at_fork).
            ctx = mp.get_context("fork")
            self.queue, self.done = ctx.Queue(depth), ctx.Queue()
            args = (path, self.queue, self.done, os.getpid(), store)
            self.worker: Any = ctx.Process(target=_write_batches, args=args, daemon=True)
        else:
            self.queue, self.done = queue.Queue(depth), queue.Queue()
            args = (path, self.queue, self.done, None, store)
            self.worker = threading.Thread(target=_write_batches, args=args, daemon=True)
        with forking_quietly():
            self.worker.start()
        self.error: str | None = None
        self.closed = False
        # (episodes, transitions) once the writer has committed everything and the quantiles
        # too: then the collector need not open the dataset again to learn its counts.
        self.final: tuple[int, int] | None = None

    def _drain(self, block: bool = False) -> None:
        while True:
            try:
                kind, value = self.done.get(block=block, timeout=1.0 if block else None)
            except queue.Empty:
                return
            if kind == "error":
                self.error = value
            elif kind == "committed":
                episodes, transitions, n_episodes, n_steps = value
                self.bar.update(n_steps if self.count_steps else n_episodes)
                self.bar.set_postfix(episodes=episodes, steps=transitions)
            else:  # "closed": the writer is done
                self.closed, self.final = True, value
                return

    def _raise(self) -> None:
        if self.error is not None:
            raise DatasetError(f"writing {self.path!r} failed: {self.error}")
        exitcode = getattr(self.worker, "exitcode", None)  # a process's
        if not self.worker.is_alive() and exitcode not in (0, None):
            # What the queue's feeder thread still holds can never be read: drop it, or
            # this interpreter would wait for it at exit, for ever.
            self.queue.cancel_join_thread()
            raise DatasetError(f"the writer process of {self.path!r} died (exit code {exitcode})")

    def create(self, **kwargs: Any) -> None:
        """Have the writer create the dataset, with :meth:`EpisodeStore.create`'s arguments."""
        self.put(kwargs)

    def put(self, batch: list[dict[str, Any]] | dict[str, Any] | None) -> None:
        while True:
            self._drain()
            self._raise()
            try:
                self.queue.put(batch, timeout=1.0)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every batch handed over is committed; raise the writer's error if any."""
        self.put(None)
        while not self.closed and self.worker.is_alive():
            self._drain(block=True)
        self._drain()
        # Once closed, everything is committed: a process is left to exit on its own, since
        # nobody needs to wait for its interpreter's teardown.
        if isinstance(self.worker, threading.Thread) or not self.closed:
            self.worker.join()
        self._raise()


def _write_batches(
    path: str,
    batches: Any,
    done: Any,
    parent: int | None,
    store_type: type[EpisodeStore] = EpisodeStore,
) -> None:
    """The writer's loop: append each batch in order, report each commit, until ``None``.
    A dict before the first batch holds the arguments that create the dataset."""
    if parent is not None:  # a writer process
        die_with_parent(parent)
    store_type.warm_up(path)  # while the first episodes run, not in a commit's way

    store, error = None, None
    # The statistics' columns of a dataset this writer fills from empty, kept (up to a cap)
    # so that the q01/q99 pass at the end need not read every row back.
    kept: list[dict[str, np.ndarray]] | None = None
    size = 0
    closing = False
    while not closing and (batch := batches.get()) is not None:
        if error is not None:
            continue  # drain, so that the collector never blocks on a failed writer
        try:
            if isinstance(batch, dict):  # created at once, while the next episodes run
                # Provenance is looked up here, not in the collecting process's way.
                record = {
                    **(batch.get("collector") or {}),
                    "versions": versions(),
                    "git_revision": git_revision(),
                }
                store, kept = store_type.create(path, **{**batch, "collector": record}), []
                continue
            while True:  # whatever queued up meanwhile goes into the same commit
                try:
                    more = batches.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch = batch + more
            if store is None:
                store = store_type.open(path, mode="a")
                kept = [] if store.n_rows == 0 else None
            columns = store.append(batch)
        except Exception as e:  # reported to the collecting process, which raises it
            error = " ".join(str(e).split()) or type(e).__name__
            done.put(("error", error))
            continue
        if kept is not None:
            kept.append(columns)
            size += sum(v.nbytes for v in kept[-1].values())
            kept = kept if size <= KEEP_BYTES else None
        n = sum(len(e["action"]) - 1 for e in batch)
        done.put(("committed", (store.n_episodes, store.n_transitions, len(batch), n)))
    final = None
    if error is None and store is not None and kept:
        columns = {k: np.concatenate([part[k] for part in kept], axis=1) for k in store.stat_keys}
        store.finalize_stats(columns, overwrite_input=True)
        final = (store.n_episodes, store.n_transitions)
    if error is None and store is not None:
        store.shrink()  # finished cleanly: plain zarr readers see no capacity
    if store is not None:  # before "closed": the collecting process may open it next
        store.close()
    if parent is not None:  # nor may this process, exiting, hold the collector's lock
        lock.forget_inherited()
    done.put(("closed", final))


class _CommitSchedule:
    """When the collecting loop hands what waits to the writer: every ``flush_every``
    episodes, or by default every ``FLUSH_SECONDS``, and by time also ahead of the end.

    Once the last ``workers`` episodes are running, what waits is committed alongside them,
    so that the closing commit, which nothing overlaps, holds only those; a quarter of a flush
    interval's stepping before that, one more, so that no commit is still running then.
    """

    def __init__(
        self,
        flush_every: int | None,
        workers: int,
        episodes: int,
        steps: int | None,
        done: int,
        held: int,
    ) -> None:
        self.flush_every, self.workers = flush_every, workers
        self.episodes, self.steps, self.done, self.start_held = episodes, steps, done, held
        self.start = self.last = time.perf_counter()
        self.closing = False  # whether the commit before the closing one is handed over
        self.early = False  # whether the one before that is

    def due(self, index: int, held: int, reached: bool, waiting: int) -> bool:
        """Whether to hand over the ``waiting`` episodes now, episode ``index`` just in."""
        now = time.perf_counter()
        if self.flush_every:
            due = waiting >= self.flush_every
        else:
            due = now - self.last >= FLUSH_SECONDS
            if not self.closing and not reached:
                ran = index - self.done + 1
                left = self._episodes_left(index, held, ran)
                left_seconds = left * (now - self.start) / ran
                # The pace is known from the second episode on.
                if not self.early and ran > 1 and left_seconds <= FLUSH_SECONDS / 4:
                    due = self.early = True
                if left <= self.workers:
                    due = self.closing = True
        if due or reached:
            self.last = now
        return due or reached

    def _episodes_left(self, index: int, held: int, ran: int) -> int:
        if not self.steps:
            return self.episodes - 1 - index
        mean = (held - self.start_held) / ran  # from this run's episodes
        return int(np.ceil((self.steps - held) / max(mean, 1.0)))


def _spec_json(env: gym.Env) -> str | None:
    """The env's gymnasium spec as JSON (None for an env whose entry point is a callable)."""
    try:
        return env.spec.to_json() if env.spec is not None else None
    except ValueError:
        return None


def _factor_record(env: gym.Env, episode: dict[str, Any]) -> dict[str, Any] | None:
    """The names (in the order of ``meta/factors``' columns) and ranges of the env's factors
    of variation, for envs whose resets report them."""
    if "factors" not in episode:
        return None
    ranges = getattr(env.unwrapped, "factor_ranges", {})
    return {
        "names": list(episode["factors"]),
        "ranges": {k: list(v) for k, v in ranges.items()},
    }
