"""Collection and sampling throughput, every figure measured side by side in one run.

On HalfCheetah-v5, state only, uniform random actions (the same seeds and actions everywhere):
the collector with 1 and 2 workers ÷ the bare gymnasium loop; ÷ Minari's DataCollector; the
open-loop fast path (mujoco.rollout) ÷ the 2-core physics limit; pixel collection ÷ the bare
render loop. The bare loop runs before and after every measured run, and each ratio divides by
the mean of those two. Then the CPU cost of a commit, as the store writes it (chunk files and
array metadata written directly) and through zarr's array writes and resizes, and the sampler's
windows/s and the fraction of a training step spent waiting for data, at the default training
settings. Run:

    python benchmarks/collect_throughput.py [--episodes 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.episodes import episode_seed, pixel_kwargs
from wmrobot.datasets.policies import RandomPolicy

ENV = "HalfCheetah-v5"


def bare_episodes(
    env: gym.Env, policy: RandomPolicy, indices: Iterable[int], seed: int, render: bool = False
) -> int:
    """The reference: gymnasium's loop with the collector's actions, nothing stored, over
    episodes ``indices`` (``render``: also render a frame after every reset and step).
    Returns the steps taken."""
    steps = 0
    for index in indices:
        s = episode_seed(seed, index)
        env.reset(seed=s)
        policy.reset(np.random.default_rng(s))
        if render:
            env.render()
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(policy.act())
            if render:
                env.render()
            steps += 1
            done = terminated or truncated
    return steps


def bare_loop(episodes: int, seed: int, render: int | None = None, **kwargs: object) -> int:
    """:func:`bare_episodes` over episodes 0, 1, ... in an env of its own (``render=N``: N x N
    frames)."""
    env = gym.make(ENV, **pixel_kwargs(render), **kwargs)
    steps = bare_episodes(env, RandomPolicy(env.action_space), range(episodes), seed, bool(render))
    env.close()
    return steps


CPU: dict[str, list[float]] = {}  # core-seconds per measured row, round by round


def _bare_part(go: mp.Event, out: mp.Queue, tasks: mp.Queue, seed: int) -> None:
    """A bare loop over the episode indices it takes from ``tasks``, until a None."""
    env = gym.make(ENV)  # made before the clock starts, as a collector's process has made one
    policy = RandomPolicy(env.action_space)
    out.put(None)  # started and imported: only the stepping is timed
    go.wait()
    cpu = time.process_time()
    steps = bare_episodes(env, policy, iter(tasks.get, None), seed)
    out.put((steps, time.perf_counter(), time.process_time() - cpu))


def when_ready(target: Callable[..., None], *calls: tuple) -> tuple[float, list]:
    """Start one process per argument tuple in ``calls``, running ``target(go, out, *args)``;
    once each has put ``None`` on ``out`` (started and imported), set ``go``. Returns the
    time ``go`` was set and what each then put on ``out``."""
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(go, out, *args)) for args in calls]
    for p in procs:
        p.start()
    for _ in procs:
        out.get()  # each is ready
    start = time.perf_counter()
    go.set()
    done = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return start, done


def parallel_bare_loops(episodes: int, seed: int, processes: int = 2) -> float:
    """Env steps/s of ``processes`` bare loops at once, in as many processes, taking the
    episodes from one shared queue as a collector's workers do (so that none waits on a
    straggler that a collector would not): what that many processes can step on this machine,
    without storing anything, the ceiling of any stepping collector with that many workers."""
    tasks = mp.get_context("spawn").Queue()
    for index in [*range(episodes), *[None] * processes]:
        tasks.put(index)
    start, done = when_ready(_bare_part, *[(tasks, seed)] * processes)
    CPU.setdefault(f"{processes} bare loops in parallel", []).append(sum(c for _, _, c in done))
    return sum(n for n, _, _ in done) / (max(end for _, end, _ in done) - start)


def _collect_part(go: mp.Event, out: mp.Queue, path: str, kwargs: dict, stepping: bool) -> None:
    """One collection in a process of its own, as a user's ``wmrobot collect`` runs it: its
    imports and a first ``gym.make`` are done before ``go``, as the bare loop's are.
    ``stepping``: the env is stepped, as for a policy that reacts to observations, with the
    rest of the acceleration layer (its chunk writer) as the default collection uses it."""
    if stepping:  # no observer: the layer's rollout does not apply
        from wmrobot.datasets.accel import rollout

        rollout.OBSERVERS.clear()
    gym.make(ENV).close()
    out.put(None)
    go.wait()
    cpu, start = cpu_seconds(), time.perf_counter()
    result = collect(path, ENV, **kwargs)
    seconds = time.perf_counter() - start
    for child in mp.active_children():  # a writer process exits on its own: reap it
        child.join(10)
    out.put((result.transitions, seconds, cpu_seconds() - cpu))


def collect_in_process(
    path: Path, stepping: bool = False, **kwargs: object
) -> tuple[int, float, float]:
    """``collect(path, ENV, **kwargs)`` afresh at ``path``, in a process of its own
    (:func:`_collect_part`): the transitions, seconds and core-seconds it took."""
    shutil.rmtree(path, ignore_errors=True)
    args = (str(path), {"progress": False, **kwargs}, stepping)
    _, [done] = when_ready(_collect_part, args)
    return done


def _mj_step_rate(seconds: float, out: mp.Queue) -> None:
    env = gym.make(ENV)
    env.reset(seed=0)
    model, data = env.unwrapped.model, env.unwrapped.data
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mujoco.mj_step(model, data, nstep=1000)
        n += 1000
    out.put(n / (time.perf_counter() - start) / env.unwrapped.frame_skip)


def physics_limit(cores: int, seconds: float = 3.0) -> float:
    """Raw ``mj_step`` calls per second divided by the frame skip (env steps/s), summed over
    ``cores`` processes stepping at the same time."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_mj_step_rate, args=(seconds, out)) for _ in range(cores)]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return float(sum(rates))


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (workers, writer)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], object], name: str | None = None) -> tuple[float, object]:
    """Wall time of ``fn()`` (and, under ``name``, the core-seconds it used, in ``CPU``)."""
    cpu, start = cpu_seconds(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    if name is not None:
        CPU.setdefault(name, []).append(cpu_seconds() - cpu)
    return wall, out


def commit_cost(episodes: int = 60, per_commit: int = 10, rounds: int = 5) -> tuple[float, float]:
    """CPU milliseconds per episode that commits of ``per_commit`` HalfCheetah episodes take,
    written by the acceleration layer's DirectStore (chunk files and array metadata written
    directly) and by the plain EpisodeStore (zarr's own array writes and resizes), alternating
    round by round; medians."""
    from wmrobot.datasets.accel.store import DirectStore
    from wmrobot.datasets.episodes import run_episode
    from wmrobot.datasets.store import episode_row_shapes

    env = gym.make(ENV)
    policy = RandomPolicy(env.action_space)
    made = [run_episode(env, policy, episode_seed(0, i)) for i in range(2 * per_commit)]
    env.close()
    tmp = Path(tempfile.mkdtemp(prefix="wmrobot-bench-"))
    cpu: dict[bool, list[float]] = {True: [], False: []}
    try:
        for r in range(rounds):
            for ours in (True, False):
                path = tmp / f"{r}-{ours}.zarr"
                store = (DirectStore if ours else EpisodeStore).create(
                    path,
                    env={"id": ENV, "kwargs": {}},
                    spaces={},
                    row_shapes=episode_row_shapes(made[0]),
                    collector={},
                )
                start = time.process_time()
                for i in range(episodes // per_commit):
                    store.append(made[(i % 2) * per_commit : (i % 2 + 1) * per_commit])
                cpu[ours].append((time.process_time() - start) * 1000 / episodes)
                shutil.rmtree(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return float(np.median(cpu[True])), float(np.median(cpu[False]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60, help="1000-step episodes per run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each measuring all")
    parser.add_argument("--pixel-episodes", type=int, default=2, help="episodes with pixels")
    parser.add_argument("--pixel-steps", type=int, default=200, help="their length")
    parser.add_argument("--size", type=int, default=64, help="pixel frame size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wmrobot-bench-"))

    def ours(name: str, **kwargs: object) -> tuple[float, int]:
        """Each collection runs in a fresh process, so none inherits another's state (zarr
        loaded, its threads started) and each starts as a user's would."""
        path = tmp / (re.sub(r"\W+", "_", name) + ".zarr")
        n, t, cpu = collect_in_process(
            path, **{"episodes": args.episodes, "seed": args.seed, **kwargs}
        )
        CPU.setdefault(name, []).append(cpu)
        return t, n

    configs = {
        "1 worker (env.step)": {"workers": 1, "stepping": True},
        "2 workers (env.step)": {"workers": 2, "stepping": True},
        "2 workers (default: fast path)": {"workers": 2},
    }
    try:
        from peers import minari_collect
    except ImportError as e:  # minari[create] (jax) is a dev extra
        print(f"(Minari's DataCollector not measured: {e})")
        minari_collect = None
    try:
        # Rounds measure everything side by side, so a slow spell on a shared machine shows
        # up as spread across rounds instead of skewing one ratio. Within a round, the bare
        # loop runs before and after each measured run, and the mean of those two is that
        # run's reference: on a virtual machine whose speed wanders by tens of per cent from
        # one minute to the next, a reference measured minutes away says little.
        rates: dict[str, list[float]] = {"bare gymnasium loop": []}
        refs: dict[str, list[float]] = {}  # per measured row: the mean of its bare loops
        measured: dict[str, Callable[[], float]] = {}
        for name, kwargs in configs.items():
            measured[name] = lambda name=name, kwargs=kwargs: rate_of(*ours(name, **kwargs))
        measured["2 bare loops in parallel"] = lambda: parallel_bare_loops(args.episodes, args.seed)
        if minari_collect is not None:

            def minari_rate() -> float:
                steps, seconds = minari_collect(ENV, args.episodes, args.seed)
                return rate_of(seconds, steps)

            measured["Minari DataCollector"] = minari_rate
        for name in measured:
            rates[name], refs[name] = [], []
        limits: list[tuple[float, float]] = []  # (1 core, 2 cores), round by round
        moves: list[float] = []  # |change| of the bare loop's rate between adjacent runs

        def bare() -> float:
            t, n = timed(lambda: bare_loop(args.episodes, args.seed), "bare gymnasium loop")
            assert n == args.episodes * 1000, n
            rates["bare gymnasium loop"].append(n / t)
            return n / t

        def rate_of(seconds: float, steps: int) -> float:
            assert steps == args.episodes * 1000, steps  # the same episodes everywhere
            return steps / seconds

        for _ in range(args.rounds):
            # The cores' worth this machine gives two busy processes in this round: 2.0 on
            # two independent cores, less where the host shares them out (a virtual
            # machine's cores can be), and no 2-process ratio can exceed it.
            limits.append((physics_limit(1, 1.5), physics_limit(2, 1.5)))
            before = bare()
            for name, run in measured.items():
                rate = run()
                after = bare()
                rates[name].append(rate)
                refs[name].append((before + after) / 2)
                moves.append(abs(after / before - 1))
                before = after

        short = {"max_episode_steps": args.pixel_steps}
        t_render, frames = timed(
            lambda: bare_loop(args.pixel_episodes, args.seed, args.size, **short)
        )
        t_pix, n_pix = ours(
            "pixels", env_kwargs=short, pixels=args.size, episodes=args.pixel_episodes
        )
        assert n_pix == frames, (n_pix, frames)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def relative(name: str) -> np.ndarray:
        """Round by round, ``name``'s rate ÷ the bare loop's around it (the bare loop's: 1)."""
        if name not in refs:
            return np.ones(args.rounds)
        return np.array(rates[name]) / np.array(refs[name])

    def ratio(name: str, reference: str) -> str:
        if reference not in rates:
            return "-"
        r = relative(name) / relative(reference)
        return f"{np.median(r):.2f} ({r.min():.2f}-{r.max():.2f})"

    print(
        f"{ENV}, {args.episodes} episodes x 1000 steps, uniform random actions, state only; "
        f"median (min-max) of {args.rounds} rounds"
    )
    limit1, limit2 = np.median(limits, axis=0)
    cores = np.array([two / one for one, two in limits])
    print(
        f"physics limit: {limit1:,.0f} env steps/s on 1 core, {limit2:,.0f} on 2 cores: "
        f"{np.median(cores):.2f} cores' worth (rounds: {', '.join(f'{c:.2f}' for c in cores)}; "
        "2.00 on independent cores)"
    )
    print(
        "the bare loop's rate changed between adjacent runs by "
        f"{np.median(moves):.0%} (median; at most {np.max(moves):.0%}): each ratio divides by "
        "the mean of the bare loops run just before and just after"
    )
    print(
        f"{'':32}{'steps/s':>9}{'÷ bare loop':>20}{'÷ Minari':>20}{'÷ 2-core limit':>16}"
        f"{'core-s ÷ bare':>15}"
    )
    bare_cpu = np.median(CPU["bare gymnasium loop"])
    for name, values in rates.items():
        if values:
            cpu = f"{np.median(CPU[name]) / bare_cpu:.2f}" if name in CPU else "-"
            print(
                f"{name:32}{np.median(values):>9,.0f}{ratio(name, 'bare gymnasium loop'):>20}"
                f"{ratio(name, 'Minari DataCollector'):>20}{np.median(values) / limit2:>16.2f}"
                f"{cpu:>15}"
            )
    print(
        "core-s: CPU time of the process and its workers and writer (for the parallel bare "
        "loops, of their stepping alone; above 1.00 there, it is what sharing the machine's "
        "cores costs). 1.6x the bare loop on 2 cores leaves at most 2 / 1.6 = 1.25x its "
        "core-seconds."
    )
    two, ceiling = relative("2 workers (env.step)"), relative("2 bare loops in parallel")
    print(
        "2 workers (env.step) ÷ bare loop, round by round, with (in brackets) 2 bare loops in "
        "parallel ÷ bare loop, the most two stepping processes reached in that round: "
        + ", ".join(f"{r:.2f} ({c:.2f})" for r, c in zip(two, ceiling, strict=True))
    )
    pix, render = n_pix / t_pix, frames / t_render
    print(
        f"pixels {args.size}x{args.size}, {args.pixel_episodes} x {args.pixel_steps} steps, "
        f"1 worker: {pix:,.1f} steps/s ÷ bare render loop {render:,.1f} = {pix / render:.2f}"
    )

    ours_ms, plain_ms = commit_cost()
    print(
        f"commits of 10 episodes: {ours_ms:.2f} CPU ms per episode writing chunks and metadata "
        f"directly, {plain_ms:.2f} through zarr's array writes and resizes: "
        f"{plain_ms / ours_ms:.2f}x"
    )

    try:
        from sampler_throughput import report
    except ImportError as e:
        print(f"(sampler not measured: {e})")
        return
    tmp = Path(tempfile.mkdtemp(prefix="wmrobot-bench-"))
    try:
        data = str(tmp / "maze.zarr")
        collect(data, "wmrobot/PointMaze-v0", episodes=200, seed=0, progress=False)
        print("sampler on PointMaze-v0: ", end="")
        report(data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    main()
