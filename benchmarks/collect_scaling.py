"""How collection scales with workers: the collector with N workers ÷ N bare loops in parallel.

On HalfCheetah-v5, state only, uniform random actions, stepping the env (the acceleration
layer's rollout left out, its chunk writer kept, as for a policy that reacts; the same seeds
and actions everywhere): for each N, the collector with ``workers=N``, and N bare gymnasium
loops that take the same episodes from one shared queue, as the collector's workers do (so
that neither side waits on a straggler the other would not), each side in processes started
and imported before the clock starts; each round measures every row once. N bare loops are
what N processes can step on this machine without storing anything: the ceiling of any
collector with N workers. Run on a machine with at least N cores:

    python benchmarks/collect_scaling.py [--workers 2,4,8] [--episodes-per-worker 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from collect_throughput import bare_loop, collect_in_process, parallel_bare_loops, timed


def default_workers() -> str:
    """2, 4, 8, ... up to the machine's cores, and the cores themselves."""
    cores = os.cpu_count() or 2
    counts = [n for n in (2**k for k in range(1, 8)) if n < cores] + [cores]
    return ",".join(str(n) for n in counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default=default_workers(), help="comma-separated counts")
    parser.add_argument("--episodes-per-worker", type=int, default=16, help="1000-step episodes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    if any(n < 1 for n in counts) or args.episodes_per_worker < 1 or args.rounds < 1:
        parser.error("--workers, --episodes-per-worker and --rounds take positive counts")
    tmp = Path(tempfile.mkdtemp(prefix="wmrobot-scaling-"))

    def ours(workers: int, episodes: int) -> float:
        path = tmp / f"w{workers}.zarr"
        kwargs = {"episodes": episodes, "seed": args.seed, "workers": workers}
        steps, seconds, _ = collect_in_process(path, stepping=True, **kwargs)
        assert steps == episodes * 1000, steps  # the same episodes as the bare loops
        return steps / seconds

    print(
        f"cores: {os.cpu_count()}; HalfCheetah-v5, state only, random actions, env.step; "
        f"{args.episodes_per_worker} episodes x 1000 steps per worker; median (min-max) of "
        f"{args.rounds} rounds"
    )
    print(
        f"{'workers':>7}  {'N bare loops':>13}  {'collector':>10}  {'÷ N bare loops':>17}"
        f"  {'÷ 1 bare loop':>14}"
    )
    try:
        for n in counts:
            episodes = n * args.episodes_per_worker
            ceiling, collector, single = [], [], []
            for _ in range(args.rounds):
                t, steps = timed(lambda: bare_loop(args.episodes_per_worker, args.seed))
                single.append(steps / t)
                ceiling.append(parallel_bare_loops(episodes, args.seed, n))
                collector.append(ours(n, episodes))
            ratio = np.array(collector) / np.array(ceiling)
            print(
                f"{n:>7}  {np.median(ceiling):>13,.0f}  {np.median(collector):>10,.0f}  "
                f"{np.median(ratio):>5.2f} ({ratio.min():.2f}-{ratio.max():.2f})"
                f"  {np.median(np.array(collector) / np.array(single)):>14.2f}",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
