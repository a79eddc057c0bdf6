"""Collect episodes from any Gymnasium MuJoCo env into an EpisodeStore, resumable to a target."""

from __future__ import annotations

import datetime as _dt
import itertools
import multiprocessing as mp
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

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
from wmrobot.datasets.fastpath import fast_episodes, unsupported_reason
from wmrobot.datasets.policies import PolicySpec
from wmrobot.datasets.spaces import describe_spaces
from wmrobot.datasets.store import EpisodeStore, dataset_exists, is_local
from wmrobot.errors import DatasetError
from wmrobot.provenance import git_revision, versions


@dataclass(frozen=True)
class CollectResult:
    path: str
    episodes: int
    transitions: int
    seconds: float


def _spec_json(env: gym.Env) -> str | None:
    """The env's gymnasium spec as JSON (None for an env whose entry point is a callable)."""
    try:
        return env.spec.to_json() if env.spec is not None else None
    except ValueError:
        return None


def _row_shapes(episode: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        k: (v.shape[1:], str(v.dtype))
        for k, v in episode.items()
        if isinstance(v, np.ndarray) and v.ndim >= 1
    }


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


# Each commit has a fixed cost (a dozen file writes, whatever the number of rows), so by
# default batches are committed by time, not by count: what a crash can lose stays bounded.
FLUSH_SECONDS = 2.0
KEEP_BYTES = 256 * 2**20  # the writer keeps this much of the statistics' columns, at most
WRITER_PROCESS_STEPS = 20_000  # about two seconds of stepping: a process start is worth it


class _Writer:
    """Appends (and so commits) batches of episodes in order, away from the collecting loop,
    so that compression and storage overlap with simulation; at most ``depth`` batches wait.

    It runs in a thread, or with ``process=True`` in a process of its own, forked (Linux):
    where this process steps the env too (one worker, or beside spawned workers), a writing
    thread would take the GIL from stepping, while a process writes beside it. A new dataset
    is created by the writer too (:meth:`create`, before the first batch), so that with a
    writer process the collecting process need not load the storage stack at all.
    """

    def __init__(self, path: str, bar: tqdm, count_steps: bool, process: bool, depth: int = 2):
        self.path, self.bar, self.count_steps = path, bar, count_steps
        if process:
            # Forked, never spawned: a spawned process would import the user's script afresh,
            # which fails without a `__main__` guard. Zarr and numcodecs reset their I/O
            # thread, executor and locks in a forked child (os.register_at_fork).
            ctx = mp.get_context("fork")
            self.queue, self.done = ctx.Queue(depth), ctx.Queue()
            args = (path, self.queue, self.done, os.getpid())
            self.worker: Any = ctx.Process(target=_write_batches, args=args, daemon=True)
        else:
            self.queue, self.done = queue.Queue(depth), queue.Queue()
            args = (path, self.queue, self.done, None)
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
        # Once closed, everything is committed: a process is left to exit on its own (its
        # interpreter's teardown takes a few hundred milliseconds nobody needs to wait for).
        if isinstance(self.worker, threading.Thread) or not self.closed:
            self.worker.join()
        self._raise()


def _write_batches(path: str, batches: Any, done: Any, parent: int | None) -> None:
    """The writer's loop: append each batch in order, report each commit, until ``None``.
    A dict before the first batch holds the arguments that create the dataset."""
    if parent is not None:  # a writer process
        die_with_parent(parent)
    # Loaded now, while the first episodes run, not in a commit's way: what writes the
    # dataset, numcodecs (Blosc) for a local one, which is written without zarr
    # (datasets/chunks.py), zarr for one at a URL.
    import numcodecs  # noqa: F401

    if not is_local(path):
        import zarr  # noqa: F401

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
                # provenance looked up here, not in the collecting process's way
                record = {
                    **(batch.get("collector") or {}),
                    "versions": versions(),
                    "git_revision": git_revision(),
                }
                store, kept = EpisodeStore.create(path, **{**batch, "collector": record}), []
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
                store = EpisodeStore.open(path, mode="a")
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
    done.put(("closed", final))


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
    same for any number of workers and any commit grouping. ``pixels=N``
    also stores each row's N x N camera image (``data/pixels``, uint8), rendered offscreen.
    ``policy`` is a :class:`PolicySpec` or a policy name with default parameters.

    ``fast``: simulate open-loop policies (random actions) in batches with ``mujoco.rollout``
    on ``workers`` threads and compute observations from the states (the same rows as
    stepping the env); ``None`` uses it wherever it applies, ``False`` always steps the env.
    """
    if episodes <= 0:
        raise DatasetError(f"episodes must be a positive count, got {episodes}")
    if steps is not None and steps <= 0:
        raise DatasetError(f"steps must be a positive count, got {steps}")
    if flush_every is not None and flush_every < 1:
        raise DatasetError(f"flush_every must be a positive count of episodes, got {flush_every}")
    if workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers}")
    policy = PolicySpec(policy) if isinstance(policy, str) else policy
    policy.check()
    if pixels is not None and pixels < 8:
        raise DatasetError(f"pixels={pixels} is too small: give an image size >= 8 (e.g. 64)")
    env_kwargs = {**(env_kwargs or {}), **pixel_kwargs(pixels)}
    env, act = make_env_and_policy(env_id, env_kwargs, policy)  # fails fast on bad input
    reason = unsupported_reason(env, policy, pixels)
    if fast and reason:
        env.close()
        raise DatasetError(f"fast=True cannot collect this: {reason}; collect with fast=False")
    fast = reason is None if fast is None else fast
    spaces = describe_spaces(env.observation_space, env.action_space)
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
        recorded, current = store.attrs["spaces"], spaces
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
    # With worker processes that fork, every episode is stepped in one, and this process
    # only receives them and writes (see below).
    pooled = not fast and only_workers_step(env, env_kwargs, policy, workers)
    stream = (
        fast_episodes(env_id, env_kwargs, policy, seeds, threads=workers)
        if fast
        else episodes_in_order(env_id, env_kwargs, policy, seeds, workers, (env, act), pooled)
    )
    reached = held >= steps if steps else done >= episodes
    last = time.perf_counter()
    closing = False  # whether the commit before the closing one is handed over
    early = False  # whether the one before that is
    start_held = held
    created = store is not None
    writer: _Writer | None = None
    # Stepping in this process and writing in a thread compete for the GIL; on collections
    # long enough to repay its start-up, a writer process avoids that. Where this process
    # does not step (the fast path simulates in mujoco.rollout, which releases the GIL, and
    # pooled workers step in processes of their own), a thread writes: it takes the episodes
    # as they come, with no second hand-over to another process.
    horizon = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 1000
    remaining = steps - held if steps else (episodes - done) * horizon
    steps_here = not fast and not pooled
    own_process = steps_here and remaining >= WRITER_PROCESS_STEPS and can_fork()
    if own_process and not reached:  # started now, its imports overlap the first episodes
        writer = _Writer(path, bar, count_steps=bool(steps), process=True)
    try:
        for index, episode in enumerate(stream if not reached else (), start=done):
            buffer.append(episode)
            held += len(episode["action"]) - 1
            reached = held >= steps if steps else index == episodes - 1
            if writer is None:  # a thread: started only now, after the pool's workers forked
                writer = _Writer(path, bar, count_steps=bool(steps), process=False)
            if not created:  # by the writer, which loads zarr there, not here
                created = True
                writer.create(
                    env=env_record,
                    spaces=spaces,
                    row_shapes=_row_shapes(buffer[0]),
                    factors=_factor_record(env, buffer[0]),
                    collector={
                        **policy.record(),
                        "seed": seed,
                        # Provenance only: both give the same rows.
                        "simulation": "mujoco.rollout" if fast else "env.step",
                        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    },
                )
            now = time.perf_counter()
            due = len(buffer) >= flush_every if flush_every else now - last >= FLUSH_SECONDS
            if not flush_every and not closing and not reached:
                # Once the last episodes are running, commit what waits, alongside them, so
                # that the closing commit, which nothing overlaps, holds only those.
                if steps:  # episodes left, from the mean length of this run's episodes
                    mean = (held - start_held) / (index - done + 1)
                    left = int(np.ceil((steps - held) / max(mean, 1.0)))
                else:
                    left = episodes - 1 - index
                # And once before, when a quarter of a flush interval's stepping is left (at
                # this run's pace, known from its second episode on): what waits then would
                # otherwise go into that commit, and the writer would still be at it after
                # the last episode. Each commit costs a few milliseconds whatever it holds,
                # so this is the only extra one.
                left_seconds = left * (now - start) / (index - done + 1)
                if not early and index > done and left_seconds <= FLUSH_SECONDS / 4:
                    due = early = True
                if left <= workers:
                    due = closing = True
            if due or reached:
                last = now
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
            env.close()
    if writer is not None and writer.final is not None:
        episodes, transitions = writer.final
    else:
        if store is None or writer is not None:  # this handle has not seen the writer's commits
            store = EpisodeStore.open(path, mode="a")
        stats = store.attrs["stats"]
        if any("q01" not in stats.get(k, {}) for k in store.stat_keys):  # also after a crash
            store.finalize_stats()
        episodes, transitions = store.n_episodes, store.n_transitions
    return CollectResult(
        path=path,
        episodes=episodes,
        transitions=transitions,
        seconds=time.perf_counter() - start,
    )
